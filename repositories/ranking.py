"""Rank<R>: the place of one row in an order (a leaderboard's), among the rows of its
tenant that match a filter.

The order is a List order (`order_by`, the id breaking ties), so the rank is the row's
1-based position in List<Rs> with the same filter and order_by: rows that tie on the
named fields take consecutive ranks, by id. Soft-deleted rows take no place.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, false, func, not_

from repositories import time_bound
from repositories.base import Repository
from repositories.errors import NotFound
from repositories.ordering import Order, after
from repositories.scope import ID_PARAM


async def rank(
    repo: Repository,
    id_: uuid.UUID,
    order: Order,
    where: ColumnElement[bool] | None,
    deadline: float | None = None,
) -> tuple[int, int]:
    """(rank, total): the row's position among the live rows matching `where` (0 when it
    is not one of them: soft-deleted, or not matching), and how many those are.
    NotFound when the tenant has no row `id_`. Two statements, both built by the
    repository's scope, stopped at `deadline` (see time_bound)."""
    by_id = repo.scope.select_by_id()
    row = (await time_bound.execute(repo, by_id, deadline, {ID_PARAM: id_})).mappings().first()
    if row is None:
        raise NotFound(repo.entity.resource_type, str(id_))
    position: list[Any] = [row[key.name] for key in order]
    # The order is total (it ends with the id), so every other row is after this one or
    # ahead of it. `after` is NULL, not false, for a row whose key is unset where this
    # row's is set: such a row is not after it (a List page leaves it out), so it is ahead.
    ahead = not_(func.coalesce(after(order, position), false())) & (repo.c.id != id_)
    stmt = repo.scope.select(
        func.count(),
        func.count().filter(ahead),
        func.count().filter(repo.c.id == id_),
    ).where(repo.c.delete_time.is_(None))
    if where is not None:
        stmt = stmt.where(where)
    counts: Any = (await time_bound.execute(repo, stmt, deadline)).one()
    total, before, matches = int(counts[0]), int(counts[1]), int(counts[2])
    return (before + 1 if matches else 0), total

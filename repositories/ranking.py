"""Rank<R>: the place of one row in an order (a leaderboard's), among the rows of its
tenant that match a filter.

The order is a List order (`order_by`, the id breaking ties), so the rank is the row's
1-based position in List<Rs> with the same filter and order_by: rows that tie on the
named fields take consecutive ranks, by id. Soft-deleted rows take no place.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, func, not_

from repositories.base import Repository
from repositories.ordering import Order, after


async def rank(
    repo: Repository, id_: uuid.UUID, order: Order, where: ColumnElement[bool] | None
) -> tuple[int, int]:
    """(rank, total): the row's position among the live rows matching `where` (0 when it
    is not one of them: soft-deleted, or not matching), and how many those are.
    NotFound when the tenant has no row `id_`. Two statements, both built by the
    repository's scope and run through its one door."""
    row = await repo.get(id_)
    position: list[Any] = [row[key.name] for key in order]
    # The order is total (it ends with the id), so every other row is after this one or
    # ahead of it.
    ahead = not_(after(order, position)) & (repo.c.id != id_)
    stmt = repo.scope.select(
        func.count(),
        func.count().filter(ahead),
        func.count().filter(repo.c.id == id_),
    ).where(repo.c.delete_time.is_(None))
    if where is not None:
        stmt = stmt.where(where)
    counts: Any = (await repo._execute(stmt)).one()
    total, before, found = int(counts[0]), int(counts[1]), int(counts[2])
    return (before + 1 if found else 0), total

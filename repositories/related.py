"""The statement that reads the first children of many parents at once.

`expand` (server/expansion.py) shows each row of a page with its children, at most
`limit` of them per parent. One statement serves the whole page, whatever its size:

- PostgreSQL: a LATERAL subquery per parent id (unnest of one array parameter), each
  an index range scan that stops after `limit` rows, so a parent with a million
  children costs what one with `limit` does;
- SQLite (no LATERAL): row_number() over each parent's children, which reads all the
  page's children (SQLite serves small deployments).

Either way the table is read only through the scope's own SELECTs (`TenantScope.around`),
so every reference to it filters on the tenant as every scoped statement does.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    FromClause,
    Select,
    Table,
    bindparam,
    func,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY

from repositories.ordering import Order
from repositories.scope import TenantScope

if TYPE_CHECKING:
    from repositories.base import Repository, Row

# The bound parameter holding the parents' ids.
PARENTS_PARAM = "repogate_parents"
# Statements built, by (table, key, id of the order, limit, lateral), with the order they
# keep alive (so its id is not reused).
_built: dict[tuple[Table, str, int, int, bool], tuple[Order, Select[Any]]] = {}


async def live_rows(repo: Repository, ids: Collection[uuid.UUID]) -> list[Row]:
    """The live rows of `repo`'s tenant among `ids`, in no promised order; missing ones
    are left out."""
    if not ids:
        return []
    stmt = repo.scope.select().where(repo.c.id.in_(sorted(ids)), repo._live())
    return await repo._rows(stmt)


async def first_children(
    repo: Repository, via: str, parents: Collection[uuid.UUID], order: Order, limit: int
) -> list[Row]:
    """Live rows of `repo`'s tenant whose reference `via` holds one of `parents`: the
    first `limit` of each parent, in `order`. One statement for all parents."""
    if not parents:
        return []
    lateral = repo.dialect == "postgresql"
    stmt = first_of_each(repo.scope, via, order, limit, lateral=lateral)
    return await repo._rows(stmt, {PARENTS_PARAM: sorted(parents)})


def first_of_each(
    scope: TenantScope, key: str, order: Order, limit: int, *, lateral: bool
) -> Select[Any]:
    """The live rows of `scope`'s table whose `key` holds one of the ids in the
    PARENTS_PARAM parameter: the first `limit` of each parent, in `order`. Built once per
    table, key, order and limit, so SQLAlchemy compiles it once: the tenant and the parents
    are parameters."""
    cached = (scope.table, key, id(order), limit, lateral)
    found = _built.get(cached)
    if found is None:
        found = _built[cached] = (order, _build(scope, key, order, limit, lateral))
    return found[1]


def _build(scope: TenantScope, name: str, order: Order, limit: int, lateral: bool) -> Select[Any]:
    table = scope.table
    key, live = table.c[name], table.c.delete_time.is_(None)
    clauses = [each.clause() for each in order]
    if lateral:
        ids = bindparam(PARENTS_PARAM, type_=ARRAY(key.type))
        wanted = func.unnest(ids).table_valued("id").render_derived("parents")
        inner = scope.select().where(key == wanted.c.id, live).order_by(*clauses).limit(limit)
        head = inner.lateral("head")
        stmt = select(*(head.c[c.name] for c in table.c)).select_from(wanted.join(head, true()))
        return scope.around(stmt.order_by(*_over(head, order)), inner)
    rank = func.row_number().over(partition_by=key, order_by=clauses).label("repogate_rank")
    parents: BindParameter[Any] = bindparam(PARENTS_PARAM, expanding=True)
    inner = scope.select(*table.c, rank).where(key.in_(parents), live)
    ranked = inner.subquery("ranked")
    stmt = select(*(ranked.c[c.name] for c in table.c)).where(ranked.c.repogate_rank <= limit)
    return scope.around(stmt.order_by(*_over(ranked, order)), inner)


def _over(source: FromClause, order: Order) -> list[ColumnElement[Any]]:
    """`order` over the same columns of `source`, a subquery of the table."""
    return [replace(each, column=source.c[each.name]).clause() for each in order]

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
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Column, ColumnElement, FromClause, Select, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY

from repositories.ordering import Order
from repositories.scope import TenantScope

# The bound parameter holding the parents' ids (PostgreSQL).
PARENTS_PARAM = "repogate_parents"


def first_of_each(
    scope: TenantScope,
    key: Column[Any],
    parents: Sequence[uuid.UUID],
    order: Order,
    limit: int,
    live: ColumnElement[bool],
    *,
    lateral: bool,
) -> Select[Any]:
    """The rows of `scope`'s table matching `live` whose `key` is one of `parents`: the
    first `limit` of each parent, in `order`."""
    table = scope.table
    clauses = [each.clause() for each in order]
    if lateral:
        ids = bindparam(PARENTS_PARAM, list(parents), type_=ARRAY(key.type))
        wanted = func.unnest(ids).table_valued("id").render_derived("parents")
        inner = scope.select().where(key == wanted.c.id, live).order_by(*clauses).limit(limit)
        head = inner.lateral("head")
        stmt = select(*(head.c[c.name] for c in table.c)).select_from(wanted.join(head, true()))
        return scope.around(stmt.order_by(*_over(head, order)), inner)
    rank = func.row_number().over(partition_by=key, order_by=clauses).label("repogate_rank")
    inner = scope.select(*table.c, rank).where(key.in_(parents), live)
    ranked = inner.subquery("ranked")
    stmt = select(*(ranked.c[c.name] for c in table.c)).where(ranked.c.repogate_rank <= limit)
    return scope.around(stmt.order_by(*_over(ranked, order)), inner)


def _over(source: FromClause, order: Order) -> list[ColumnElement[Any]]:
    """`order` over the same columns of `source`, a subquery of the table."""
    return [replace(each, column=source.c[each.name]).clause() for each in order]

"""The statement that reads the first children of many parents at once.

`expand` (server/expansion.py) shows each row of a page with its children, at most
`limit` of them per parent. One statement serves the whole page, whatever its size:

- PostgreSQL: a LATERAL subquery per parent id (unnest of one array parameter), each
  an index range scan that stops after `limit` rows, so a parent with a million
  children costs what one with `limit` does;
- SQLite (no LATERAL): row_number() over each parent's children, which reads all the
  page's children (SQLite serves small deployments).

Both choose ids in a subquery and read the rows through the scope's own SELECT, so
every table reference filters on the tenant as every scoped statement does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, Select, bindparam, func, select, true
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
    first `limit` of each parent in `order`, returned in `order`."""
    table = scope.table
    clauses = [each.clause() for each in order]
    if lateral:
        ids = bindparam(PARENTS_PARAM, list(parents), type_=ARRAY(key.type))
        wanted = func.unnest(ids).table_valued("id").render_derived("parents")
        head = (
            scope.select(table.c.id)
            .where(key == wanted.c.id, live)
            .order_by(*clauses)
            .limit(limit)
            .lateral("head")
        )
        chosen = select(head.c.id).select_from(wanted.join(head, true()))
    else:
        rank = func.row_number().over(partition_by=key, order_by=clauses).label("rank")
        ranked = scope.select(table.c.id, rank).where(key.in_(parents), live).subquery("ranked")
        chosen = select(ranked.c.id).where(ranked.c.rank <= limit)
    return scope.select().where(table.c.id.in_(chosen)).order_by(*clauses)

"""Index recommendations from the queries clients ran: AdminService.RecommendIndexes.

Each of the most called query shapes (server/query_shapes.py) is EXPLAINed, without
ANALYZE, as the statement its method builds, with the shape's representative values and
its latest caller's tenant. The verdict:

- SERVED: the plan reads the rows through an index that serves the shape, or whose
  condition names a column the filter compares;
- INDEX_UNUSED: such an index exists, but the planner reads otherwise (a small table);
- NOT_INDEXABLE: no B-tree index would narrow it (see `query_shapes.indexable`);
- NEEDS_INDEX: else. The index suggested holds, after tenant_id (first in every Repogate
  index), the columns compared for equality, then a List's order (to the id that ends
  every order), then one range-compared column; it is named as the schema's `indexes`
  option would name it, so that declaring it later adopts the index rather than making a
  second.

Shapes wanting the same index, or one a prefix of another's, share one recommendation.
Nothing here creates anything: the statements are text for an operator to run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Index, MetaData, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex

from repositories.database import Database
from repositories.errors import translate_db_errors
from repositories.filtering import compile_filter
from repositories.plans import Plan, TableIndex, explain, indexes
from repositories.scoped_table import Writes
from repositories.tables import metadata as built_in
from schema.tables import name as index_name
from server.query_shapes import EQUALITY, Shape, indexable
from server.validation import DEFAULT_PAGE_SIZE

TENANT = "tenant_id"
# An index column: its name, and whether it is descending.
IndexColumn = tuple[str, bool]


@dataclass
class Examined:
    shape: Shape
    plan: Plan
    verdict: str  # SERVED, INDEX_UNUSED, NEEDS_INDEX, NOT_INDEXABLE
    index: str = ""  # the serving index, or the recommended one
    wanted: tuple[IndexColumn, ...] | None = None


@dataclass
class Recommendation:
    table: Table
    columns: tuple[IndexColumn, ...]
    shapes: list[Examined] = field(default_factory=list)
    name: str = ""
    create_index: str = ""
    schema_option: str = ""

    @property
    def calls(self) -> int:
        return sum(each.shape.calls for each in self.shapes)


async def recommend(
    db: Database, shapes: Sequence[Shape]
) -> tuple[list[Examined], list[Recommendation]]:
    """Every shape with its verdict, and the indexes recommended, most called first."""
    tables = {shape.entity.table.name for shape in shapes}
    with translate_db_errors():
        async with _engine(db).connect() as conn:
            existing = {table: await conn.run_sync(indexes, table) for table in sorted(tables)}
            examined = [
                _verdict(shape, await _plan(conn, shape), existing[shape.entity.table.name])
                for shape in shapes
            ]
    recommendations = _grouped([each for each in examined if each.verdict == "NEEDS_INDEX"])
    for recommendation in recommendations:
        taken = {index.name for index in existing[recommendation.table.name]}
        _describe(recommendation, taken, db.engine.dialect)
        for each in recommendation.shapes:
            each.index = recommendation.name
    return examined, recommendations


def _engine(db: Database) -> AsyncEngine:
    """A connection of its own, outside the pool, as probes use: the pool is the tenants',
    and SQLite answers an EXPLAIN its connection has cached with the plan it had then,
    whatever indexes were created since. An in-memory SQLite database is on the pool's
    one connection alone (and no other connection can change its indexes)."""
    url = db.engine.url
    if url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    ):
        return db.engine
    return db.prober()


async def _plan(conn: AsyncConnection, shape: Shape) -> Plan:
    """The plan for the shape's statement, with its stand-in values and latest tenant."""
    entity = shape.entity
    text = shape.filter.representative
    where = compile_filter(text, entity.fields) if text else None
    repo = entity.repository(conn, shape.tenant, writes=Writes(0))
    if shape.method == "List":
        # The statements List (its first page) and Count run.
        stmt = repo.page_statement(DEFAULT_PAGE_SIZE, where=where, order=shape.order)
    else:
        stmt = repo.count_statement(where)
    return await explain(repo, stmt)


def _verdict(shape: Shape, plan: Plan, existing: list[TableIndex]) -> Examined:
    wanted, leading = _wanted(shape)
    serving = [
        index.name
        for index in existing
        if len(index.columns) > 1 and index.columns[0] == TENANT and index.columns[1] in leading
    ]
    # An index narrows the rows when the column it sorts by first (after the tenant) is one
    # every matching row is compared on: a term under OR or NOT narrows nothing.
    compared = {_column(shape, term.field) for term in shape.filter.conjuncts} - {None, TENANT}
    narrowing = {index.name for index in existing if _first(index.columns) in compared}
    # An expression (a path into a Struct) is known by the columns its condition reads.
    expressions = {index.name for index in existing if None in index.columns[:2]}
    for access in plan.accesses:
        name = access.index
        if name is not None and (
            name in serving
            or name in narrowing
            or (name in expressions and access.columns & compared)
        ):
            return Examined(shape, plan, "SERVED", name, wanted)
    if wanted is None:
        return Examined(shape, plan, "NOT_INDEXABLE")
    if serving:
        return Examined(shape, plan, "INDEX_UNUSED", serving[0], wanted)
    return Examined(shape, plan, "NEEDS_INDEX", "", wanted)


def _first(columns: tuple[str | None, ...]) -> str | None:
    """The column an index sorts by first, after the tenant (None: an expression)."""
    if columns and columns[0] == TENANT:
        return columns[1] if len(columns) > 1 else None
    return columns[0] if columns else None


def _wanted(shape: Shape) -> tuple[tuple[IndexColumn, ...] | None, set[str]]:
    """The index that would serve `shape` (None: none would), and the columns one of which
    must follow tenant_id in an index that serves it."""
    equal: list[str] = []
    ranged: list[str] = []
    for term in shape.filter.conjuncts:
        column = _column(shape, term.field)
        if column is not None and indexable(term, shape.entity.kind(term.field)):
            (equal if term.operator in EQUALITY else ranged).append(column)
    order: list[IndexColumn] = []
    if shape.method == "List":
        # With the id that ends every order: the index then gives the whole order, and a
        # page needs no sort (which would make the planner prefer an index in order).
        order = [
            (str(getattr(key.column, "name", key.name)), key.descending) for key in shape.order
        ]
    columns: list[IndexColumn] = [(TENANT, False)]
    for column, descending in [
        *((name, False) for name in equal),
        *order,
        *((name, False) for name in ranged[:1]),
    ]:
        if all(column != present for present, _ in columns):
            columns.append((column, descending))
    if len(columns) == 1:
        return None, set()
    return tuple(columns), set(equal) or {columns[1][0]}


def _column(shape: Shape, name: str) -> str | None:
    """The table column a filter's field compares, if it is one."""
    found = shape.entity.fields.get(name.partition(".")[0])
    column = getattr(found.column, "name", None) if found is not None else None
    return column if isinstance(column, str) and column in shape.entity.table.c else None


def _grouped(needing: list[Examined]) -> list[Recommendation]:
    by_columns: dict[tuple[str, tuple[IndexColumn, ...]], Recommendation] = {}
    for each in needing:
        assert each.wanted is not None
        table = each.shape.entity.table
        key = (table.name, each.wanted)
        by_columns.setdefault(key, Recommendation(table, each.wanted)).shapes.append(each)
    kept: list[Recommendation] = []
    # The longest first: a shorter one whose columns begin another's is served by it.
    for recommendation in sorted(by_columns.values(), key=lambda r: -len(r.columns)):
        wider = next(
            (
                other
                for other in kept
                if other.table is recommendation.table
                and other.columns[: len(recommendation.columns)] == recommendation.columns
            ),
            None,
        )
        if wider is None:
            kept.append(recommendation)
        else:
            wider.shapes.extend(recommendation.shapes)
    for recommendation in kept:
        recommendation.shapes.sort(key=lambda each: each.shape.calls, reverse=True)
    return sorted(kept, key=lambda r: r.calls, reverse=True)


def _describe(recommendation: Recommendation, taken: set[str], dialect: Dialect) -> None:
    table = recommendation.table
    words = [column for column, _ in recommendation.columns[1:]]
    name = index_name("ix", table.name, "tenant", *words)
    if name in taken:  # an index of another definition has the name Repogate would give
        name = index_name("ix", table.name, "tenant", *words, "advised")
    recommendation.name = name
    # On a table of its own: an Index on the served table would join its metadata.
    scratch = Table(
        table.name,
        MetaData(),
        *(Column(column, table.c[column].type) for column, _ in recommendation.columns),
        schema=table.schema,
    )
    parts: list[Any] = [
        scratch.c[column].desc() if descending else scratch.c[column]
        for column, descending in recommendation.columns
    ]
    index = CreateIndex(Index(name, *parts, postgresql_concurrently=True), if_not_exists=True)
    recommendation.create_index = str(index.compile(dialect=dialect))
    if table.metadata is not built_in:
        fields = [
            column + (" desc" if descending else "")
            for column, descending in recommendation.columns[1:]
        ]
        recommendation.schema_option = f"indexes: {{ fields: {json.dumps(fields)} }}"

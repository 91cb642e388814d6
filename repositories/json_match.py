"""JSON containment, as PostgreSQL's jsonb `@>` defines it, on both databases.

A document contains a query when every key of a query object is in the document
with a value that contains the query's value, every element of a query array is
contained by some element of the document's array, and scalars are equal (numbers
by value, strings exactly, true/false/null by kind).

PostgreSQL is asked with `@>`. SQLite gets the same test spelled out with
json_each: one correlated EXISTS per key and per array element of the query,
each comparing keys, kinds and values as bound parameters. Nothing of the query
reaches SQL text on either database.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, String, and_, bindparam, case, cast, exists, func, select
from sqlalchemy.dialects.postgresql import JSONB

from repositories.filter_sql import PerDialect


def contains(column: ColumnElement[Any], query: dict[str, Any] | list[Any]) -> ColumnElement[bool]:
    """`column` (a JSON object or array column) contains `query` (plain JSON data)."""
    document = cast(_bind(json.dumps(query)), JSONB)
    # The cast is no change to a JSONB column (its GIN index still serves the test), and
    # makes a JSON one (a table not built by Repogate) comparable.
    postgres = cast(column, JSONB).op("@>", is_comparison=True)(document)
    return PerDialect(postgres, _contains(column, func.json_type(column), query))


def _bind(value: Any) -> ColumnElement[Any]:
    if isinstance(value, str):
        return bindparam(None, value, type_=String())
    return bindparam(None, value)


def _contains(
    value: ColumnElement[Any], kind: ColumnElement[Any], query: Any
) -> ColumnElement[bool]:
    """Whether the JSON `value`, whose json_type is `kind`, contains `query` (SQLite)."""
    if isinstance(query, dict):
        return and_(
            kind == "object",
            *(
                _member(value, kind, "object", query_value, key)
                for key, query_value in query.items()
            ),
        )
    if isinstance(query, list):
        return and_(kind == "array", *(_member(value, kind, "array", item) for item in query))
    if query is None:
        return kind == "null"
    if isinstance(query, bool):
        return kind == ("true" if query else "false")
    if isinstance(query, str):
        return and_(kind == "text", value == _bind(query))
    return and_(kind.in_(["integer", "real"]), value == _bind(query))


def _member(
    value: ColumnElement[Any],
    kind: ColumnElement[Any],
    container: str,
    query: Any,
    key: str | None = None,
) -> ColumnElement[bool]:
    """Some member of the object or array `value` (under `key`, for objects) contains
    `query`. json_each only ever sees `value` when it is that container, however SQLite
    orders the conditions: a string member would otherwise be parsed as JSON."""
    members = func.json_each(case((kind == container, value))).table_valued("key", "value", "type")
    each = members.alias()
    matches = _contains(each.c.value, each.c.type, query)
    if key is not None:
        matches = and_(each.c.key == _bind(key), matches)
    return exists(select(each.c.key).where(matches))


def has_element(column: ColumnElement[Any], value: str | int | float | bool) -> ColumnElement[bool]:
    """The JSON array in `column` has `value` as an element: `column @> '[value]'` on
    PostgreSQL, which a GIN index on the column serves."""
    return contains(column, [value])


def non_empty(column: ColumnElement[Any]) -> PerDialect:
    """The JSON array in `column` has an element (`tags:*`)."""
    array = cast(column, JSONB)
    empty = cast(_bind("[]"), JSONB)
    postgres = and_(func.jsonb_typeof(array) == _bind("array"), array != empty)
    return PerDialect(postgres, func.json_array_length(column) > 0)

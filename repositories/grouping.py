"""Values to group rows by that SQL spells differently on each database: the scalar at a
path into a JSON column, and the start of a timestamp's hour, day, week, month or year
(in UTC). Each renders the same answers on PostgreSQL and SQLite.

Both are written out as constants in the SQL text rather than bound parameters:
PostgreSQL matches a GROUP BY expression to the selected one by its text, and two
parameters are two different expressions to it. The constants are checked before they
get there: a path's keys are identifiers (`KEY`), a bucket is one of `BUCKETS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import ColumnElement, Float, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from repositories.json_paths import KEY
from repositories.types import UTCDateTime

BUCKETS = ("hour", "day", "week", "month", "year")
# What a JSON path yields, in three columns of which at most one is not NULL: numbers
# (as doubles, as google.protobuf.Value holds them), strings, and booleans ('true' or
# 'false'). An object, an array, null or a missing key gives NULL in all three.
Part = Literal["number", "string", "boolean"]
PARTS: tuple[Part, ...] = ("number", "string", "boolean")

# SQLite's strftime format for the start of each bucket, in the stored text's own form.
_SQLITE_BUCKETS = {
    "hour": ("%Y-%m-%d %H:00:00.000000",),
    "day": ("%Y-%m-%d 00:00:00.000000",),
    # 'weekday 0' moves to the coming Sunday (or stays on one); six days back is Monday.
    "week": ("%Y-%m-%d 00:00:00.000000", "weekday 0", "-6 days"),
    "month": ("%Y-%m-01 00:00:00.000000",),
    "year": ("%Y-01-01 00:00:00.000000",),
}


class JsonScalar(ColumnElement[Any]):
    """One part (see `Part`) of the value at `keys` in the JSON column `column`."""

    __visit_name__ = "repogate_json_scalar"
    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own declaration style
        ("column", InternalTraversal.dp_clauseelement),
        ("keys", InternalTraversal.dp_string_list),
        ("part", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], keys: Sequence[str], part: Part) -> None:
        if not keys or not all(KEY.fullmatch(key) for key in keys):
            raise ValueError("a JSON path's keys must be identifiers")
        self.column = column
        self.keys = list(keys)
        self.part = part
        self.type = Float(53) if part == "number" else Text()

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.column._from_objects)


@compiles(JsonScalar)
def _json_postgresql(element: JsonScalar, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    # Each key quoted: unquoted, a key named null (in any case) would be SQL NULL.
    path = "'{" + ",".join(f'"{key}"' for key in element.keys) + "}'"
    kind = f"jsonb_typeof({column} #> {path})"
    text = f"({column} #>> {path})"
    if element.part == "number":
        return f"(CASE WHEN {kind} = 'number' THEN CAST({text} AS DOUBLE PRECISION) END)"
    return f"(CASE WHEN {kind} = '{element.part}' THEN {text} END)"


@compiles(JsonScalar, "sqlite")
def _json_sqlite(element: JsonScalar, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    path = "'$." + ".".join(element.keys) + "'"
    kind = f"json_type({column}, {path})"
    if element.part == "number":
        value = f"CAST(json_extract({column}, {path}) AS REAL)"
        return f"(CASE WHEN {kind} IN ('integer', 'real') THEN {value} END)"
    if element.part == "string":
        return f"(CASE WHEN {kind} = 'text' THEN json_extract({column}, {path}) END)"
    return f"(CASE WHEN {kind} IN ('true', 'false') THEN {kind} END)"


class TimeBucket(ColumnElement[Any]):
    """The start, in UTC, of the `unit` (one of BUCKETS) that the timestamp `column` is in.
    Weeks start on Monday, as ISO 8601's do."""

    __visit_name__ = "repogate_time_bucket"
    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own declaration style
        ("column", InternalTraversal.dp_clauseelement),
        ("unit", InternalTraversal.dp_string),
    ]
    type = UTCDateTime()

    def __init__(self, column: ColumnElement[Any], unit: str) -> None:
        if unit not in BUCKETS:
            raise ValueError(f"{unit!r} is not one of {BUCKETS}")
        self.column = column
        self.unit = unit

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.column._from_objects)


@compiles(TimeBucket)
def _bucket_postgresql(element: TimeBucket, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    # AT TIME ZONE 'UTC' takes the stored instant to UTC wall time and, after the
    # truncation, back to an instant: the session's time zone plays no part.
    return f"(date_trunc('{element.unit}', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


@compiles(TimeBucket, "sqlite")
def _bucket_sqlite(element: TimeBucket, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    # Stored as naive UTC text ('2026-01-05 10:30:00.000000'), the form read back here.
    format_, *modifiers = _SQLITE_BUCKETS[element.unit]
    arguments = [f"'{format_}'", column, *(f"'{each}'" for each in modifiers)]
    return f"strftime({', '.join(arguments)})"

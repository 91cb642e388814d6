"""Aggregate<Rs>: `group_by`, `aggregations` and `order_by` checked against an entity's
filterable fields (the ones `filter` may name) and compiled to one grouped SELECT, built
by the repository's tenant scope; its rows read back as JSON values.

A group_by entry is a field, a path into a Struct field (`payload.tool`), or a timestamp
field's hour, day, week, month or year (`create_time.day`, in UTC). An aggregation is a
function of a field or path: COUNT, SUM, AVG, MIN, MAX or COUNT_DISTINCT. order_by names
group_by entries and aliases; the group keys follow as tie-breakers, so every group has
one place in the order and offset pages hold still while the rows do. NULL sorts as the
greatest value on both databases (last ascending, first descending).

Values come back exact: integers as ints (which callers send as text beyond 2^53),
decimal fields as Decimals' text, timestamps as RFC 3339 text in UTC.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from sqlalchemy import ColumnElement, case, distinct, func, literal_column, or_

from repositories import time_bound
from repositories.base import Repository
from repositories.errors import InvalidArgument
from repositories.filtering import FilterField
from repositories.grouping import BUCKETS, PARTS, JsonScalar, TimeBucket
from repositories.json_paths import KEY
from repositories.ordering import order_terms
from repositories.types import FixedDecimal

FUNCTIONS = ("count", "sum", "avg", "min", "max", "count_distinct")
MAX_GROUP_BY = 8
MAX_AGGREGATIONS = 20
MAX_PATH = 256
MAX_ORDER_BY = 1024
# The largest integer a double (google.protobuf.Value's number) holds exactly.
EXACT_INTEGERS = 2**53
_PATH = re.compile(rf"{KEY.pattern}(\.{KEY.pattern})*")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NUMERIC = frozenset({"int", "float", "decimal", "json"})
_ORDERED = _NUMERIC | {"string", "timestamp"}
_KIND_WORDS = {
    "string": "a string field",
    "bool": "a boolean field",
    "timestamp": "a timestamp field",
    "uuid": "a reference (an id)",
    "json_array": "an array field",
    "json_object": "a Struct field (name a path into it, as payload.key)",
}


@dataclass(frozen=True)
class Aggregation:
    """One aggregation as a request asks for it."""

    function: str  # one of FUNCTIONS, or "" when the request named none
    field: str = ""
    alias: str = ""


@dataclass(frozen=True)
class Term:
    """A group key or an aggregate: the expressions it selects, what ordering by it
    orders by, and how its selected values become its JSON value."""

    name: str
    selected: tuple[ColumnElement[Any], ...]
    sort: tuple[ColumnElement[Any], ...]
    read: Callable[[Sequence[Any]], Any]


@dataclass(frozen=True)
class Plan:
    keys: tuple[Term, ...]
    values: tuple[Term, ...]
    order: tuple[tuple[Term, bool], ...]  # (term, descending)

    def columns(self) -> list[ColumnElement[Any]]:
        """Every term's expressions, labelled by position: one expression asked for twice
        (two aliases of one COUNT) is still selected twice."""
        selected = [expr for term in (*self.keys, *self.values) for expr in term.selected]
        return [expr.label(f"c{i}") for i, expr in enumerate(selected)]

    def group_by(self) -> list[ColumnElement[Any]]:
        return [expr for term in self.keys for expr in term.selected]

    def order_by(self) -> list[ColumnElement[Any]]:
        return [
            expr.desc().nulls_first() if descending else expr.asc().nulls_last()
            for term, descending in self.order
            for expr in term.sort
        ]

    def read(self, row: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(key, values) of one group, from a row of `columns()`."""
        at = 0
        out: list[dict[str, Any]] = [{}, {}]
        for which, terms in enumerate((self.keys, self.values)):
            for term in terms:
                width = len(term.selected)
                out[which][term.name] = term.read(row[at : at + width])
                at += width
        return out[0], out[1]


def plan(
    fields: Mapping[str, FilterField],
    group_by: Sequence[str],
    aggregations: Sequence[Aggregation],
    order_by: str,
) -> Plan:
    """The plan of one Aggregate request; InvalidArgument naming the request field at
    fault (`group_by[1]`, `aggregations[0].field`, `order_by`) for anything it cannot do."""
    if len(group_by) > MAX_GROUP_BY:
        raise _invalid("group_by", f"has {len(group_by)} entries; at most {MAX_GROUP_BY}")
    if len(aggregations) > MAX_AGGREGATIONS:
        raise _invalid(
            "aggregations", f"has {len(aggregations)} entries; at most {MAX_AGGREGATIONS}"
        )
    if not group_by and not aggregations:
        raise _invalid("aggregations", "name at least one aggregation or group_by entry")
    keys: list[Term] = []
    for i, path in enumerate(group_by):
        key = _group_key(path.strip(), fields, f"group_by[{i}]")
        if any(key.name == seen.name for seen in keys):
            raise _invalid(f"group_by[{i}]", f"{key.name!r} appears twice")
        keys.append(key)
    values: list[Term] = []
    for i, each in enumerate(aggregations):
        value = _aggregate(each, fields, f"aggregations[{i}]")
        if any(value.name == seen.name for seen in (*keys, *values)):
            raise _invalid(
                f"aggregations[{i}].alias",
                f"{value.name!r} names another aggregation or a group_by entry; "
                "give each aggregation an alias of its own",
            )
        values.append(value)
    return Plan(tuple(keys), tuple(values), _order(order_by, keys, values))


async def run(
    repo: Repository,
    plan: Plan,
    where: ColumnElement[bool] | None,
    *,
    show_deleted: bool,
    offset: int,
    limit: int,
    deadline: float | None = None,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Up to `limit` groups of `repo`'s tenant's rows matching `where`, after the first
    `offset` in the plan's order: one statement, built by the repository's scope (which
    puts the tenant in it), stopped at `deadline` (see time_bound)."""
    stmt = repo.scope.select(*plan.columns())
    if where is not None:
        stmt = stmt.where(where)
    if not show_deleted:
        stmt = stmt.where(repo.c.delete_time.is_(None))
    if plan.keys:
        stmt = stmt.group_by(*plan.group_by())
    stmt = stmt.order_by(*plan.order_by()).offset(offset or None).limit(limit)
    result = await time_bound.execute(repo, stmt, deadline)
    return [plan.read(row) for row in result.all()]


# ---------------------------------------------------------------- fields


@dataclass(frozen=True)
class _Field:
    path: str
    kind: str  # a FilterKind, "decimal", or "json" (a path into a Struct field)
    exprs: tuple[ColumnElement[Any], ...]  # one, or a JSON path's PARTS
    scale: int = 0  # a decimal's digits after the point


def _resolve(path: str, fields: Mapping[str, FilterField], at: str, *, buckets: bool) -> _Field:
    if len(path) > MAX_PATH or not _PATH.fullmatch(path):
        raise _invalid(at, f"{_quote(path)} is not a field name or a path like payload.key")
    head, _, rest = path.partition(".")
    field = fields.get(head)
    if field is None:
        known = ", ".join(sorted(fields))
        raise _invalid(at, f"unknown field {head!r}; fields: {known}")
    column = field.column
    if not rest:
        if isinstance(column.type, FixedDecimal):
            return _Field(path, "decimal", (column,), column.type.scale)
        return _Field(path, field.kind, (column,))
    if field.kind == "json_object":
        keys = rest.split(".")
        return _Field(path, "json", tuple(JsonScalar(column, keys, part) for part in PARTS))
    if field.kind == "timestamp" and buckets:
        if rest not in BUCKETS:
            units = ", ".join(f"{head}.{unit}" for unit in BUCKETS)
            raise _invalid(at, f"{head} is a timestamp: group it by one of {units}")
        return _Field(path, "timestamp", (TimeBucket(column, rest),))
    raise _invalid(at, f"{head} is not a Struct field: {_quote(path)} cannot go into it")


def _group_key(path: str, fields: Mapping[str, FilterField], at: str) -> Term:
    field = _resolve(path, fields, at, buckets=True)
    if field.kind in ("json_object", "json_array"):
        raise _invalid(at, f"{path} is {_KIND_WORDS[field.kind]}; it cannot be a group key")
    read = _json_reader if field.kind == "json" else _single(_scalar_reader(field))
    return Term(path, field.exprs, field.exprs, read)


# ---------------------------------------------------------------- aggregates


def _aggregate(spec: Aggregation, fields: Mapping[str, FilterField], at: str) -> Term:
    function, path = spec.function, spec.field.strip()
    if function not in FUNCTIONS:
        raise _invalid(f"{at}.function", "is required: " + ", ".join(FUNCTIONS).upper())
    alias = spec.alias or "_".join(filter(None, (function, path.replace(".", "_"))))
    if not _ALIAS.fullmatch(alias):
        raise _invalid(
            f"{at}.alias",
            f"{_quote(alias)} must be a letter or _, then letters, digits and _ (at most 64)",
        )
    if not path:
        if function != "count":
            raise _invalid(f"{at}.field", f"is required for {function.upper()}")
        count = func.count()
        return Term(alias, (count,), (count,), _single(_integer))
    field = _resolve(path, fields, f"{at}.field", buckets=False)
    if function == "count":
        counted = func.count(_present(field))
        return Term(alias, (counted,), (counted,), _single(_integer))
    if function == "count_distinct":
        if field.kind in ("json_object", "json_array"):
            raise _cannot(at, function, field)
        # Per JSON part: a string "1" and a number 1 are two values, as they are in JSON.
        counts = [func.count(distinct(expr)) for expr in field.exprs]
        total = counts[0] if len(counts) == 1 else counts[0] + counts[1] + counts[2]
        return Term(alias, (total,), (total,), _single(_integer))
    allowed = _NUMERIC if function in ("sum", "avg") else _ORDERED
    if field.kind not in allowed:
        raise _cannot(at, function, field)
    value = field.exprs[0]  # a JSON path's number
    if function == "avg":
        parts = (func.sum(value), func.count(value))
        return Term(alias, parts, (func.avg(value),), _mean(field))
    if function == "sum":
        computed: ColumnElement[Any] = func.sum(value)
    else:
        computed = func.min(value) if function == "min" else func.max(value)
    return Term(alias, (computed,), (computed,), _single(_scalar_reader(field)))


def _present(field: _Field) -> ColumnElement[Any]:
    """What COUNT(field) counts: rows where the field (a JSON path: a scalar) is set."""
    if field.kind != "json":
        return field.exprs[0]
    return case((or_(*(expr.is_not(None) for expr in field.exprs)), literal_column("1")))


def _cannot(at: str, function: str, field: _Field) -> InvalidArgument:
    wanted = {
        "sum": "a numeric field",
        "avg": "a numeric field",
        "min": "a numeric, string or timestamp field",
        "max": "a numeric, string or timestamp field",
        "count_distinct": "a field or a path into a Struct field",
    }[function]
    what = _KIND_WORDS.get(field.kind, f"a {field.kind} field")
    return _invalid(f"{at}.field", f"{function.upper()} needs {wanted}; {field.path} is {what}")


# ---------------------------------------------------------------- reading values


def _single(read: Callable[[Any], Any]) -> Callable[[Sequence[Any]], Any]:
    return lambda values: None if values[0] is None else read(values[0])


def _integer(value: Any) -> int:
    return int(value)  # PostgreSQL's sum of a BIGINT is a numeric


def _scalar_reader(field: _Field) -> Callable[[Any], Any]:
    kind = field.kind
    if kind == "int":
        return _integer
    if kind in ("float", "json"):
        return float
    if kind == "decimal":
        return _decimal_text
    if kind == "timestamp":
        return rfc3339
    if kind == "uuid":
        return str
    if kind == "bool":
        return bool
    return lambda value: value


def _json_reader(values: Sequence[Any]) -> Any:
    number, string, boolean = values
    if number is not None:
        return float(number)
    if string is not None:
        return string
    return None if boolean is None else boolean == "true"


def _mean(field: _Field) -> Callable[[Sequence[Any]], Any]:
    def read(values: Sequence[Any]) -> Any:
        total, count = values
        if not count:
            return None
        if field.kind == "int":
            return float(Fraction(int(total), int(count)))
        if field.kind == "decimal":
            with localcontext() as exact:
                exact.prec = 60
                mean = (Decimal(total) / int(count)).quantize(Decimal(1).scaleb(-field.scale))
            return _decimal_text(mean)
        return float(total) / int(count)

    return read


def _decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def rfc3339(value: datetime) -> str:
    """'2026-01-05T00:00:00Z', microseconds when there are some: as a filter writes it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_value(value: Any) -> Any:
    """A value `Plan.read` gave, as a google.protobuf.Value takes it exactly: an integer a
    double cannot hold is its decimal text."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > EXACT_INTEGERS:
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


# ---------------------------------------------------------------- order


def _order(text: str, keys: list[Term], values: list[Term]) -> tuple[tuple[Term, bool], ...]:
    named = {term.name: term for term in (*keys, *values)}
    chosen: list[tuple[Term, bool]] = []
    for name, descending in order_terms(text, limit=MAX_ORDER_BY, dotted=True, noun="name"):
        if name not in named:
            known = ", ".join(named)
            raise _invalid(
                "order_by",
                f"cannot order by {name!r}; order by a group_by entry or an alias: {known}",
                "INVALID_ORDER_BY",
            )
        chosen.append((named[name], descending))
    # The keys last: each group's place in the order is its own.
    chosen += [(key, False) for key in keys if all(key is not term for term, _ in chosen)]
    return tuple(chosen)


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _invalid(field: str, description: str, reason: str = "INVALID_AGGREGATION") -> InvalidArgument:
    return InvalidArgument.field(field, description, reason=reason)

"""AIP-160 traversal into a JSON object column (a Struct): `payload.a.b <op> value`.

What a path restriction means, the same on PostgreSQL and SQLite:

- `=` (and `IN`, an OR of `=`): the value at the path is the literal: numbers by value
  (`5` is `5.0`), strings exactly, `true`/`false`/`null` by kind. Containment
  (`payload @> '{"a": {"b": v}}'`), which the GIN index of a `searchable` Struct serves.
- `=` with wildcards (`"ab*"`), `=~`: the value is a string that matches.
- `<`, `<=`, `>`, `>=` with a number: the value is a number and compares as one. With a
  string: the value is a string, compared by code point (PostgreSQL is told `COLLATE
  "C"`, SQLite compares bytes of UTF-8, which is the same order). A value of another JSON
  type never matches; true, false and null cannot be ordered.
- `:` with a value: the value at the path is an array holding it, or is it (AIP-160's
  `r:42` and `m.foo:42`). Containment again, served by the GIN index.
- `:*`: the key is present; a JSON null there counts as present.
- `!=` and NOT are the negation of the above, so they match rows without the key.

A restriction is never unknown: a row without a document (an unset Struct) has no keys.
No condition raises a database error, whatever the stored document holds.

Keys are bound parameters, except on paths an index of the table holds (a resource's
`indexes: [{fields: ["payload.score"]}]`): there the keys come from the schema, and the
compiled condition writes them into the SQL text exactly as the index's expression does,
so that the planner can match the two.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    not_,
    or_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import UnaryExpression

from repositories.filter_literals import Literal, double, error
from repositories.filter_sql import PerDialect, bind, match
from repositories.json_match import contains

Path = tuple[str, ...]
# A key a path may name: what the filter grammar reads between dots.
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ORDERING: Mapping[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# The JSON types a comparison accepts: jsonb_typeof's name, json_type's names.
_TYPES = {"number": ("number", ("integer", "real")), "string": ("string", ("text",))}


def _text(sql: str) -> ColumnElement[Any]:
    return literal_column(sql, String())


def _checked(key: str) -> str:
    if not KEY.fullmatch(key):  # the grammar and the schema let no other key through
        raise ValueError(f"{key!r} is not a path key")
    return key


def _key(key: str, inline: bool) -> ColumnElement[Any]:
    return _text(f"'{_checked(key)}'") if inline else bind(_checked(key))


def _sqlite_path(path: Path, inline: bool) -> ColumnElement[Any]:
    text = "$" + "".join(f'."{_checked(key)}"' for key in path)
    return _text(f"'{text}'") if inline else bind(text)


def _pg_value(document: ColumnElement[Any], path: Path, inline: bool) -> ColumnElement[Any]:
    value = document
    for key in path:
        value = value.op("->", return_type=JSONB)(_key(key, inline))
    return value


class JsonValue(PerDialect):
    """The JSON value at `path` in the JSON object column `document`, or NULL where there
    is none: `document -> 'a' -> 'b'` (jsonb) on PostgreSQL, `json_extract(document,
    '$."a"."b"')` on SQLite (a number or text there). An index on a path holds this
    expression with `inline` keys, and so does a condition on an indexed path."""

    inherit_cache = True

    def __init__(self, document: ColumnElement[Any], path: Path, inline: bool) -> None:
        self.document = document
        self.path = path
        super().__init__(
            _pg_value(document, path, inline),
            func.json_extract(document, _sqlite_path(path, inline)),
        )


def path_index_expression(document: ColumnElement[Any], path: Path) -> JsonValue:
    """What an index on `path` holds (schema/tables.py); see `indexed_paths`."""
    return JsonValue(document, path, inline=True)


def indexed_paths(table: Table) -> dict[str, frozenset[Path]]:
    """Column name -> the paths into it that an index of `table` holds."""
    found: dict[str, set[Path]] = {}
    for index in table.indexes:
        for expression in index.expressions:
            if isinstance(expression, UnaryExpression):  # `desc`
                expression = expression.element
            if isinstance(expression, JsonValue):
                name = str(getattr(expression.document, "name", ""))
                found.setdefault(name, set()).add(expression.path)
    return {name: frozenset(paths) for name, paths in found.items()}


class _Path:
    """The SQL for one path into one column."""

    def __init__(self, document: ColumnElement[Any], path: Path, inline: bool) -> None:
        self.document = document
        self.path = path
        # The two forms of JsonValue, each on its own dialect.
        self.pg_value = _pg_value(document, path, inline)
        self.sqlite_path = _sqlite_path(path, inline)
        self.sqlite_value = func.json_extract(document, self.sqlite_path)

    def typed(
        self, kind: str, default: ColumnElement[bool], sqlite: ColumnElement[bool]
    ) -> PerDialect:
        """`default` / `sqlite`, where the value is of JSON type `kind` (and false elsewhere,
        not unknown: a missing value's type is '')."""
        pg_name, sqlite_names = _TYPES[kind]
        pg_type = func.coalesce(func.jsonb_typeof(self.pg_value), bind(""))
        sqlite_type = func.coalesce(func.json_type(self.document, self.sqlite_path), bind(""))
        return PerDialect(
            and_(pg_type == bind(pg_name), default),
            and_(sqlite_type.in_([bind(name) for name in sqlite_names]), sqlite),
        )

    def text(self) -> PerDialect:
        """A string value as text (meaningful where `typed("string", ...)` holds)."""
        pg = self.pg_value.op("#>>", return_type=Text)(_text("'{}'"))
        return PerDialect(pg, self.sqlite_value)

    def present(self) -> PerDialect:
        return PerDialect(
            self.pg_value.is_not(None),
            func.json_type(self.document, self.sqlite_path).is_not(None),
        )

    def holds(self, value: Any) -> ColumnElement[bool]:
        """The document holds `value` at the path (containment), false without a document."""
        for key in reversed(self.path):
            value = {key: value}
        contained = contains(self.document, value)
        if getattr(self.document, "nullable", True):
            return and_(self.document.is_not(None), contained)
        return contained


def restriction(
    document: ColumnElement[Any], path: Path, name: str, op: str, lit: Literal, inline: bool
) -> ColumnElement[bool]:
    """`name <op> lit`, `name` being `path` into `document`."""
    at = _Path(document, path, inline)
    if lit.kind == "any":
        return at.present()
    if op == ":":
        return _member(at, name, lit)
    if op == "=~":
        if lit.kind != "string":
            raise error(f"=~ takes a quoted string (column {lit.column})")
        return at.typed("string", *_both(match(at.text(), lit.segments, fold=True)))
    if op in ORDERING:
        return _compare(at, name, op, lit)
    matched: ColumnElement[bool]
    if lit.wildcard:
        matched = at.typed("string", *_both(match(at.text(), lit.segments, fold=False)))
    else:
        matched = at.holds(_value(lit))
    return matched if op == "=" else not_(matched)


def membership(
    document: ColumnElement[Any], path: Path, name: str, values: Sequence[Literal]
) -> ColumnElement[bool]:
    """`name IN (values)`: any of `name = value`."""
    at = _Path(document, path, inline=False)
    for lit in values:
        if lit.kind == "null":
            raise error(f"null is not allowed in IN (column {lit.column}); use = null")
        if lit.wildcard:
            raise error(f"wildcards are not allowed in IN (column {lit.column})")
    return or_(*(at.holds(_value(lit)) for lit in values))


def _both(condition: PerDialect) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return condition.default, condition.sqlite


def _value(lit: Literal) -> Any:
    """The literal as JSON data; a number as a double, as a Struct holds numbers."""
    if lit.kind == "string":
        return lit.segments[0]
    return double(lit) if lit.kind in ("int", "float") else lit.value


def _member(at: _Path, name: str, lit: Literal) -> ColumnElement[bool]:
    if lit.kind == "null" or lit.wildcard:
        raise error(
            f": takes a string, a number, true, false or * (column {lit.column}); "
            f"for JSON null write {name} = null"
        )
    value = _value(lit)
    return or_(at.holds([value]), at.holds(value))


def _compare(at: _Path, name: str, op: str, lit: Literal) -> ColumnElement[bool]:
    compare = ORDERING[op]
    if lit.kind in ("int", "float"):
        number = double(lit)
        document = cast(bind(json.dumps(number)), JSONB)
        return at.typed(
            "number",
            compare(at.pg_value, document),
            compare(at.sqlite_value, bindparam(None, number, type_=Float())),
        )
    if lit.kind == "string" and not lit.wildcard:
        text = at.text()
        return at.typed(
            "string",
            compare(text.default.collate("C"), bind(lit.segments[0])),
            compare(text.sqlite, bind(lit.segments[0])),
        )
    if lit.wildcard:
        raise error(f"wildcards only work with =, != and =~ (column {lit.column})")
    raise error(
        f"{op} on a path into JSON ({name}) compares numbers or strings; "
        f"{'null' if lit.kind == 'null' else 'true or false'} at column {lit.column} has no order"
    )

"""List filters: an AIP-160 subset compiled to a SQLAlchemy Core condition.

The filter text is parsed by a LALR grammar, checked against a per-entity
whitelist of fields, and turned into an expression in which every value the
client wrote is a bound parameter: nothing from the text reaches SQL text.

Syntax (see `compile_filter`):

    a = "x"   a != 1   a < 2   a <= 2   a > 2   a >= 2     comparisons
    a = "Ann*"   a != "*son"                               wildcards (string fields)
    a =~ "ann*"                                            case-insensitive match
    a : "nn"                                               substring / array membership
    a IN ("x", "y")                                        1..100 values
    a = null   a != null                                   IS NULL / IS NOT NULL
    x AND y   x y   x OR y   NOT x   -x   ( ... )

As in AIP-160, OR binds tighter than AND: `a AND b OR c` is `a AND (b OR c)`.

String matching is case-sensitive on both databases. PostgreSQL uses LIKE with
ESCAPE; SQLite's LIKE ignores ASCII case, so there the same pattern is
rendered as GLOB. The choice is made when the statement is compiled, by
`_PerDialect`, so one expression serves both.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, Literal

import lark
from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    SmallInteger,
    String,
    and_,
    bindparam,
    cast,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from repositories.errors import InvalidArgument
from repositories.ids import parse_uuid

FilterKind = Literal[
    "string", "int", "float", "bool", "timestamp", "uuid", "json_array", "json_object"
]

MAX_FILTER_BYTES = 2048
MAX_DEPTH = 16
MAX_IN_VALUES = 100


@dataclass(frozen=True)
class FilterField:
    """A column clients may filter on, and how its literals are read."""

    column: ColumnElement[Any]
    kind: FilterKind


def compile_filter(text: str, fields: Mapping[str, FilterField]) -> ColumnElement[bool] | None:
    """The condition `text` describes over `fields`, or None when `text` is blank.

    Raises InvalidArgument (reason INVALID_FILTER, field "filter") for any
    text that is not a valid filter over these fields.
    """
    _check_size(text)
    if not text.strip():
        return None
    tree = _parse(text)
    _check_depth(tree)
    return _Compiler(fields).expression(tree)


class Filters:
    """`compile_filter` over one entity's fields, remembering the texts it compiled:
    clients send the same few filters again and again, and parsing one costs more
    than the rest of building its query. The condition, with its values bound, is
    a SQLAlchemy expression, immutable and so safe to reuse; invalid texts raise
    every time and are not kept."""

    def __init__(self, fields: Mapping[str, FilterField], remember: int = 256) -> None:
        self.fields = fields
        self.compile = lru_cache(maxsize=remember)(self._compile)

    def _compile(self, text: str) -> ColumnElement[bool] | None:
        return compile_filter(text, self.fields)


# ---------------------------------------------------------------- parsing

# AIP-160's shape: expression = sequence {AND sequence}; sequence = factor
# {factor}; factor = term {OR term}; term = [NOT | -] simple.
_GRAMMAR = r"""
?start: expression
?expression: sequence (_AND sequence)* -> all
?sequence: factor factor* -> all
?factor: term (_OR term)* -> any
?term: _NOT simple -> negation
     | _MINUS simple -> negation
     | simple
?simple: "(" expression ")" -> group
       | restriction
       | membership
restriction: NAME COMPARATOR _value
membership: NAME _IN "(" _value ("," _value)* ")"
_value: STRING | NUMBER | TRUE | FALSE | NULL

NAME: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/
COMPARATOR: /<=|>=|!=|=~|=|<|>|:/
STRING: /"(?:[^"\\]|\\.)*"/s | /'(?:[^'\\]|\\.)*'/s
NUMBER: /-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/
TRUE: "true"
FALSE: "false"
NULL: "null"
_AND: "AND"
_OR: "OR"
_NOT: "NOT"
_IN: "IN"
_MINUS: "-"

%ignore /\s+/
"""

# What a token type means to a reader of an error message.
_TOKEN_NAMES = {
    "NAME": "a field name",
    "COMPARATOR": "a comparison operator",
    "STRING": "a quoted string",
    "NUMBER": "a number",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
    "_AND": "AND",
    "_OR": "OR",
    "_NOT": "NOT",
    "_IN": "IN",
    "_MINUS": '"-"',
    "LPAR": '"("',
    "RPAR": '")"',
    "COMMA": '","',
}


@cache
def _parser() -> lark.Lark:
    # Built once: building the LALR tables costs far more than a parse.
    return lark.Lark(_GRAMMAR, parser="lalr", lexer="basic", propagate_positions=False)


def _error(description: str) -> InvalidArgument:
    return InvalidArgument.field("filter", description, reason="INVALID_FILTER")


def _check_size(text: str) -> None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _error(f"filter is not valid Unicode at column {exc.start + 1}") from None
    if size > MAX_FILTER_BYTES:
        raise _error(f"filter is longer than {MAX_FILTER_BYTES} bytes")
    if "\x00" in text:
        # PostgreSQL text cannot hold NUL; refuse it here rather than in the driver.
        raise _error(f"filter contains a NUL character at column {text.index(chr(0)) + 1}")


def _parse(text: str) -> lark.Tree[lark.Token]:
    try:
        return _parser().parse(text)
    except lark.exceptions.UnexpectedCharacters as exc:
        column = (exc.pos_in_stream or 0) + 1
        if exc.char in "\"'":
            raise _error(f"unterminated string starting at column {column}") from None
        raise _error(f"syntax error at column {column}: unexpected {exc.char!r}") from None
    except lark.exceptions.UnexpectedToken as exc:
        raise _error(_unexpected_token(exc.token, exc.expected)) from None
    except lark.exceptions.UnexpectedEOF:
        raise _error("syntax error: the filter ends too early") from None
    except lark.exceptions.LarkError:
        raise _error("syntax error") from None


def _unexpected_token(token: lark.Token, expected: set[str]) -> str:
    if token.type == "$END":
        what = "syntax error: the filter ends too early"
    else:
        what = f"syntax error at column {_column(token)}: unexpected {_quote(token)}"
    if "STRING" in expected:
        return what + "; expected a value: a quoted string, a number, true, false or null"
    names = sorted({_TOKEN_NAMES[name] for name in expected if name in _TOKEN_NAMES})
    return what + (f"; expected {', '.join(names)}" if names else "")


def _column(token: lark.Token) -> int:
    """The 1-based character position of `token` in the whole filter text."""
    return (token.start_pos or 0) + 1


def _quote(token: lark.Token) -> str:
    value = str(token)
    return json.dumps(value if len(value) <= 20 else value[:20] + "...")


def _check_depth(tree: lark.Tree[lark.Token]) -> None:
    """Rejects deep nesting before the (recursive) compiler walks the tree."""
    stack: list[tuple[lark.Tree[lark.Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in ("group", "negation"):
            depth += 1
            if depth > MAX_DEPTH:
                raise _error(f"nesting deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth) for child in node.children if isinstance(child, lark.Tree))


# ---------------------------------------------------------------- literals


@dataclass(frozen=True)
class _Literal:
    kind: Literal["string", "int", "float", "bool", "null"]
    # Strings: the text between wildcards (one segment when there are none).
    value: tuple[str, ...] | int | float | bool | None
    column: int

    @property
    def segments(self) -> tuple[str, ...]:
        assert isinstance(self.value, tuple)
        return self.value

    @property
    def text(self) -> str:
        return "*".join(self.segments)


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


def _literal(token: lark.Token) -> _Literal:
    column = _column(token)
    if token.type == "STRING":
        return _Literal("string", _unquote(str(token), column), column)
    if token.type == "NUMBER":
        return _number(str(token), column)
    if token.type in ("TRUE", "FALSE"):
        return _Literal("bool", token.type == "TRUE", column)
    return _Literal("null", None, column)


def _unquote(raw: str, column: int) -> tuple[str, ...]:
    """Splits a quoted string at its unescaped `*`s, resolving backslash escapes."""
    segments: list[str] = []
    current: list[str] = []
    chars = iter(enumerate(raw[1:-1], start=column + 1))
    for position, char in chars:
        if char == "*":
            segments.append("".join(current))
            current = []
        elif char == "\\":
            position, escaped = next(chars)
            if escaped == "*":
                current.append("*")
            elif escaped in _ESCAPES:
                current.append(_ESCAPES[escaped])
            else:
                raise _error(f"unknown escape \\{escaped} at column {position - 1}")
        else:
            current.append(char)
    segments.append("".join(current))
    return tuple(segments)


def _number(raw: str, column: int) -> _Literal:
    if any(mark in raw for mark in ".eE"):
        value = float(raw)
        if not math.isfinite(value):
            raise _error(f"number {raw} at column {column} is out of range")
        return _Literal("float", value, column)
    return _Literal("int", int(raw), column)


_FRACTION = re.compile(r"\.([0-9]+)")


def _timestamp(text: str) -> datetime | None:
    """An aware UTC datetime from RFC 3339 text, or None if it is not one."""
    if len(text) < 20 or text[10] not in "Tt" or text[4] != "-":
        return None
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    fraction = _FRACTION.match(text, 19)
    if fraction and fraction.group(1)[6:].strip("0"):
        # Stored times have microseconds; fromisoformat would silently drop the rest.
        return None
    try:
        value = datetime.fromisoformat(text[:10] + "T" + text[11:])
        if value.tzinfo is None:
            return None
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _int_range(column: ColumnElement[Any]) -> tuple[int, int]:
    bits = 64 if isinstance(column.type, BigInteger) else 32
    if isinstance(column.type, SmallInteger):
        bits = 16
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


# ---------------------------------------------------------------- SQL


class _PerDialect(ColumnElement[bool]):
    """A condition rendered one way on SQLite and another everywhere else.

    Both forms are built up front, with their own bound parameters; only the
    one for the executing dialect is rendered.
    """

    __visit_name__ = "repogate_per_dialect"
    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own declaration style
        ("default", InternalTraversal.dp_clauseelement),
        ("sqlite", InternalTraversal.dp_clauseelement),
    ]
    type = Boolean()

    def __init__(self, default: ColumnElement[bool], sqlite: ColumnElement[bool]) -> None:
        self.default = default
        self.sqlite = sqlite

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.default._from_objects)

    def _negate(self) -> ColumnElement[bool]:
        return _PerDialect(not_(self.default), not_(self.sqlite))


# For other builders of conditions that differ by dialect (repositories.json_match).
PerDialect = _PerDialect


@compiles(_PerDialect)
def _render_default(element: _PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.default, **kw)})"


@compiles(_PerDialect, "sqlite")
def _render_sqlite(element: _PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.sqlite, **kw)})"


def _bind(value: Any, column: ColumnElement[Any] | None = None) -> ColumnElement[Any]:
    # An anonymous, unique parameter; typed by the column so its bind
    # processing (UTC timestamps, UUIDs on SQLite) applies.
    return bindparam(None, value, type_=column.type if column is not None else String())


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _glob_escape(text: str) -> str:
    # GLOB has no ESCAPE clause; a metacharacter in brackets stands for itself.
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)


def _match(column: ColumnElement[Any], segments: Sequence[str], fold: bool) -> _PerDialect:
    """`column` against a pattern: `segments` joined by any-text wildcards."""
    like = _bind("%".join(_like_escape(part) for part in segments))
    glob = _bind("*".join(_glob_escape(part) for part in segments))
    if fold:
        lowered = func.lower(column)
        return _PerDialect(
            lowered.like(func.lower(like), escape="\\"),
            lowered.op("GLOB", is_comparison=True)(func.lower(glob)),
        )
    return _PerDialect(column.like(like, escape="\\"), column.op("GLOB", is_comparison=True)(glob))


def _contains_element(column: ColumnElement[Any], value: str | int | float | bool) -> _PerDialect:
    """The JSON array in `column` has `value` as an element."""
    document = cast(_bind(json.dumps([value])), JSONB)
    postgres = cast(column, JSONB).op("@>", is_comparison=True)(document)
    each = func.json_each(column).table_valued("value", "type")
    if isinstance(value, bool):
        # SQLite reports JSON true/false as 1/0; only the type tells them apart.
        same = each.c.type == _bind("true" if value else "false")
    elif isinstance(value, str):
        same = and_(each.c.type == _bind("text"), each.c.value == _bind(value))
    else:
        same = and_(
            each.c.type.in_([_bind("integer"), _bind("real")]),
            each.c.value == bindparam(None, value),
        )
    return _PerDialect(postgres, select(each.c.value).where(same).exists())


# ---------------------------------------------------------------- compiler

_ORDERING = {"<", "<=", ">", ">="}
_KIND_WORDS = {
    "string": "a quoted string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "timestamp": 'a timestamp like "2026-01-01T00:00:00Z"',
    "uuid": 'a UUID like "123e4567-e89b-12d3-a456-426614174000"',
    "json_array": "a quoted string, a number, true or false",
    "json_object": "a path into it: name.key = value",
}


class _Compiler:
    def __init__(self, fields: Mapping[str, FilterField]) -> None:
        self.fields = fields

    def expression(self, node: lark.Tree[lark.Token]) -> ColumnElement[bool]:
        children = [child for child in node.children if isinstance(child, lark.Tree)]
        if node.data == "all":
            return and_(*(self.expression(child) for child in children))
        if node.data == "any":
            return or_(*(self.expression(child) for child in children))
        if node.data == "negation":
            return not_(self.expression(children[0]))
        if node.data == "group":
            return self.expression(children[0])
        tokens = [child for child in node.children if isinstance(child, lark.Token)]
        if node.data == "membership":
            return self.membership(tokens[0], [_literal(token) for token in tokens[1:]])
        return self.restriction(tokens[0], str(tokens[1]), _literal(tokens[2]))

    def field(self, name: lark.Token) -> tuple[str, FilterField]:
        head, dot, _ = str(name).partition(".")
        field = self.fields.get(head)
        if field is not None and (field.kind == "json_object") != bool(dot):
            what = "a JSON object: name a key in it" if dot == "" else "not a JSON object"
            raise _error(f"{head} at column {_column(name)} is {what}")
        if field is None:
            known = ", ".join(sorted(self.fields)) or "none"
            raise _error(
                f"unknown field {_quote(name)} at column {_column(name)}; "
                f"filterable fields: {known}"
            )
        return str(name), field

    def restriction(self, name_token: lark.Token, op: str, lit: _Literal) -> ColumnElement[bool]:
        name, field = self.field(name_token)
        column = field.column
        if field.kind == "json_object":
            return self.path(name, field, op, lit)
        if lit.kind == "null":
            if op == "=":
                return column.is_(None)
            if op == "!=":
                return column.is_not(None)
            raise _error(f"null can only be compared with = or != (column {lit.column})")
        if op == ":":
            return self.has(name, field, lit)
        if op == "=~":
            if field.kind != "string":
                raise _error(f"=~ only applies to string fields; {name} is a {field.kind}")
            return _match(column, self.string(name, lit), fold=True)
        if field.kind == "json_array":
            raise _error(f"{name} is an array; use {name} : value to test membership")
        if op in _ORDERING and field.kind in ("bool", "uuid"):
            raise _error(f"{op} does not apply to {field.kind} field {name}; use = or !=")
        if field.kind == "string" and lit.kind == "string" and len(lit.segments) > 1:
            if op not in ("=", "!="):
                raise _error(f"wildcards only work with = and != (column {lit.column})")
            matched = _match(column, lit.segments, fold=False)
            return matched if op == "=" else not_(matched)
        value = _bind(self.value(name, field, lit), column)
        return {
            "=": column == value,
            "!=": column != value,
            "<": column < value,
            "<=": column <= value,
            ">": column > value,
            ">=": column >= value,
        }[op]

    def has(self, name: str, field: FilterField, lit: _Literal) -> ColumnElement[bool]:
        if lit.kind == "string" and len(lit.segments) > 1:
            raise _error(f"wildcards only work with =, != and =~ (column {lit.column})")
        if field.kind == "string":
            return _match(field.column, ("", self.string(name, lit)[0], ""), fold=False)
        if field.kind == "json_array":
            if lit.kind == "string":
                return _contains_element(field.column, self.string(name, lit)[0])
            assert isinstance(lit.value, (int, float, bool))
            return _contains_element(field.column, lit.value)
        raise _error(f": only applies to string and array fields; {name} is a {field.kind}")

    def path(self, name: str, field: FilterField, op: str, lit: _Literal) -> ColumnElement[bool]:
        """`a.b.c = value` on a JSON object column: containment of {"b": {"c": value}} in
        `a` (jsonb @> on PostgreSQL, which a GIN index serves; the same test on SQLite).
        `!=` is its negation: rows without the key match it too, rows without a
        document (NULL) match neither."""
        from repositories.json_match import contains  # json_match builds on this module

        if op not in ("=", "!="):
            raise _error(f"only = and != apply to a path into JSON ({name})")
        if lit.kind == "string" and len(lit.segments) > 1:
            raise _error(f"wildcards do not apply to a path into JSON ({name})")
        value: Any = lit.segments[0] if lit.kind == "string" else lit.value
        for key in reversed(name.split(".")[1:]):
            value = {key: value}
        matched = contains(field.column, value)
        return matched if op == "=" else and_(field.column.is_not(None), not_(matched))

    def membership(self, name_token: lark.Token, values: list[_Literal]) -> ColumnElement[bool]:
        name, field = self.field(name_token)
        if field.kind == "json_object":
            raise _error(f"IN does not apply to a path into JSON ({name})")
        if field.kind == "json_array":
            raise _error(f"IN does not apply to array field {name}")
        if len(values) > MAX_IN_VALUES:
            raise _error(f"IN takes at most {MAX_IN_VALUES} values; {name} has {len(values)}")
        for lit in values:
            if lit.kind == "null":
                raise _error(f"null is not allowed in IN (column {lit.column}); use = null")
            if lit.kind == "string" and len(lit.segments) > 1:
                raise _error(f"wildcards are not allowed in IN (column {lit.column})")
        bound = [_bind(self.value(name, field, lit), field.column) for lit in values]
        return field.column.in_(bound)

    def string(self, name: str, lit: _Literal) -> tuple[str, ...]:
        """The segments of a string literal; only one unless wildcards are allowed."""
        if lit.kind != "string":
            raise self.mismatch(name, "string", lit)
        return lit.segments

    def value(self, name: str, field: FilterField, lit: _Literal) -> Any:
        """The literal as the Python value the column binds, or an error."""
        kind = field.kind
        if kind == "string" and lit.kind == "string":
            return lit.segments[0] if len(lit.segments) == 1 else lit.text
        if kind == "int" and lit.kind == "int":
            low, high = _int_range(field.column)
            assert isinstance(lit.value, int)
            if not low <= lit.value <= high:
                raise _error(f"{lit.value} at column {lit.column} is out of range for {name}")
            return lit.value
        if kind == "float" and lit.kind in ("int", "float"):
            return float(lit.value)  # type: ignore[arg-type]
        if kind == "bool" and lit.kind == "bool":
            return lit.value
        if kind == "timestamp" and lit.kind == "string" and len(lit.segments) == 1:
            stamp = _timestamp(lit.segments[0])
            if stamp is not None:
                return stamp
        if kind == "uuid" and lit.kind == "string" and len(lit.segments) == 1:
            try:
                return parse_uuid(lit.segments[0])
            except ValueError:
                pass
        raise self.mismatch(name, kind, lit)

    def mismatch(self, name: str, kind: FilterKind, lit: _Literal) -> InvalidArgument:
        return _error(f"expected {_KIND_WORDS[kind]} for {name} at column {lit.column}")

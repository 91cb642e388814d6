"""List filters: an AIP-160 subset compiled to a SQLAlchemy Core condition.

The filter text is parsed by a LALR grammar, checked against a per-entity
whitelist of fields, and turned into an expression in which every value the
client wrote is a bound parameter: nothing from the text reaches SQL text.

Syntax (see `compile_filter`):

    a = "x"   a != 1   a < 2   a <= 2   a > 2   a >= 2     comparisons
    a = "Ann*"   a != "*son"                               wildcards (string fields)
    a =~ "ann*"                                            case-insensitive match
    a : "nn"                                               substring / array membership
    a : *                                                  has: a non-empty array
    a IN ("x", "y")                                        1..100 values
    a = null   a != null                                   IS NULL / IS NOT NULL
    s.k.l = 1   s.k < 2   s.k : "x"   s.k : *   ...        paths into a JSON object
    x AND y   x y   x OR y   NOT x   -x   ( ... )

As in AIP-160, OR binds tighter than AND: `a AND b OR c` is `a AND (b OR c)`.
Paths into JSON objects (repositories/json_paths.py) compare by the JSON type of
the value they find.

String matching is case-sensitive on both databases. PostgreSQL uses LIKE with
ESCAPE; SQLite's LIKE ignores ASCII case, so there the same pattern is
rendered as GLOB (repositories/filter_sql.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Literal

import lark
from sqlalchemy import BigInteger, ColumnElement, SmallInteger, and_, not_, or_

from repositories import json_paths
from repositories.errors import InvalidArgument
from repositories.filter_literals import Literal as Value
from repositories.filter_literals import column as _column
from repositories.filter_literals import double, json_number
from repositories.filter_literals import error as _error
from repositories.filter_literals import literal as _literal
from repositories.filter_literals import quote as _quote
from repositories.filter_literals import timestamp as _timestamp
from repositories.filter_sql import bind as _bind
from repositories.filter_sql import match as _match
from repositories.ids import parse_uuid
from repositories.json_match import has_element, non_empty

FilterKind = Literal[
    "string", "int", "float", "bool", "timestamp", "uuid", "json_array", "json_object"
]

MAX_FILTER_BYTES = 2048
MAX_DEPTH = 16
MAX_IN_VALUES = 100
MAX_PATH = 32


@dataclass(frozen=True)
class FilterField:
    """A column clients may filter on, and how its literals are read.

    indexed: for a JSON object column, the paths into it an index holds
    (json_paths.indexed_paths); conditions on them use the index's expression.
    """

    column: ColumnElement[Any]
    kind: FilterKind
    indexed: frozenset[tuple[str, ...]] = frozenset()


def compile_filter(text: str, fields: Mapping[str, FilterField]) -> ColumnElement[bool] | None:
    """The condition `text` describes over `fields`, or None when `text` is blank.

    Raises InvalidArgument (reason INVALID_FILTER, field "filter") for any
    text that is not a valid filter over these fields.
    """
    tree = checked_tree(text)
    return None if tree is None else _Compiler(fields).expression(tree)


def checked_tree(text: str) -> lark.Tree[lark.Token] | None:
    """The syntax tree of a filter text within the size and depth bounds, or None when
    it is blank; INVALID_FILTER otherwise."""
    _check_size(text)
    if not text.strip():
        return None
    tree = _parse(text)
    _check_depth(tree)
    return tree


class Filters:
    """`compile_filter` over one entity's fields, remembering the texts it compiled:
    clients send the same few filters again and again, and parsing one costs more
    than the rest of building its query. The condition, with its values bound, is
    a SQLAlchemy expression, immutable and so safe to reuse; invalid texts raise
    every time and are not kept. `tree` gives the parsed text too, parsed once for
    both (server/query_shapes.py reads a filter's shape from it)."""

    def __init__(self, fields: Mapping[str, FilterField], remember: int = 256) -> None:
        self.fields = fields
        self.tree = lru_cache(maxsize=remember)(checked_tree)
        self.compile = lru_cache(maxsize=remember)(self._compile)

    def _compile(self, text: str) -> ColumnElement[bool] | None:
        tree = self.tree(text)
        return None if tree is None else _Compiler(self.fields).expression(tree)


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
restriction: NAME COMPARATOR (_value | STAR)
membership: NAME _IN "(" _value ("," _value)* ")"
_value: STRING | NUMBER | TRUE | FALSE | NULL

NAME: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/
COMPARATOR: /<=|>=|!=|=~|=|<|>|:/
STRING: /"(?:[^"\\]|\\.)*"/s | /'(?:[^'\\]|\\.)*'/s
NUMBER: /-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/
TRUE: "true"
FALSE: "false"
NULL: "null"
STAR: "*"
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
    "STAR": '"*"',
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
    """The syntax tree of a filter text; INVALID_FILTER when it does not parse."""
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
        star = ", null or *" if "STAR" in expected else " or null"
        return what + f"; expected a value: a quoted string, a number, true, false{star}"
    names = sorted({_TOKEN_NAMES[name] for name in expected if name in _TOKEN_NAMES})
    return what + (f"; expected {', '.join(names)}" if names else "")


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


def _int_range(column: ColumnElement[Any]) -> tuple[int, int]:
    bits = 64 if isinstance(column.type, BigInteger) else 32
    if isinstance(column.type, SmallInteger):
        bits = 16
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


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

    def field(self, name: lark.Token) -> tuple[str, FilterField, tuple[str, ...]]:
        """The field `name` starts with, and the path into it after its first dot."""
        head, *path = str(name).split(".")
        field = self.fields.get(head)
        if field is None:
            known = ", ".join(sorted(self.fields)) or "none"
            raise _error(
                f"unknown field {_quote(name)} at column {_column(name)}; "
                f"filterable fields: {known}"
            )
        if path and field.kind != "json_object":
            raise _error(f"{head} at column {_column(name)} is not a JSON object")
        if len(path) > MAX_PATH:
            # A Struct nests at most 32 levels (docs/requests.md): no value lies deeper.
            raise _error(f"the path at column {_column(name)} is over {MAX_PATH} keys deep")
        return str(name), field, tuple(path)

    def restriction(self, name_token: lark.Token, op: str, lit: Value) -> ColumnElement[bool]:
        name, field, path = self.field(name_token)
        column = field.column
        if lit.kind == "any" and op != ":":
            raise _error(f"* stands alone only after : (column {lit.column})")
        if path:
            return json_paths.restriction(column, path, name, op, lit, path in field.indexed)
        if lit.kind == "null":
            if op == "=":
                return column.is_(None)
            if op == "!=":
                return column.is_not(None)
            raise _error(f"null can only be compared with = or != (column {lit.column})")
        if field.kind == "json_object":
            raise _error(
                f"{name} at column {_column(name_token)} is a JSON object: name a key in it "
                f"({name}.key = value, {name}.key:*), or compare it with null"
            )
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
        if field.kind == "string" and lit.wildcard:
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

    def has(self, name: str, field: FilterField, lit: Value) -> ColumnElement[bool]:
        if lit.kind == "any":
            if field.kind != "json_array":
                raise _error(
                    f":* applies to arrays and to paths into JSON objects; {name} is a "
                    f"{field.kind} (to test for a value, write {name} != null)"
                )
            return non_empty(field.column)
        if lit.wildcard:
            raise _error(f"wildcards only work with =, != and =~ (column {lit.column})")
        if field.kind == "string":
            return _match(field.column, ("", self.string(name, lit)[0], ""), fold=False)
        if field.kind == "json_array":
            if lit.kind == "string":
                return has_element(field.column, self.string(name, lit)[0])
            if lit.kind == "bool":
                assert isinstance(lit.value, bool)
                return has_element(field.column, lit.value)
            return has_element(field.column, json_number(lit))
        raise _error(f": only applies to string and array fields; {name} is a {field.kind}")

    def membership(self, name_token: lark.Token, values: list[Value]) -> ColumnElement[bool]:
        name, field, path = self.field(name_token)
        if len(values) > MAX_IN_VALUES:
            raise _error(f"IN takes at most {MAX_IN_VALUES} values; {name} has {len(values)}")
        if path:
            return json_paths.membership(field.column, path, name, values)
        if field.kind == "json_object":
            raise _error(f"IN does not apply to JSON object {name}; name a key in it")
        if field.kind == "json_array":
            raise _error(f"IN does not apply to array field {name}")
        for lit in values:
            if lit.kind == "null":
                raise _error(f"null is not allowed in IN (column {lit.column}); use = null")
            if lit.wildcard:
                raise _error(f"wildcards are not allowed in IN (column {lit.column})")
        bound = [_bind(self.value(name, field, lit), field.column) for lit in values]
        return field.column.in_(bound)

    def string(self, name: str, lit: Value) -> tuple[str, ...]:
        """The segments of a string literal; only one unless wildcards are allowed."""
        if lit.kind != "string":
            raise self.mismatch(name, "string", lit)
        return lit.segments

    def value(self, name: str, field: FilterField, lit: Value) -> Any:
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
            return double(lit)
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

    def mismatch(self, name: str, kind: FilterKind, lit: Value) -> InvalidArgument:
        return _error(f"expected {_KIND_WORDS[kind]} for {name} at column {lit.column}")

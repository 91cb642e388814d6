"""Paths into JSON objects (`payload.a.b <op> value`) against real databases: the rows a
filter selects are the rows a plain-Python reading of it selects, on SQLite and
PostgreSQL alike, whatever JSON type each document holds at the path.

The documents hold every JSON type at the paths filtered on, objects where scalars are
expected and the reverse, JSON null, missing keys, an empty document and no document
(SQL NULL). Strings mix case, LIKE and GLOB metacharacters and characters beyond ASCII
(without case, since SQLite's lower() folds ASCII only), so that code-point order and
escaping are both tested. One path (`n`) has an index, so its conditions use the
index's expression with the keys written inline; the others bind their keys.
"""

from __future__ import annotations

import json
import operator
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Index, Integer, MetaData, Table, select

from repositories.database import Database
from repositories.filtering import FilterField, compile_filter
from repositories.json_paths import indexed_paths, path_index_expression
from repositories.types import json_document

pytestmark = pytest.mark.integration

DOCS: list[dict[str, Any] | None] = [
    {"n": 1, "s": "apple", "a": {"b": 1, "c": "x"}, "l": ["x", "y"], "x": 1},
    {"n": 2.5, "s": "Apple", "a": {"b": 2.5, "c": "X"}, "l": ["y"], "x": "1"},
    {"n": -3, "s": "banana", "a": {"b": -1}, "l": [1, 2, True], "x": True},
    {"n": 0, "s": "", "a": {"b": 0, "c": ""}, "l": [], "x": False},
    {"n": 10, "s": "a%b_c", "a": {"b": "10"}, "l": ["a%b_c", "*"], "x": None},
    {"n": 1e20, "s": "a*b?c[d]", "a": {"b": True}, "l": [["x"]], "x": [1, "1"]},
    {"n": "5", "s": "中文", "a": {"b": None, "c": "中"}, "l": "x", "x": {"b": 1}},
    {"n": True, "s": "€uro", "a": {"c": "€"}, "l": [0, False, "0"], "x": 0},
    {"n": None, "s": "back\\slash", "a": "b", "l": [None], "x": 1.0},
    {"n": [1], "s": 5, "a": [{"b": 1}], "l": {"x": 1}, "x": -0.5},
    {"n": {"m": 1}, "s": ["apple"], "a": {"b": {"b": 1}, "c": ["x"]}, "l": ["X"]},
    {"n": 2, "s": "apple pie", "a": {"b": 2, "c": "y"}},
    {"s": "zebra", "a": {}},
    {"n": 7},
    {},
    None,
]
PATHS = ("n", "s", "a.b", "a.c", "l", "x", "a")


# ------------------------------------------------------------ the Python reading

MISSING = object()


def at(doc: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return MISSING
        doc = doc[key]
    return doc


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def same(v: Any, lit: Any) -> bool:
    """JSON equality: numbers by value, strings exactly, true/false/null by kind."""
    if lit is None or isinstance(lit, bool):
        return v is lit
    if number(lit):
        return number(v) and v == lit
    return isinstance(v, str) and v == lit


def glob(segments: list[str], fold: bool) -> Callable[[Any], bool]:
    rx = re.compile(".*".join(re.escape(s.lower() if fold else s) for s in segments), re.DOTALL)
    return lambda v: isinstance(v, str) and bool(rx.fullmatch(v.lower() if fold else v))


ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


# ------------------------------------------------------------ filters as data


@dataclass(frozen=True)
class Node:
    text: str
    holds: Callable[[Any], bool]


def literal(value: Any) -> str:
    if isinstance(value, str):
        return quoted([value])
    return json.dumps(value)


def quoted(segments: list[str]) -> str:
    escaped = [s.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*") for s in segments]
    return '"' + "*".join(escaped) + '"'


def present_values(path: str) -> list[Any]:
    found = [at(doc, path) for doc in DOCS]
    return [v for v in found if v is not MISSING and not isinstance(v, (dict, list))]


SCALARS = [0, 1, 2, 2.5, -1, 1e20, "1", "x", "apple", "", "中", "€uro", "a%b_c", True, False, None]


@st.composite
def leaf(draw: st.DrawFn) -> Node:
    path = draw(st.sampled_from(PATHS))
    name = f"payload.{path}"
    value = draw(st.sampled_from(present_values(path) or SCALARS) | st.sampled_from(SCALARS))
    shape = draw(st.sampled_from(["=", "!=", "order", "order", "has", "member", "in", "match"]))

    def value_at(doc: Any) -> Any:
        return at(doc, path)

    if shape == "has":
        return Node(f"{name}:*", lambda d: value_at(d) is not MISSING)
    if shape == "in":
        values = [value, *draw(st.lists(st.sampled_from(SCALARS[:-1]), max_size=3))]
        values = [v for v in values if v is not None] or [1]
        text = f"{name} IN ({', '.join(literal(v) for v in values)})"
        return Node(text, lambda d: any(same(value_at(d), v) for v in values))
    if shape == "member":
        if value is None:
            value = "x"

        def member(d: Any) -> bool:
            v = value_at(d)
            return (isinstance(v, list) and any(same(e, value) for e in v)) or same(v, value)

        return Node(f"{name} : {literal(value)}", member)
    if shape == "order":
        if value is None or isinstance(value, bool):
            value = draw(st.sampled_from([1, 2.5, "b", "apple", "中"]))
        op = draw(st.sampled_from(list(ORDER)))
        if number(value):
            return Node(
                f"{name} {op} {literal(value)}",
                lambda d: number(value_at(d)) and ORDER[op](value_at(d), value),
            )
        return Node(
            f"{name} {op} {literal(value)}",
            lambda d: isinstance(value_at(d), str) and ORDER[op](value_at(d), value),
        )
    if shape == "match":
        source = value if isinstance(value, str) else "apple"
        i = draw(st.integers(0, len(source)))
        j = draw(st.integers(i, len(source)))
        segments = draw(st.sampled_from([[source[:i], ""], ["", source[i:j], ""], [source]]))
        op = draw(st.sampled_from(["=", "!=", "=~"]))
        if op == "=~":
            segments = [s.swapcase() for s in segments]
            test = glob(segments, fold=True)
            return Node(f"{name} =~ {quoted(segments)}", lambda d: test(value_at(d)))
        if len(segments) == 1:
            segments = [*segments, ""]
        test = glob(segments, fold=False)
        if op == "=":
            return Node(f"{name} = {quoted(segments)}", lambda d: test(value_at(d)))
        return Node(f"{name} != {quoted(segments)}", lambda d: not test(value_at(d)))
    if shape == "=":
        return Node(f"{name} = {literal(value)}", lambda d: same(value_at(d), value))
    return Node(f"{name} != {literal(value)}", lambda d: not same(value_at(d), value))


def combine(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    def both(parts: tuple[Node, Node, str]) -> Node:
        a, b, how = parts
        if how == "OR":
            return Node(f"({a.text}) OR ({b.text})", lambda d: a.holds(d) or b.holds(d))
        return Node(f"({a.text}) AND ({b.text})", lambda d: a.holds(d) and b.holds(d))

    def negated(node: Node) -> Node:
        return Node(f"NOT ({node.text})", lambda d: not node.holds(d))

    return st.tuples(children, children, st.sampled_from(["AND", "OR"])).map(both) | children.map(
        negated
    )


# ------------------------------------------------------------ the table


@dataclass(frozen=True)
class Docs:
    table: Table
    fields: dict[str, FilterField]

    async def ids(self, database: Database, text: str) -> set[int]:
        condition = compile_filter(text, self.fields)
        assert condition is not None
        async with database.engine.connect() as conn:
            result = await conn.execute(select(self.table.c.id).where(condition))
            return set(result.scalars())


@pytest.fixture
async def docs(database: Database) -> AsyncIterator[Docs]:
    metadata = MetaData()
    table = Table(
        f"paths_{uuid.uuid4().hex[:8]}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("payload", json_document(), nullable=True),
    )
    Index(f"ix_{table.name}_n", path_index_expression(table.c.payload, ("n",)))
    paths = indexed_paths(table)
    assert paths == {"payload": frozenset({("n",)})}
    fields = {"payload": FilterField(table.c.payload, "json_object", paths["payload"])}
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(table.insert(), [{"id": i, "payload": d} for i, d in enumerate(DOCS)])
    try:
        yield Docs(table, fields)
    finally:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)


def expected(holds: Callable[[Any], bool]) -> set[int]:
    return {i for i, doc in enumerate(DOCS) if holds(doc)}


# ------------------------------------------------------------ tests


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_database_agrees_with_python_reading_of_path_filters(
    database: Database, docs: Docs, data: st.DataObject
) -> None:
    node = data.draw(st.recursive(leaf(), combine, max_leaves=4), label="filter")
    assert await docs.ids(database, node.text) == expected(node.holds), node.text


NULL_DOC = DOCS.index(None)
EMPTY = DOCS.index({})


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        # Numbers compare as numbers; a value of another type never matches.
        ("payload.n > 1", {1, 4, 5, 11, 13}),
        ("payload.n <= 0", {2, 3}),
        ("payload.n >= 1e19", {5}),
        ("payload.a.b < 1", {2, 3}),
        # Strings compare by code point: "A" < "a" < "b" < "中" and "€" (U+20AC) < "中".
        ('payload.s < "a"', {1, 3}),
        ('payload.s >= "b"', {2, 6, 7, 8, 12}),
        ('payload.s > "€"', {6, 7}),
        # A number literal does not match the string "5"; a string literal does.
        ("payload.n = 5", set()),
        ('payload.n = "5"', {6}),
        ("payload.n = null", {8}),
        ("payload.x = true", {2}),
        ("payload.x = 1", {0, 8}),
        # Wildcards and =~ on strings only.
        ('payload.s = "app*"', {0, 11}),
        ('payload.s =~ "APP*"', {0, 1, 11}),
        ('payload.s = "a\\*b*"', {5}),
        ('payload.s = "*%*"', {4}),
        # `:` finds an element of an array, or the value itself (AIP-160's m.foo:42).
        ('payload.l : "x"', {0, 6}),
        ("payload.l : 1", {2}),
        ("payload.l : true", {2}),
        ("payload.l : 0", {7}),
        ('payload.a.c : "x"', {0, 10}),
        # `:*`: the key is there, JSON null included.
        ("payload.n:*", set(range(len(DOCS))) - {12, EMPTY, NULL_DOC}),
        ("payload.a.b:*", {0, 1, 2, 3, 4, 5, 6, 10, 11}),
        ("NOT payload.a.b:*", {7, 8, 9, 12, 13, EMPTY, NULL_DOC}),
        # != and NOT match rows without the key, and the row without a document.
        ("payload.s != 5", set(range(len(DOCS))) - {9}),
        ("NOT payload.n > 1", set(range(len(DOCS))) - {1, 4, 5, 11, 13}),
        ('payload.x IN (1, "1", false)', {0, 1, 3, 8}),
        ("payload = null", {NULL_DOC}),
        ("payload != null", set(range(len(DOCS))) - {NULL_DOC}),
    ],
)
async def test_examples(database: Database, docs: Docs, text: str, holds: set[int]) -> None:
    assert await docs.ids(database, text) == holds

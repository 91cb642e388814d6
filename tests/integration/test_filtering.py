"""Filters against real databases: the rows a filter selects are the rows a plain
Python reading of the same filter selects, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Column, ColumnElement, Integer, MetaData, String, Table, select

from repositories.database import Database
from repositories.filtering import FilterField, compile_filter
from repositories.tables import users
from repositories.users import USER, UserRepository
from tests.integration.support import BASE_TIME, insert_rows, other_tenant

pytestmark = pytest.mark.integration

# The users whitelist, plus kinds users do not have.
FIELDS = {
    **USER.filter_fields(),
    "version": FilterField(users.c.version, "int"),
}
STRINGS = ("email", "username", "display_name")

# Values with LIKE and GLOB metacharacters, backslashes and quotes, so that a
# pattern which is not escaped selects the wrong rows. ASCII only: SQLite's
# lower() folds ASCII alone.
PEOPLE = [
    ("ann@example.com", "ann", "Ann Smith"),
    ("Anna.Smith@example.com", "anna", "ANNA"),
    ("bob_jones@example.com", "bob_jones", "Bob"),
    ("bobXjones@example.com", "b0b%jones", "50% off"),
    ("100%sure@example.com", "it's", "Under_score"),
    ("back\\slash@example.com", 'say"hi', "O'Brien"),
    ("star*man@example.com", "x\\y", "Back\\slash [a]"),
    ("q?[x]@example.com", "carl*son", ""),
]


# Fragments that select other rows if a metacharacter slips through unescaped.
TRICKY = ["bob_", "b0b%", "bob_j", "100%s", "%", "_", "\\", "*", "?", "[x]", "[a]", "q?[", "star*"]


def seed_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": uuid.uuid4(),
            "email": email,
            "username": username,
            "display_name": display_name,
            "is_active": i % 3 != 0,
            "version": 1 + i % 3,
            "create_time": BASE_TIME + timedelta(minutes=i),
            "update_time": BASE_TIME + timedelta(hours=i, microseconds=i),
        }
        for i, (email, username, display_name) in enumerate(PEOPLE)
    ]


async def select_ids(database: Database, tenant: str, expr: ColumnElement[bool]) -> set[uuid.UUID]:
    async with database.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        result = await repo._execute(repo.scope.select(users.c.id).where(expr))
        return {row.id for row in result}


# ------------------------------------------------------------ filters as data


@dataclass(frozen=True)
class Node:
    """A generated filter: its text and the plain-Python predicate it means."""

    text: str
    holds: Callable[[dict[str, Any]], bool]


def quoted(segments: list[str]) -> str:
    """A string literal whose unescaped `*`s are exactly the joins between segments."""
    escaped = [s.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*") for s in segments]
    return '"' + "*".join(escaped) + '"'


def pattern(segments: list[str], flags: int = 0) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(s) for s in segments), re.DOTALL | flags)


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@st.composite
def string_leaf(draw: st.DrawFn, rows: list[dict[str, Any]]) -> Node:
    field = draw(st.sampled_from(STRINGS))
    source = draw(
        st.sampled_from([row[field] for row in rows])
        | st.sampled_from(TRICKY)
        | st.text("aA%_\\'\"*?[ ", max_size=3)
    )
    i = draw(st.integers(0, len(source)))
    j = draw(st.integers(i, len(source)))
    shape = draw(
        st.sampled_from(["exact", "prefix", "suffix", "contains", "inner", "has", "fold", "in"])
    )
    segments = {
        "exact": [source],
        "prefix": [source[:i], ""],
        "suffix": ["", source[i:]],
        "contains": ["", source[i:j], ""],
        "inner": [source[:i], source[j:]],
        "has": [source[i:j]],
        "fold": [source[:i].swapcase(), source[j:].upper()],
        "in": [source],
    }[shape]
    if shape == "has":
        return Node(f"{field} : {quoted(segments)}", lambda r: segments[0] in r[field])
    if shape == "fold":
        rx = pattern([s.lower() for s in segments])
        return Node(
            f"{field} =~ {quoted(segments)}", lambda r: bool(rx.fullmatch(r[field].lower()))
        )
    if shape == "in":
        others = draw(st.lists(st.sampled_from([row[field] for row in rows]), max_size=3))
        values = [source, *others]
        text = f"{field} IN ({', '.join(quoted([v]) for v in values)})"
        return Node(text, lambda r: r[field] in values)
    op = draw(st.sampled_from(["=", "!="]))
    rx = pattern(segments)
    negate = op == "!="
    return Node(
        f"{field} {op} {quoted(segments)}", lambda r: bool(rx.fullmatch(r[field])) != negate
    )


@st.composite
def other_leaf(draw: st.DrawFn, rows: list[dict[str, Any]]) -> Node:
    field = draw(st.sampled_from(["is_active", "create_time", "update_time", "id", "version"]))
    row = draw(st.sampled_from(rows))
    if field == "is_active":
        op = draw(st.sampled_from(["=", "!="]))
        value = draw(st.booleans())
        return Node(f"is_active {op} {str(value).lower()}", lambda r: OPS[op](r[field], value))
    if field == "id":
        op = draw(st.sampled_from(["=", "!="]))
        ident = row["id"] if draw(st.booleans()) else uuid.uuid4()
        text = str(ident).upper() if draw(st.booleans()) else str(ident)
        return Node(f'id {op} "{text}"', lambda r: OPS[op](r["id"], ident))
    op = draw(st.sampled_from(list(OPS)))
    if field == "version":
        if draw(st.booleans()):
            values = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
            listed = ", ".join(map(str, values))
            return Node(f"version IN ({listed})", lambda r: r["version"] in values)
        number = draw(st.integers(-1, 5))
        return Node(f"version {op} {number}", lambda r: OPS[op](r["version"], number))
    stamp = row[field] + timedelta(microseconds=draw(st.sampled_from([-1, 0, 0, 1])))
    zone = timezone(timedelta(hours=draw(st.integers(-12, 14))))
    text = stamp.astimezone(zone).isoformat()
    if zone.utcoffset(None) == timedelta(0) and draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    return Node(f'{field} {op} "{text}"', lambda r: OPS[op](r[field], stamp))


def combine(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    def both(pair: tuple[Node, Node, str]) -> Node:
        a, b, how = pair
        if how == "OR":
            return Node(f"({a.text}) OR ({b.text})", lambda r: a.holds(r) or b.holds(r))
        joiner = " AND " if how == "AND" else " "
        return Node(f"({a.text}){joiner}({b.text})", lambda r: a.holds(r) and b.holds(r))

    def negated(pair: tuple[Node, str]) -> Node:
        node, prefix = pair
        return Node(f"{prefix}({node.text})", lambda r: not node.holds(r))

    return st.one_of(
        st.tuples(children, children, st.sampled_from(["AND", "OR", ""])).map(both),
        st.tuples(children, st.sampled_from(["NOT ", "-"])).map(negated),
    )


def filters(rows: list[dict[str, Any]]) -> st.SearchStrategy[Node]:
    leaves = string_leaf(rows) | other_leaf(rows)
    return st.recursive(leaves, combine, max_leaves=5)


# ------------------------------------------------------------ tests

_seeded: dict[str, list[dict[str, Any]]] = {}
ROWS = seed_rows()


async def seeded(database: Database, tenant: str) -> list[dict[str, Any]]:
    """The tenant's rows, inserted once per test (hypothesis calls the body many times)."""
    if tenant not in _seeded:
        rows = seed_rows()
        await insert_rows(database, tenant, rows)
        # A neighbour with the same values must never show up.
        await insert_rows(database, other_tenant(), seed_rows())
        _seeded[tenant] = rows
    return _seeded[tenant]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_database_agrees_with_python_reading_of_filter(
    database: Database, tenant: str, data: st.DataObject
) -> None:
    rows = await seeded(database, tenant)
    node = data.draw(filters(rows), label="filter")
    expr = compile_filter(node.text, FIELDS)
    assert expr is not None
    expected = {row["id"] for row in rows if node.holds(row)}
    assert await select_ids(database, tenant, expr) == expected, node.text


@pytest.mark.parametrize(
    ("text", "usernames"),
    [
        ('email = "ann*"', {"ann"}),
        ('email =~ "ANN*"', {"ann", "anna"}),
        ('email : "%"', {"it's"}),
        ('email : "_"', {"bob_jones"}),
        ('email = "bob_*"', {"bob_jones"}),
        ('email = "*\\\\*"', {'say"hi'}),
        ('email = "star\\**"', {"x\\y"}),
        ('email = "q?[x]*"', {"carl*son"}),
        ('username = "it\'s"', {"it's"}),
        ("username = 'say\"hi'", {'say"hi'}),
        ('username = "x\\\\y"', {"x\\y"}),
        ('username = "carl\\*son"', {"carl*son"}),
        ('display_name = ""', {"carl*son"}),
        ('display_name : "[a]"', {"x\\y"}),
        ('display_name != "*"', set()),
        (
            'display_name = "*" -display_name : " "',
            {"anna", "bob_jones", "it's", 'say"hi', "carl*son"},
        ),
        ('create_time >= "2031-05-17T10:36:00+02:00"', {"x\\y", "carl*son"}),
        ('create_time < "2031-05-17T08:31:00Z" OR version = 3', {"ann", "bob_jones", 'say"hi'}),
        ("is_active = false version >= 1", {"ann", "b0b%jones", "x\\y"}),
        ("version IN (1, 2) AND NOT is_active = true", {"ann", "b0b%jones", "x\\y"}),
        ("version = 1 AND version = 2 OR version = 3", set()),
    ],
)
async def test_examples(database: Database, tenant: str, text: str, usernames: set[str]) -> None:
    rows = await seeded(database, tenant)
    expr = compile_filter(text, FIELDS)
    assert expr is not None
    by_id = {row["id"]: row["username"] for row in rows}
    assert {by_id[i] for i in await select_ids(database, tenant, expr)} == usernames


async def test_id_filter_matches_uuid_in_any_case(database: Database, tenant: str) -> None:
    rows = await seeded(database, tenant)
    target = rows[3]["id"]
    expr = compile_filter(f'id = "{str(target).upper()}" OR id IN ("{rows[4]["id"]}")', FIELDS)
    assert expr is not None
    assert await select_ids(database, tenant, expr) == {target, rows[4]["id"]}


async def test_json_array_membership(database: Database) -> None:
    metadata = MetaData()
    name = f"filter_things_{uuid.uuid4().hex[:8]}"
    things = Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("label", String(32)),
        Column("tags", JSON(none_as_null=True)),
    )
    fields = {"tags": FilterField(things.c.tags, "json_array")}
    data = {
        1: ["red", "blue"],
        2: ["Red", "it's", 'q"d', "%"],
        3: [1, 2.5, True],
        4: [],
        5: [0, False, "1", ["red"]],
        6: None,
    }
    cases = {
        'tags : "red"': {1},
        'tags : "Red"': {2},
        "tags : 'it\\'s'": {2},
        'tags : "q\\"d"': {2},
        'tags : "%"': {2},
        'tags : "re"': set(),
        "tags : 1": {3},
        "tags : 1.0": {3},
        "tags : 2.5": {3},
        "tags : true": {3},
        "tags : false": {5},
        "tags : 0": {5},
        'tags : "1"': {5},
        'NOT tags : "red" AND tags != null': {2, 3, 4, 5},
        "tags = null": {6},
        # Overlap and containment, as AIP-160 spells them.
        'tags : "red" OR tags : 1': {1, 3},
        'tags : "Red" AND tags : "%"': {2},
        # A non-empty array.
        "tags:*": {1, 2, 3, 5},
        "NOT tags : *": {4},
        # Past a BIGINT: compared as a double, not refused by the driver.
        "tags : 9223372036854775808": set(),
        "tags : -1" + "0" * 30: set(),
    }
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        async with database.engine.begin() as conn:
            await conn.execute(
                things.insert(), [{"id": k, "label": str(k), "tags": v} for k, v in data.items()]
            )
        async with database.engine.connect() as conn:
            for text, expected in cases.items():
                expr = compile_filter(text, fields)
                assert expr is not None
                found = set((await conn.execute(select(things.c.id).where(expr))).scalars())
                assert found == expected, text
    finally:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)

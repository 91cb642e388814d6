"""Paths into JSON objects: the SQL they compile to, and what they refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, ColumnElement, Index, Integer, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from repositories.errors import InvalidArgument
from repositories.filtering import FilterField, compile_filter
from repositories.json_paths import indexed_paths, path_index_expression
from repositories.types import json_document
from tests.unit.support import assert_invalid

pytestmark = pytest.mark.unit

docs = Table(
    "docs",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("payload", json_document()),
    Column("label", String),
    Column("tags", json_document()),
)
Index("ix_docs_score", docs.c.id, path_index_expression(docs.c.payload, ("score",)).desc())
Index("ix_docs_deep", docs.c.id, path_index_expression(docs.c.payload, ("a", "b")))
FIELDS = {
    "payload": FilterField(docs.c.payload, "json_object", indexed_paths(docs)["payload"]),
    "label": FilterField(docs.c.label, "string"),
    "tags": FilterField(docs.c.tags, "json_array"),
}


def compiled(text: str, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    expr = compile_filter(text, FIELDS)
    assert expr is not None
    stmt = select(docs.c.id).where(expr).compile(dialect=dialect)
    return str(stmt).split("WHERE", 1)[1], dict(stmt.params)


def refusal(text: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        compile_filter(text, FIELDS)
    assert_invalid(info.value, "filter", reason="INVALID_FILTER")
    return info.value.violations[0].description


def outcome(text: str) -> InvalidArgument | ColumnElement[bool] | None:
    try:
        return compile_filter(text, FIELDS)
    except InvalidArgument as exc:
        return exc


def test_indexed_paths_are_found_through_desc_and_nesting() -> None:
    assert indexed_paths(docs) == {"payload": frozenset({("score",), ("a", "b")})}


def test_a_path_an_index_holds_is_compiled_to_the_index_expression() -> None:
    sql, params = compiled("payload.score > 5", postgresql.dialect())
    assert "(docs.payload -> 'score') > CAST(" in sql
    assert "jsonb_typeof(docs.payload -> 'score')" in sql
    assert "5.0" in params.values()
    sql, _ = compiled("payload.a.b >= 1", postgresql.dialect())
    assert "((docs.payload -> 'a') -> 'b') >= CAST(" in sql
    sql, params = compiled("payload.score < 5", sqlite.dialect())
    assert "json_extract(docs.payload, '$.\"score\"') < ?" in sql
    assert 5.0 in params.values()


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=lambda d: d.name)
@pytest.mark.parametrize(
    "text",
    [
        'payload.secret_key < "zz_value"',
        "payload.secret_key > 42",
        "payload.secret_key:*",
        'payload.secret_key : "zz_value"',
        'payload.secret_key = "zz_*"',
        'payload.secret_key =~ "zz_value"',
        'payload.secret_key IN ("zz_value")',
        "payload.score.secret_key > 42",
    ],
)
def test_keys_and_values_of_other_paths_are_bound(text: str, dialect: Dialect) -> None:
    sql, params = compiled(text, dialect)
    assert "secret_key" not in sql
    assert "zz_" not in sql
    assert "42" not in sql
    rendered = json.dumps([str(v) for v in params.values()])
    assert "secret_key" in rendered


def test_string_order_is_by_code_point_on_postgresql() -> None:
    sql, _ = compiled('payload.name < "b"', postgresql.dialect())
    assert 'COLLATE "C"' in sql


def test_has_on_an_array_is_a_non_empty_array() -> None:
    sql, _ = compiled("tags:*", postgresql.dialect())
    assert "jsonb_typeof" in sql
    sql, _ = compiled("tags : *", sqlite.dialect())
    assert "json_array_length(docs.tags) > ?" in sql


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("payload.a < true", "< on a path into JSON (payload.a) compares numbers or strings"),
        ("payload.a >= null", "null at column 14 has no order"),
        ('payload.a < "x*"', "wildcards only work with =, != and =~ (column 13)"),
        ("payload.a =~ 1", "=~ takes a quoted string"),
        ("payload.a : null", "for JSON null write payload.a = null"),
        ('payload.a : "x*"', ": takes a string, a number, true, false or *"),
        ("payload.a IN (1, null)", "null is not allowed in IN (column 18)"),
        ('payload.a IN ("x*")', "wildcards are not allowed in IN"),
        ("payload.a > 1" + "0" * 400, "is out of range"),
        ("payload = 1", "payload at column 1 is a JSON object: name a key in it"),
        ("payload < 1", "is a JSON object"),
        ("payload : 1", "is a JSON object"),
        ("payload:*", "is a JSON object"),
        ("payload IN (1)", "IN does not apply to JSON object payload"),
        ("label.x = 1", "label at column 1 is not a JSON object"),
        ("tags.x = 1", "tags at column 1 is not a JSON object"),
        ("pay.x = 1", 'unknown field "pay.x" at column 1; filterable fields: label, payload'),
        ("label:*", ":* applies to arrays and to paths into JSON objects; label is a string"),
        ("payload.a = *", "* stands alone only after : (column 13)"),
        ("tags != *", "* stands alone only after :"),
        ("payload.a IN (*)", "syntax error"),
        ("payload.a : ", "ends too early"),
        ("payload.a = ", "expected a value: a quoted string, a number, true, false, null or *"),
        ("payload. = 1", "syntax error at column 8"),
        ("tags : null", "null can only be compared with = or != (column 8)"),
        ("payload" + ".k" * 33 + " = 1", "the path at column 1 is over 32 keys deep"),
    ],
)
def test_refusals_say_what_and_where(text: str, expected: str) -> None:
    assert expected in refusal(text)


_atoms = st.sampled_from(
    [
        "payload.a",
        "payload.a.b",
        "payload.score",
        "payload",
        "label",
        "tags",
        "*",
        ":",
        "=",
        "!=",
        "<",
        ">=",
        "=~",
        "IN",
        "(",
        ")",
        ",",
        "NOT",
        "AND",
        "OR",
        '"x*"',
        '"x"',
        "1",
        "2.5",
        "true",
        "null",
    ]
)


@given(st.lists(_atoms, max_size=30).map(" ".join))
@settings(max_examples=500, deadline=None)
def test_token_soup_compiles_or_is_refused_as_invalid_filter(text: str) -> None:
    result = outcome(text)
    if isinstance(result, InvalidArgument):
        assert result.reason == "INVALID_FILTER"
        assert [v.field for v in result.violations] == ["filter"]
        return
    assert result is None or isinstance(result, ColumnElement)
    if result is not None:
        for dialect in (postgresql.dialect(), sqlite.dialect()):
            select(docs.c.id).where(result).compile(dialect=dialect)

"""Filter parsing and compilation: the SQL it makes, and every way it refuses text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Column, ColumnElement, Integer, MetaData, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from repositories.errors import InvalidArgument
from repositories.filtering import FilterField, Filters, compile_filter
from repositories.tables import users
from repositories.users import USER
from tests.unit.support import assert_invalid

pytestmark = pytest.mark.unit

things = Table("things", MetaData(), Column("id", Integer, primary_key=True), Column("tags", JSON))

# The users whitelist, plus kinds users do not have.
FIELDS = {
    **USER.filter_fields(),
    "version": FilterField(users.c.version, "int"),
    "tags": FilterField(things.c.tags, "json_array"),
}
DIALECTS: list[Dialect] = [postgresql.dialect(), sqlite.dialect()]


def compiled(text: str, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    expr = compile_filter(text, FIELDS)
    assert expr is not None
    stmt = select(users.c.id).select_from(users, things).where(expr).compile(dialect=dialect)
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


def flat_params(params: dict[str, Any]) -> list[Any]:
    values: list[Any] = []
    for value in params.values():
        values += value if isinstance(value, list) else [value]
    return values


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_text_is_no_filter(text: str) -> None:
    assert compile_filter(text, FIELDS) is None


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize(
    ("text", "values"),
    [
        ('email = "ann@example.com"', ["ann@example.com"]),
        ("email != 'it''s'", None),
        ("version >= 3", [3]),
        ("version < -2", [-2]),
        ("is_active = false", [False]),
        ('email IN ("qa1", "qb2", "qc3")', ["qa1", "qb2", "qc3"]),
        ('email = "qa\\"b" username = "qx1"', ['qa"b', "qx1"]),
        ('create_time > "2026-01-01T00:00:00Z"', [datetime(2026, 1, 1, tzinfo=UTC)]),
        (
            'create_time <= "2026-01-01T02:00:00+02:00"',
            [datetime(2026, 1, 1, tzinfo=UTC)],
        ),
        (
            'id = "123e4567-e89b-12d3-a456-426614174000"',
            [uuid.UUID("123e4567-e89b-12d3-a456-426614174000")],
        ),
    ],
)
def test_values_are_bound_parameters(text: str, values: list[Any] | None, dialect: Dialect) -> None:
    if values is None:  # "it''s" is two strings side by side: a syntax error
        refusal(text)
        return
    sql, params = compiled(text, dialect)
    assert flat_params(params) == values
    for value in values:
        if isinstance(value, str):
            assert value not in sql


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize(
    "text",
    [
        'display_name = "Robert\'); DROP TABLE users; --*"',
        "display_name : 'O\\'Brien; SELECT 1'",
        'display_name =~ "*zzq_%\\\\*"',
        'tags : "evil\' OR 1=1"',
        "tags : 4711",
    ],
)
def test_user_text_never_reaches_sql(text: str, dialect: Dialect) -> None:
    sql, params = compiled(text, dialect)
    for marker in ("DROP", "Brien", "zzq", "evil", "4711"):
        assert marker not in sql
    assert any(
        marker in str(value)
        for value in params.values()
        for marker in ("DROP", "Brien", "zzq", "evil", "4711")
    )


@pytest.mark.parametrize(
    ("text", "pattern", "glob"),
    [
        ('email = "Ann*"', "Ann%", "Ann*"),
        ('email = "*son"', "%son", "*son"),
        ('email = "*nn*"', "%nn%", "*nn*"),
        ('email = "a%b_c\\\\*"', "a\\%b\\_c\\\\%", "a%b_c\\*"),
        ('email = "x\\*y*"', "x*y%", "x[*]y*"),
        ('email = "q?[*"', "q?[%", "q[?][[]*"),
        ('email : "50%"', "%50\\%%", "*50%*"),
    ],
)
def test_wildcards_become_escaped_patterns(text: str, pattern: str, glob: str) -> None:
    sql, params = compiled(text, postgresql.dialect())
    assert "LIKE" in sql
    assert "ESCAPE" in sql
    assert list(params.values()) == [pattern]
    sql, params = compiled(text, sqlite.dialect())
    assert "GLOB" in sql
    assert list(params.values()) == [glob]


def test_not_equal_with_wildcard_is_not_like() -> None:
    sql, _ = compiled('email != "Ann*"', postgresql.dialect())
    assert "NOT" in sql
    assert "LIKE" in sql


def test_case_insensitive_match_lowers_both_sides() -> None:
    sql, params = compiled('email =~ "ANN*"', postgresql.dialect())
    assert "lower(users.email) LIKE lower(" in sql
    assert list(params.values()) == ["ANN%"]


def test_null_comparisons() -> None:
    assert compiled("email = null", postgresql.dialect())[0].strip() == "users.email IS NULL"
    assert "IS NOT NULL" in compiled("email != null", postgresql.dialect())[0]


def test_or_binds_tighter_than_and_as_in_aip_160() -> None:
    sql, _ = compiled("version = 1 AND version = 2 OR version = 3", postgresql.dialect())
    assert "AND (users.version = %(param_2)s::INTEGER OR" in sql


def test_negations_and_sequences() -> None:
    sql, _ = compiled(
        'NOT email = "a" -username = "b" (version = 1 OR version = 2)', postgresql.dialect()
    )
    assert sql.count("!=") == 2 or sql.count("NOT") == 2
    assert " AND " in sql


def test_json_membership_per_dialect() -> None:
    sql, params = compiled('tags : "x"', postgresql.dialect())
    assert "@>" in sql
    assert list(params.values()) == ['["x"]']
    sql, params = compiled("tags : true", sqlite.dialect())
    assert "json_each(" in sql
    # An array (its type checked) holding an element of JSON type true.
    assert list(params.values()) == ["array", "array", "true"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'foo = "x"',
            'unknown field "foo" at column 1; filterable fields: create_time, created_by, '
            "delete_time, display_name",
        ),
        ("email = 5", "expected a quoted string for email at column 9"),
        ('version = "5"', "expected an integer for version at column 11"),
        ("version = 1.5", "expected an integer for version"),
        ('is_active = "true"', "expected true or false for is_active"),
        ("is_active = 1", "expected true or false for is_active"),
        (
            'create_time > "2026-01-01"',
            'expected a timestamp like "2026-01-01T00:00:00Z" for create_time at column 15',
        ),
        ('create_time > "2026-01-01T00:00:00"', "expected a timestamp"),
        ('create_time > "2026-13-01T00:00:00Z"', "expected a timestamp"),
        ('create_time = "2026*"', "expected a timestamp"),
        ('id = "not-a-uuid"', "expected a UUID"),
        ("email = 1)", 'syntax error at column 10: unexpected ")"'),
        ("email =", "ends too early"),
        ("(email = 'a'", "ends too early"),
        ("email = foo", 'unexpected "foo"; expected a value'),
        ("email = 'abc", "unterminated string starting at column 9"),
        ('email = "abc', "unterminated string"),
        ("email == 'a'", "syntax error at column 8"),
        ("email ! 'a'", "syntax error at column 7"),
        ("AND", "syntax error at column 1"),
        ('email = "\\q"', "unknown escape \\q at column 10"),
        ("version : 1", ": only applies to string and array fields; version is a int"),
        ("is_active : true", ": only applies to string and array fields"),
        ("email : 1", "expected a quoted string for email"),
        ('email : "a*"', "wildcards only work with =, != and =~ (column 9)"),
        ('tags : "a*"', "wildcards only work with"),
        ('version =~ "1"', "=~ only applies to string fields; version is a int"),
        ("email =~ 1", "expected a quoted string"),
        ('version = "1*"', "expected an integer"),
        ('email < "a*"', "wildcards only work with = and !="),
        ("is_active < true", "< does not apply to bool field is_active"),
        ('id > "123e4567-e89b-12d3-a456-426614174000"', "does not apply to uuid field id"),
        ("email < null", "null can only be compared with = or !="),
        ("email IN (null)", "null is not allowed in IN"),
        ('email IN ("a*")', "wildcards are not allowed in IN"),
        ("email IN ()", "syntax error"),
        ('tags = "x"', "tags is an array"),
        ('tags IN ("x")', "IN does not apply to array field tags"),
        ("version = 99999999999", "out of range for version"),
        ("version > 1e400", "out of range"),
        ("email = 'a\x00'", "NUL character at column 11"),
        ("email = '\ud800'", "not valid Unicode"),
    ],
)
def test_refusals_say_what_and_where(text: str, expected: str) -> None:
    assert expected in refusal(text)


def test_wildcard_match_on_timestamp_is_refused() -> None:
    assert "create_time is a timestamp" in refusal('create_time : "2026"')


def test_in_list_is_limited() -> None:
    assert compile_filter("version IN (" + ", ".join(["1"] * 100) + ")", FIELDS) is not None
    assert "at most 100 values" in refusal("version IN (" + ", ".join(["1"] * 101) + ")")


def test_long_text_is_refused() -> None:
    text = " OR ".join(["version = 1"] * 200)
    assert len(text.encode()) > 2048
    assert refusal(text) == "filter is longer than 2048 bytes"
    # Bytes, not characters: 700 three-byte characters.
    assert refusal('email = "' + "€" * 700 + '"') == "filter is longer than 2048 bytes"


def test_nesting_is_limited() -> None:
    ok = "(" * 16 + "version = 1" + ")" * 16
    assert compile_filter(ok, FIELDS) is not None
    assert refusal("(" * 17 + "version = 1" + ")" * 17) == "nesting deeper than 16 levels"
    assert "deeper" in refusal("NOT (" * 9 + "version = 1" + ")" * 9)
    # Far deeper than Python's recursion limit, within the size limit.
    assert "deeper" in refusal("(" * 1000 + "version = 1" + ")" * 1000)
    assert refusal("(" * 1020).startswith("syntax error: the filter ends too early")


def test_keywords_are_upper_case() -> None:
    assert "syntax error" in refusal("version = 1 and version = 2")
    assert compile_filter("version = 1 AND version = 2", FIELDS) is not None


@given(st.text(max_size=300))
@settings(max_examples=500, deadline=None)
def test_any_text_compiles_or_is_refused_as_invalid_filter(text: str) -> None:
    result = outcome(text)
    if isinstance(result, InvalidArgument):
        assert result.reason == "INVALID_FILTER"
        assert [v.field for v in result.violations] == ["filter"]
        assert result.violations[0].description
    else:
        assert result is None or isinstance(result, ColumnElement)


_atoms = st.sampled_from(
    [
        'email = "a*"',
        "version > 2",
        "is_active = true",
        "tags : 1",
        'id = "x"',
        "x = 1",
        "(",
        ")",
        "NOT",
        "-",
        "AND",
        "OR",
        "IN",
        '"',
        "'",
        "\\",
        "=~",
        ":",
        "email",
        "null",
        "1e5",
        ",",
        " ",
    ]
)


@given(st.lists(_atoms, max_size=40).map(" ".join))
@settings(max_examples=500, deadline=None)
def test_token_soup_compiles_or_is_refused_as_invalid_filter(text: str) -> None:
    result = outcome(text)
    if isinstance(result, InvalidArgument):
        assert result.reason == "INVALID_FILTER"
        assert [v.field for v in result.violations] == ["filter"]


def test_timestamps_finer_than_microseconds_are_refused_not_truncated() -> None:
    with pytest.raises(InvalidArgument) as err:
        compile_filter('create_time > "2026-01-01T00:00:00.000000001Z"', FIELDS)
    assert err.value.reason == "INVALID_FILTER"
    # Zeros past the microseconds lose nothing.
    assert compile_filter('create_time > "2026-01-01T00:00:00.123456000Z"', FIELDS) is not None


def test_filters_remember_what_they_compiled_and_refuse_bad_text_every_time() -> None:
    filters = Filters(FIELDS, remember=2)
    first = filters.compile('username = "a"')
    assert filters.compile('username = "a"') is first
    assert filters.compile("") is None
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            filters.compile("username = ")
    # The remembered condition is the one compile_filter builds.
    assert first is not None
    stmt = select(users.c.id).where(first).compile(dialect=postgresql.dialect())
    assert (str(stmt).split("WHERE", 1)[1], dict(stmt.params)) == compiled(
        'username = "a"', postgresql.dialect()
    )


def test_a_number_too_large_for_a_double_is_refused_for_a_float_field() -> None:
    from repositories.sessions import SESSION

    with pytest.raises(InvalidArgument) as err:
        compile_filter("total_cost_usd > 1" + "0" * 400, SESSION.filter_fields())
    assert err.value.violations[0].description == "the number at column 18 is out of range"
    assert compile_filter("total_cost_usd > 1" + "0" * 300, SESSION.filter_fields()) is not None

"""order_by parsing and keyset positions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.dialects import postgresql

from repositories.errors import InvalidArgument
from repositories.ordering import parse_order_by, position_from, position_of
from repositories.users import USER

pytestmark = pytest.mark.unit

SORTABLE = USER.sort_columns()


def names(text: str) -> list[tuple[str, bool]]:
    return [(k.name, k.descending) for k in parse_order_by(text, SORTABLE, "create_time")]


def test_default_order_ends_with_id() -> None:
    assert names("") == [("create_time", False), ("id", False)]


def test_directions_and_spacing() -> None:
    assert names("  display_name DESC ,create_time  ") == [
        ("display_name", True),
        ("create_time", False),
        ("id", False),
    ]


def test_an_explicit_id_is_not_repeated() -> None:
    assert names("id desc") == [("id", True)]
    assert names("id, email") == [("id", False), ("email", False)]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("is_active", "cannot sort by 'is_active'"),
        ("nope desc", "cannot sort by 'nope'"),
        ("email sideways", "is not 'field' or 'field desc'"),
        ("email,", "is not 'field' or 'field desc'"),
        ("email, email desc", "appears twice"),
        ("email; drop table users", "is not 'field' or 'field desc'"),
        ("x" * 600, "longer than"),
    ],
)
def test_bad_order_by(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_order_by(text, SORTABLE, "create_time")
    assert err.value.reason == "INVALID_ORDER_BY"
    assert [v.field for v in err.value.violations] == ["order_by"]
    assert fragment in err.value.violations[0].description


def test_position_round_trip() -> None:
    order = parse_order_by("display_name desc, create_time", SORTABLE, "create_time")
    row = {
        "display_name": "Ann",
        "create_time": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "id": uuid.uuid4(),
    }
    position = position_of(order, row)
    assert position == ["Ann", row["create_time"].isoformat(), str(row["id"])]
    assert position_from(order, position) == [row["display_name"], row["create_time"], row["id"]]


@pytest.mark.parametrize(
    "position",
    [["Ann"], "Ann", [1, "2026-01-01T00:00:00+00:00", str(uuid.uuid4())], ["Ann", "x", "y"]],
)
def test_position_from_rejects_what_does_not_fit(position: object) -> None:
    order = parse_order_by("display_name, create_time", SORTABLE, "create_time")
    with pytest.raises((TypeError, ValueError)):
        position_from(order, position)


def test_keyset_clause_follows_each_direction() -> None:
    from repositories.ordering import after

    order = parse_order_by("display_name desc", SORTABLE, "create_time")
    sql = str(after(order, ["Ann", uuid.uuid4()]).compile(dialect=postgresql.dialect()))
    assert "users.display_name < " in sql
    assert "users.display_name = " in sql
    assert "users.id > " in sql
    assert "Ann" not in sql


def test_a_nullable_key_sorts_null_last_ascending_and_first_descending() -> None:
    from sqlalchemy.dialects import sqlite

    for dialect in (postgresql.dialect(), sqlite.dialect()):
        up = parse_order_by("last_login_time", SORTABLE, "create_time")
        down = parse_order_by("last_login_time desc, email", SORTABLE, "create_time")
        assert [str(k.clause().compile(dialect=dialect)) for k in up] == [
            "users.last_login_time ASC NULLS LAST",
            "users.id ASC",
        ]
        assert [str(k.clause().compile(dialect=dialect)) for k in down] == [
            "users.last_login_time DESC NULLS FIRST",
            "users.email ASC",
            "users.id ASC",
        ]


def test_a_position_may_hold_null_only_in_a_nullable_key() -> None:
    order = parse_order_by("last_login_time, display_name", SORTABLE, "create_time")
    row = {"last_login_time": None, "display_name": "Ann", "id": uuid.uuid4()}
    position = position_of(order, row)
    assert position == [None, "Ann", str(row["id"])]
    assert position_from(order, position) == [None, "Ann", row["id"]]
    with pytest.raises(ValueError, match="display_name: null"):
        position_from(order, ["2026-01-01T00:00:00+00:00", None, str(row["id"])])


@pytest.mark.parametrize(
    ("text", "position", "fragments", "absent"),
    [
        # Ascending past a time: later times, then every NULL.
        (
            "last_login_time",
            ["2026-01-01T00:00:00+00:00"],
            ["users.last_login_time > ", "users.last_login_time IS NULL"],
            ["users.last_login_time >= "],
        ),
        # Ascending past NULL: only other NULLs, by id; bounded to the NULLs.
        (
            "last_login_time",
            [None],
            ["users.last_login_time IS NULL AND users.id > "],
            ["users.last_login_time > ", "IS NOT NULL"],
        ),
        # Descending past NULL: the other NULLs by id, then every time.
        (
            "last_login_time desc",
            [None],
            ["users.last_login_time IS NOT NULL", "users.last_login_time IS NULL AND users.id > "],
            ["<="],
        ),
        # Descending past a time: earlier times only (the NULLs came first).
        (
            "last_login_time desc",
            ["2026-01-01T00:00:00+00:00"],
            ["users.last_login_time <= ", "users.last_login_time < "],
            ["IS NULL"],
        ),
    ],
)
def test_keyset_clause_puts_null_after_every_value(
    text: str, position: list[object], fragments: list[str], absent: list[str]
) -> None:
    from repositories.ordering import after

    order = parse_order_by(text, SORTABLE, "create_time")
    values = position_from(order, [*position, str(uuid.uuid4())])
    sql = str(after(order, values).compile(dialect=postgresql.dialect()))
    for fragment in fragments:
        assert fragment in sql, sql
    for fragment in absent:
        assert fragment not in sql, sql

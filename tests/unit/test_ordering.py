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

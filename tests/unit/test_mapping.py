"""Rows to User messages, update masks, etags."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from repogate.v1 import user_pb2
from repositories.errors import InvalidArgument
from server.mapping import MessageMapping, parse_etag, timestamp
from tests.unit.support import assert_invalid

pytestmark = pytest.mark.unit

UPDATABLE = {"email", "username", "display_name", "is_active"}
ID = uuid.UUID("0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11")
CREATED = datetime(2031, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)
UPDATED = datetime(2031, 6, 1, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.fixture
def mapping() -> MessageMapping[user_pb2.User]:
    return MessageMapping(user_pb2.User, updatable=UPDATABLE)


def _row(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "id": ID,
        "email": "ann@example.com",
        "username": "ann",
        "display_name": "Ann",
        "is_active": True,
        "version": 7,
        "create_time": CREATED,
        "update_time": UPDATED,
        "delete_time": None,
        "purge_time": None,
        "created_by": "svc-a",
        "updated_by": None,
        "last_login_time": None,
        **overrides,
    }


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_to_message(mapping: MessageMapping[user_pb2.User]) -> None:
    message = mapping.to_message(_row())

    assert message.id == str(ID)
    assert message.email == "ann@example.com"
    assert message.username == "ann"
    assert message.display_name == "Ann"
    assert message.HasField("is_active")
    assert message.is_active is True
    assert message.etag == "7"
    assert message.create_time.ToDatetime(tzinfo=UTC) == CREATED
    assert message.update_time.ToDatetime(tzinfo=UTC) == UPDATED
    assert message.create_time.nanos == 123456000
    assert not message.HasField("delete_time")
    assert not message.HasField("purge_time")
    assert (message.created_by, message.updated_by) == ("svc-a", "")


def test_to_message_of_a_soft_deleted_row(mapping: MessageMapping[user_pb2.User]) -> None:
    message = mapping.to_message(_row(delete_time=UPDATED, purge_time=UPDATED + timedelta(days=1)))
    assert message.delete_time.ToDatetime(tzinfo=UTC) == UPDATED
    assert message.purge_time.ToDatetime(tzinfo=UTC) == UPDATED + timedelta(days=1)


def test_to_message_keeps_false_is_active_present(mapping: MessageMapping[user_pb2.User]) -> None:
    message = mapping.to_message(_row(is_active=False))
    assert message.HasField("is_active")
    assert message.is_active is False


def test_to_message_converts_other_offsets_to_the_same_instant(
    mapping: MessageMapping[user_pb2.User],
) -> None:
    shifted = CREATED.astimezone(timezone(timedelta(hours=-7)))
    message = mapping.to_message(_row(create_time=shifted))
    assert message.create_time.ToDatetime(tzinfo=UTC) == CREATED


def test_to_message_leaves_missing_timestamps_unset(
    mapping: MessageMapping[user_pb2.User],
) -> None:
    message = mapping.to_message(_row(update_time=None))
    assert not message.HasField("update_time")
    assert message.HasField("create_time")


def test_to_message_ignores_columns_the_message_lacks(
    mapping: MessageMapping[user_pb2.User],
) -> None:
    message = mapping.to_message(_row(tenant_id="secret-tenant"))
    assert "secret-tenant" not in str(message)


def test_explicit_mask(mapping: MessageMapping[user_pb2.User]) -> None:
    message = user_pb2.User(email="new@example.com")
    assert mapping.mask_paths(message, _mask("email")) == ["email"]
    # Named fields are updated even when the message leaves them at their default.
    assert mapping.mask_paths(message, _mask("display_name", "is_active")) == [
        "display_name",
        "is_active",
    ]


def test_star_mask_means_every_updatable_field(mapping: MessageMapping[user_pb2.User]) -> None:
    assert mapping.mask_paths(user_pb2.User(), _mask("*")) == sorted(UPDATABLE)


@pytest.mark.parametrize("mask", [None, field_mask_pb2.FieldMask()], ids=["absent", "empty"])
def test_omitted_mask_means_populated_fields(
    mapping: MessageMapping[user_pb2.User], mask: field_mask_pb2.FieldMask | None
) -> None:
    message = user_pb2.User(
        id=str(ID), etag="3", display_name="Ann", is_active=False, create_time=CREATED
    )
    # Output-only fields never count; an explicitly set optional false does.
    assert sorted(mapping.mask_paths(message, mask)) == ["display_name", "is_active"]
    assert mapping.mask_paths(user_pb2.User(display_name="x"), mask) == ["display_name"]
    assert mapping.mask_paths(user_pb2.User(), mask) == []
    # A proto3 scalar at its default is indistinguishable from unset.
    assert mapping.mask_paths(user_pb2.User(email=""), mask) == []


@pytest.mark.parametrize(
    "paths",
    [
        ("id",),
        ("etag",),
        ("create_time",),
        ("nope",),
        ("email", "tenant_id"),
        ("*", "email"),
        ("Email",),
        ("",),
    ],
)
def test_mask_with_a_path_that_is_not_updatable(
    mapping: MessageMapping[user_pb2.User], paths: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidArgument) as err:
        mapping.mask_paths(user_pb2.User(email="a@b.co"), _mask(*paths))
    assert_invalid(err.value, "update_mask")


def test_to_values(mapping: MessageMapping[user_pb2.User]) -> None:
    message = user_pb2.User(email="a@b.co", display_name="", is_active=False)
    assert mapping.to_values(message, ["email", "display_name", "is_active"]) == {
        "email": "a@b.co",
        "display_name": "",
        "is_active": False,
    }


def test_mapping_refuses_unknown_updatable_fields() -> None:
    with pytest.raises(ValueError, match="nickname"):
        MessageMapping(user_pb2.User, updatable={"email", "nickname"})


@pytest.mark.parametrize(("etag", "version"), [("", None), ("1", 1), ("42", 42), ("007", 7)])
def test_parse_etag(etag: str, version: int | None) -> None:
    assert parse_etag(etag, "user.etag") == version


def test_parse_etag_round_trips_what_to_message_issues(
    mapping: MessageMapping[user_pb2.User],
) -> None:
    for version in (1, 9, 10, 123456):
        assert parse_etag(mapping.to_message(_row(version=version)).etag, "etag") == version


@pytest.mark.parametrize(
    "etag",
    [
        "abc",
        "-1",
        "+1",
        "1.0",
        " 1",
        "1 ",
        "0x1",
        "1_000",
        "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "\u0661\u0662",  # Arabic-Indic digits: int() would accept them
        "\uff15",  # fullwidth digit five
        "9" * 19,
        'W/"1"',
    ],
)
def test_parse_etag_rejects_what_the_server_never_issues(etag: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_etag(etag, "user.etag")
    assert_invalid(err.value, "user.etag")


def test_parse_etag_stays_within_the_32_bit_version_column() -> None:
    assert parse_etag("2147483647", "etag") == 2**31 - 1
    for etag in ("2147483648", "99999999999"):
        with pytest.raises(InvalidArgument) as err:
            parse_etag(etag, "etag")
        assert_invalid(err.value, "etag")


@given(
    st.datetimes(
        # A day inside Timestamp's range, so that no UTC offset leaves it.
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30, 23, 59, 59, 999999),
        timezones=st.one_of(st.none(), st.just(UTC), st.timezones()),
    )
)
def test_timestamp_agrees_with_from_datetime(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected


def test_a_mapping_refuses_a_message_field_it_cannot_read() -> None:
    # google.protobuf.Value's list_value is a ListValue: no column type maps to it.
    with pytest.raises(ValueError, match="list_value"):
        MessageMapping(struct_pb2.Value, updatable=())

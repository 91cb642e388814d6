"""Answers built before commit: framed as protobuf frames them, and bounded where rows are."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from google.protobuf.descriptor import FieldDescriptor

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2
from repositories.tables import jobs, messages, sessions, users
from server.answers import (
    ROOM_PER_ITEM,
    Answers,
    Encoded,
    ResponseTooLarge,
    holder_field,
    largest_message,
)

pytestmark = pytest.mark.unit

# Every response a write answers with that holds its rows.
HOLDERS = [
    getattr(module, f"Batch{verb}{plural}Response")
    for module, plural, verbs in (
        (user_pb2, "Users", ("Create", "Update", "Delete")),
        (session_pb2, "Sessions", ("Create", "Update", "Delete")),
        (message_pb2, "Messages", ("Append", "Update", "Delete")),
        (job_pb2, "Jobs", ("Create", "Update", "Delete")),
    )
    for verb in verbs
] + [job_pb2.ClaimNextJobResponse]


def users_named(*names: str) -> list[user_pb2.User]:
    return [user_pb2.User(id=str(uuid.uuid4()), username=name, etag="1") for name in names]


@pytest.mark.parametrize("response", HOLDERS, ids=lambda cls: cls.__name__)
def test_every_holding_response_has_one_field_of_its_resource(response: type) -> None:
    (field,) = response.DESCRIPTOR.fields
    assert field.type == FieldDescriptor.TYPE_MESSAGE
    assert holder_field(response) == field.number


@pytest.mark.parametrize("count", [0, 1, 2, 200])
def test_a_held_answer_is_the_bytes_protobuf_gives_the_response(count: int) -> None:
    # 200 names of up to 3 digits, and a long one: lengths take one and two varint bytes.
    found = users_named(*(str(i) for i in range(count - 1)), "x" * 300)[-count:] if count else []
    items = [user.SerializeToString() for user in found]

    answer = Answers(1 << 20).holding(items, user_pb2.BatchCreateUsersResponse)

    expected = user_pb2.BatchCreateUsersResponse(users=found).SerializeToString()
    assert answer == Encoded(expected)
    assert user_pb2.BatchCreateUsersResponse.FromString(answer.data).users == found


def test_one_optional_message_is_framed_as_a_field_too() -> None:
    job = job_pb2.Job(id=str(uuid.uuid4()), job_type="render")

    answer = Answers(1 << 20).holding([job.SerializeToString()], job_pb2.ClaimNextJobResponse)

    assert job_pb2.ClaimNextJobResponse.FromString(answer.data).job == job


def test_an_answer_at_the_limit_is_sent_and_one_byte_more_is_refused() -> None:
    (user,) = users_named("ann")
    item = user.SerializeToString()

    assert Answers(len(item)).one(item).data == item
    with pytest.raises(ResponseTooLarge) as refused:
        Answers(len(item) - 1).one(item)
    assert refused.value.metadata == {"size": str(len(item)), "limit": str(len(item) - 1)}


def test_the_advice_names_how_many_items_fit() -> None:
    items = [user.SerializeToString() for user in users_named(*(f"u{i:03}" for i in range(100)))]
    framed = len(items[0]) + 2
    # The advice keeps room per item for values that differ from call to call.
    answers = Answers(10 * (framed + ROOM_PER_ITEM))

    with pytest.raises(ResponseTooLarge) as refused:
        answers.holding(items, user_pb2.BatchCreateUsersResponse)

    assert "about 10 of these fit" in refused.value.message
    assert answers.holding(items[:10], user_pb2.BatchCreateUsersResponse).data


@pytest.mark.parametrize("table", [sessions, messages, jobs], ids=lambda t: t.name)
def test_tables_holding_json_documents_have_no_bound(table: object) -> None:
    assert largest_message(table) is None  # type: ignore[arg-type]


def test_the_largest_user_there_can_be_fits_the_bound() -> None:
    # Four bytes of UTF-8 a character, every string at its column's length.
    wide = "\U0001f600"
    latest = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    user = user_pb2.User(
        id=str(uuid.uuid4()),
        email=wide * 254,
        username=wide * 64,
        display_name=wide * 256,
        is_active=True,
        etag=str(2**31 - 1),
        created_by=wide * 256,
        updated_by=wide * 256,
    )
    for field in ("create_time", "update_time", "delete_time", "purge_time", "last_login_time"):
        getattr(user, field).FromDatetime(latest)
    bound = largest_message(users)

    assert bound is not None
    assert user.ByteSize() <= bound
    assert Answers(bound).always_fit(users)
    assert not Answers(bound - 1).always_fit(users)

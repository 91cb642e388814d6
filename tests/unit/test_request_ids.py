"""What makes two requests the same request, and how responses are kept for replay."""

from __future__ import annotations

import pytest

from repogate.v1 import user_pb2
from repositories.request_log import pack, unpack
from server.request_ids import request_digest

pytestmark = pytest.mark.unit


def _create(request_id: str = "", **user: str) -> user_pb2.CreateUserRequest:
    return user_pb2.CreateUserRequest(user=user_pb2.User(**user), request_id=request_id)


def test_the_request_id_itself_does_not_count() -> None:
    assert request_digest(_create("a", email="x@example.com")) == request_digest(
        _create("b", email="x@example.com")
    )


def test_any_other_difference_counts() -> None:
    base = request_digest(_create(email="x@example.com", username="x"))
    assert base != request_digest(_create(email="x@example.com", username="y"))
    assert base != request_digest(_create(email="x@example.com"))


def test_the_digest_leaves_the_request_untouched() -> None:
    request = _create("keep-me", email="x@example.com")
    request_digest(request)
    assert request.request_id == "keep-me"


@pytest.mark.parametrize("count", [0, 1, 3])
def test_packed_messages_come_back_in_order(count: int) -> None:
    users = [user_pb2.User(id=str(i), display_name="é" * i) for i in range(count)]
    # An empty message serializes to no bytes at all; it must survive too.
    users.append(user_pb2.User())
    raw = unpack(pack([user.SerializeToString() for user in users]))
    assert [user_pb2.User.FromString(item) for item in raw] == users


def test_batch_items_request_ids_do_not_count() -> None:
    def batch(item_id: str) -> user_pb2.BatchCreateUsersRequest:
        return user_pb2.BatchCreateUsersRequest(
            requests=[_create(item_id, email="x@example.com")], request_id="outer"
        )

    assert request_digest(batch("one")) == request_digest(batch("two"))

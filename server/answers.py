"""Answers known before their call commits.

gRPC refuses to send a response larger than REPOGATE_MAX_MESSAGE_BYTES, and finds
out only once the handler has returned: for a write, after COMMIT, so the client
heard RESOURCE_EXHAUSTED about rows that were written. Writes therefore build
their answer inside their unit of work: mapped, serialized and measured there, and
refused (RESOURCE_EXHAUSTED `RESPONSE_TOO_LARGE`) before anything commits.

The serialized bytes are what gRPC sends: the request interceptor's serializer
passes an `Encoded` answer through, so each response is still serialized once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from sqlalchemy import JSON, LargeBinary, String, Table, Text

from repositories.errors import ResourceExhausted
from server import wire

R = TypeVar("R", bound=Message)

# Room an answer keeps for a google.protobuf.Timestamp field set after COMMIT (Transact's
# commit_time): tag, length, seconds and nanos as varints.
TIMESTAMP_FIELD_MAX = 2 + 11 + 6


@dataclass(frozen=True, slots=True)
class Encoded(Generic[R]):
    """A response of type R, already serialized: gRPC sends `data` as it is."""

    data: bytes


# Bytes of room per item in the advice on how many items fit (ResponseTooLarge).
ROOM_PER_ITEM = 8


class ResponseTooLarge(ResourceExhausted):
    """The answer would be larger than the server sends; nothing was written."""

    reason = "RESPONSE_TOO_LARGE"

    def __init__(self, size: int, limit: int, items: int, largest: int, noun: str) -> None:
        if items > 1:
            # Room for what differs between this call's rows and the next call's: a
            # timestamp's nanoseconds take 1 to 5 bytes, and the split's calls write at
            # other times. Without it, a split as advised could be a few bytes too large.
            fit = max(1, limit // (largest + ROOM_PER_ITEM))
            advice = f"send fewer {noun} per call: about {fit} of these fit"
        else:
            advice = "it holds more than this server returns in one response"
        super().__init__(
            f"the response would be {size} bytes, more than the {limit} this server sends; "
            f"nothing was written: {advice}",
            metadata={"size": str(size), "limit": str(limit)},
        )


class Answers:
    """Builds the answers of writes, and refuses those gRPC could not send."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def check(self, size: int, parts: Sequence[int] = (), noun: str = "items") -> None:
        """ResponseTooLarge unless an answer of `size` bytes can be sent; `parts`: the
        sizes of the items it holds, for the advice on how many fit."""
        if size > self.limit:
            raise ResponseTooLarge(size, self.limit, len(parts), max(parts, default=size), noun)

    def one(self, item: bytes) -> Encoded[Any]:
        """The answer that is the one message serialized as `item`."""
        self.check(len(item))
        return Encoded(item)

    def holding(self, items: Sequence[bytes], response: type[R]) -> Encoded[R]:
        """The answer of type `response` whose one field holds the messages serialized as
        `items` (a batch's repeated field, or one optional message)."""
        number = holder_field(response)
        framed = [wire.field(number, item) for item in items]
        data = b"".join(framed)
        self.check(len(data), [len(item) for item in framed])
        return Encoded(data)

    def always_fit(self, table: Table) -> bool:
        """Whether every row of `table` maps to a message this server can send, so a write
        of one row may commit before its answer is built (autocommit)."""
        largest = largest_message(table)
        return largest is not None and largest <= self.limit


def holder_field(response: type[Message]) -> int:
    """The number of the one field of `response` (a batch response's items)."""
    number = _holder_fields.get(response)
    if number is None:
        fields = response.DESCRIPTOR.fields
        if len(fields) != 1 or fields[0].message_type is None:
            raise TypeError(f"{response.__name__} must have one field, of messages")
        number = _holder_fields[response] = fields[0].number
    return number


_holder_fields: dict[type[Message], int] = {}


# What a column's value can take in a message: tag and length or varint, with room.
_STRING_OVERHEAD = 8
_SCALAR_MAX = 64
_UNBOUNDED = (JSON, Text, LargeBinary)


@cache
def largest_message(table: Table) -> int | None:
    """An upper bound on the serialized size of a message mapped from a row of `table`
    (fields map to its columns, plus an etag), or None when a column is unbounded (JSON
    documents, text without a length)."""
    total = _SCALAR_MAX  # the etag
    for column in table.columns:
        kind = column.type
        if isinstance(kind, _UNBOUNDED):
            return None
        if not isinstance(kind, String):
            total += _SCALAR_MAX
        elif kind.length:
            total += 4 * kind.length + _STRING_OVERHEAD  # UTF-8: 4 bytes a character at most
        else:
            return None
    return total


def passing(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    """A response serializer for gRPC that sends an Encoded answer's bytes as they are
    and serializes any other response with `serialize`."""

    def run(response: Any) -> bytes:
        if type(response) is Encoded:
            return response.data
        return serialize(response) if serialize is not None else response

    return run

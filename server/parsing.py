"""Requests whose bytes do not parse: refused as INVALID_ARGUMENT, not left to grpc.aio.

grpc.aio deserializes a request before any interceptor's behaviour runs, and
answers a deserializer that raises with UNKNOWN "Unexpected DecodeError", a logged
traceback, and no call for any interceptor to count. `tolerant` wraps a deserializer
so that it returns an `Unparsable` instead; the request interceptor refuses that with
reason MALFORMED_REQUEST, as it refuses any other bad request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from repositories.errors import FieldViolation, InvalidArgument
from server.validation import MAX_JSON_DEPTH
from server.wrapping import Deserializer

REASON = "MALFORMED_REQUEST"
# protobuf refuses to parse messages nested deeper than this (upb's default, which
# Python cannot raise short of 65535); C++ and Java clients have the same limit.
PROTOBUF_DEPTH_LIMIT = 100
# What upb's DecodeError says, in words of our own; anything else is the fallback.
_PROBLEMS = (
    ("UTF-8", "a string field is not valid UTF-8"),
    (
        "MaxDepth",
        f"messages nest deeper than protobuf's limit of {PROTOBUF_DEPTH_LIMIT} "
        f"(a JSON document may nest {MAX_JSON_DEPTH} levels)",
    ),
)
_FALLBACK = "the bytes are not in this message's wire format"


@dataclass(frozen=True, slots=True)
class Unparsable:
    """Stands in for a request that did not parse, so that the call reaches the
    interceptors that answer, count and log it."""

    message_type: str
    problem: str

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request is not a valid {self.message_type}: {self.problem}",
            reason=REASON,
            metadata={"message_type": self.message_type},
        )


def tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    """`deserializer`, returning an Unparsable where it would raise DecodeError."""
    if deserializer is None:
        return None
    message_type = _message_type(deserializer)

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return Unparsable(message_type, problem(exc))

    return parse


def unpack(packed: Any, message: Message, field: str) -> None:
    """Unpacks the Any `packed` into `message`; INVALID_ARGUMENT naming `field` when it
    holds another type or bytes that do not parse."""
    expected = message.DESCRIPTOR.full_name
    try:
        unpacked = packed.Unpack(message)
    except DecodeError as exc:
        description = f"is not a valid {expected}: {problem(exc)}"
        raise InvalidArgument(
            f"invalid {field}: {description}", [FieldViolation(field, description)], reason=REASON
        ) from None
    if not unpacked:
        raise InvalidArgument.field(field, f"must be a {expected}")


def problem(error: DecodeError) -> str:
    text = str(error)
    return next((words for marker, words in _PROBLEMS if marker in text), _FALLBACK)


def _message_type(deserializer: Deserializer) -> str:
    # Generated handlers deserialize with the request class's FromString.
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "the request message"))

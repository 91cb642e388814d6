"""What an error echoes is bounded, however much the client sent."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from google.rpc import error_details_pb2, status_pb2

from repositories import errors as e
from server.errors import DETAILS_KEY, Status, clip, to_status

pytestmark = pytest.mark.unit

HUGE = "\U0001f600" * 10_000  # four bytes of UTF-8 each: the worst case


def wire_bytes(status: Status) -> int:
    """The trailers' size as sent: binary values in base64, grpc-message percent-encoded."""
    total = len("grpc-message") + len(quote(status.details.encode(), safe=" "))
    for key, value in status.trailing_metadata:
        raw = value if isinstance(value, bytes) else value.encode()
        total += len(key) + len(base64.b64encode(raw) if key.endswith("-bin") else raw)
    return total


def decoded(status: Status) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo, list[str]]:
    proto = status_pb2.Status.FromString(dict(status.trailing_metadata)[DETAILS_KEY])
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    proto.details[0].Unpack(info)
    fields = [v.field for v in bad.field_violations] if proto.details[1].Unpack(bad) else []
    return proto, info, fields


def test_the_worst_error_stays_well_under_the_8_kib_metadata_limit() -> None:
    error = e.InvalidArgument(
        HUGE,
        [e.FieldViolation(f"{i}{HUGE}", HUGE) for i in range(1000)],
        metadata={f"key{i}": HUGE for i in range(5)},
    )

    status = to_status(error, HUGE)

    assert wire_bytes(status) < 5 * 1024
    proto, info, fields = decoded(status)
    assert proto.message == status.details
    assert proto.message.endswith("…")
    assert info.metadata["request_id"].endswith("…")
    assert int(info.metadata["omitted_violations"]) == 1000 - len(fields)
    # The first violations are kept, in order.
    assert [int(field[: field.index(HUGE[0])]) for field in fields] == list(range(len(fields)))
    assert fields


def test_a_few_violations_are_all_kept() -> None:
    violations = [e.FieldViolation(f"user.f{i}", "must be set") for i in range(5)]

    _, info, fields = decoded(to_status(e.InvalidArgument("bad", violations), "req-1"))

    assert fields == [f"user.f{i}" for i in range(5)]
    assert "omitted_violations" not in info.metadata


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("eleven chars", 10, "eleven …"),
        # Never half a character: é is two bytes, and the ellipsis three.
        ("ééééé", 8, "éé…"),
    ],
)
def test_clip_cuts_at_a_character_boundary(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected
    assert len(clip(text, limit).encode()) <= limit

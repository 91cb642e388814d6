"""The access line is built as text: it must be exactly what json.dumps of its fields gives."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server import access
from server.access import line
from server.context import from_metadata

pytestmark = pytest.mark.unit

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
METHOD = "/repogate.v1.UserService/GetUser"


def _expected(text: str, fields: dict[str, object]) -> str:
    """json.dumps of `fields`, with the time the line carries."""
    return json.dumps({"time": json.loads(text)["time"], **fields})


@given(
    tenant=st.one_of(st.none(), st.text()),
    transaction=st.one_of(st.none(), st.text()),
    seconds=st.floats(min_value=0, max_value=1e6),
)
def test_a_line_is_json_dumps_of_its_fields(
    tenant: str | None, transaction: str | None, seconds: float
) -> None:
    metadata = [("x-request-id", "req-1")]
    if tenant is not None:
        metadata.append(("x-tenant-id", tenant))
    if transaction is not None:
        metadata.append(("x-transaction-id", transaction))
    rc = from_metadata(metadata)

    text = line(METHOD, rc, grpc.StatusCode.NOT_FOUND, seconds)

    fields = {
        "level": "INFO",
        "logger": "repogate.access",
        "method": METHOD,
        "code": "NOT_FOUND",
        "duration_ms": round(seconds * 1000, 3),
        "tenant": tenant,
        "request_id": "req-1",
        "transaction_id": transaction,
    }
    assert text == _expected(text, {k: v for k, v in fields.items() if v is not None})


def test_a_line_carries_the_trace_id_of_a_valid_traceparent_only() -> None:
    valid = from_metadata([("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01")])
    invalid = from_metadata([("traceparent", "garbage")])

    assert json.loads(line(METHOD, valid, grpc.StatusCode.OK, 0.1))["trace_id"] == TRACE
    assert "trace_id" not in json.loads(line(METHOD, invalid, grpc.StatusCode.OK, 0.1))


def test_a_lines_time_is_now_in_utc_to_the_millisecond() -> None:
    before = datetime.now(UTC)
    text = line(METHOD, from_metadata([]), grpc.StatusCode.OK, 0.1)
    after = datetime.now(UTC)

    stamp = json.loads(text)["time"]
    moment = datetime.fromisoformat(stamp)
    assert stamp.endswith("+00:00")
    assert len(stamp) == len("2026-11-23T18:32:00.618+00:00")
    assert before - timedelta(milliseconds=1) <= moment <= after


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    access.configure(False)


def test_record_writes_one_line_per_call_while_on(stream: io.StringIO) -> None:
    rc = from_metadata([("x-tenant-id", "acme")])

    access.configure(True, stream)
    access.record(METHOD, rc, grpc.StatusCode.OK, 0.002)
    access.record(METHOD, rc, grpc.StatusCode.NOT_FOUND, 0.003)
    access.configure(False)
    access.record(METHOD, rc, grpc.StatusCode.OK, 0.004)

    codes = [json.loads(text)["code"] for text in stream.getvalue().splitlines()]
    assert codes == ["OK", "NOT_FOUND"]


async def test_in_an_event_loop_lines_are_written_together_once_a_timer_fires(
    stream: io.StringIO,
) -> None:
    rc = from_metadata([("x-tenant-id", "acme")])
    access.configure(True, stream)

    access.record(METHOD, rc, grpc.StatusCode.OK, 0.002)
    access.record(METHOD, rc, grpc.StatusCode.NOT_FOUND, 0.003)
    written_at_once = stream.getvalue()
    await asyncio.sleep(0)
    written_after_a_turn = stream.getvalue()
    await asyncio.sleep(access.FLUSH_AFTER * 2)

    assert written_at_once == written_after_a_turn == ""
    codes = [json.loads(text)["code"] for text in stream.getvalue().splitlines()]
    assert codes == ["OK", "NOT_FOUND"]


async def test_lines_past_the_limit_are_written_without_waiting(stream: io.StringIO) -> None:
    rc = from_metadata([])
    access.configure(True, stream)

    for _ in range(access.FLUSH_LINES - 1):
        access.record(METHOD, rc, grpc.StatusCode.OK, 0.001)
    waiting = stream.getvalue()
    access.record(METHOD, rc, grpc.StatusCode.OK, 0.001)

    assert waiting == ""
    assert len(stream.getvalue().splitlines()) == access.FLUSH_LINES


async def test_flush_writes_what_the_loop_has_not_yet(stream: io.StringIO) -> None:
    access.configure(True, stream)

    access.record(METHOD, from_metadata([]), grpc.StatusCode.OK, 0.002)
    access.flush()

    assert json.loads(stream.getvalue())["code"] == "OK"


def test_a_closed_stream_loses_the_line_not_the_call(stream: io.StringIO) -> None:
    access.configure(True, stream)
    stream.close()

    access.record(METHOD, from_metadata([]), grpc.StatusCode.OK, 0.002)

    assert stream.closed


def test_a_loop_closed_before_its_flush_does_not_hold_lines_back(stream: io.StringIO) -> None:
    access.configure(True, stream)
    rc = from_metadata([])

    def record() -> None:
        access.record(METHOD, rc, grpc.StatusCode.OK, 0.001)

    async def ends_a_call() -> None:
        record()

    async def ends_a_call_as_the_loop_stops() -> None:
        # Runs in the loop's last turn: the flush it schedules never runs.
        asyncio.get_running_loop().call_soon(record)

    first = asyncio.new_event_loop()
    first.run_until_complete(ends_a_call_as_the_loop_stops())
    first.close()
    assert stream.getvalue() == ""
    second = asyncio.new_event_loop()
    second.run_until_complete(ends_a_call())
    second.run_until_complete(asyncio.sleep(access.FLUSH_AFTER * 2))
    second.close()

    assert len(stream.getvalue().splitlines()) == 2

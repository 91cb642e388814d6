"""The server's own log lines: JSON, with the ids of the call and span they were
logged in."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from server import context, logs

pytestmark = pytest.mark.unit

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("repogate.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)


def test_a_line_outside_a_call_has_no_call_ids(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured

    logger.warning('a "quoted" %s', "message\nover two lines")

    (text,) = stream.getvalue().splitlines()
    line = json.loads(text)
    assert set(line) == {"time", "level", "logger", "message"}
    assert (line["level"], line["logger"]) == ("WARNING", "repogate.test_logs")
    assert line["message"] == 'a "quoted" message\nover two lines'
    assert line["time"].endswith("+00:00")


def test_a_line_in_a_traced_call_has_its_ids_and_its_exception(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, False, TraceFlags(1)))
    rc = context.from_metadata([("x-tenant-id", "acme"), ("x-request-id", "req-7")])
    token = context.bind(rc)
    try:
        with trace.use_span(span):
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
    finally:
        context.unbind(token)

    (line,) = [json.loads(text) for text in stream.getvalue().split("\n") if text]
    assert line["request_id"] == "req-7"
    assert line["tenant"] == "acme"
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["span_id"] == "00f067aa0ba902b7"
    assert line["exception"].startswith("Traceback")
    assert "ValueError: boom" in line["exception"]

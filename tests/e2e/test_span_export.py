"""Span export from the event loop (server/span_export.py) to a real OTLP/gRPC collector
served in the test: batches by size and by time, retries what the SDK's exporter
retries, sends its headers, drops the oldest span of a full queue, and sends what is
queued when it closes."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource

from server.span_export import LoopSpanProcessor, OtlpSender
from server.spans import Recorder
from tests.e2e.otlp_collector import Collector
from tests.polling import eventually

pytestmark = pytest.mark.e2e


def recorder(processor: LoopSpanProcessor) -> Recorder:
    return Recorder(Resource.create({"service.name": "repogate"}), processor)


def end(tracer: Recorder, *names: str, **start: object) -> None:
    for name in names:
        tracer.start_span(name, **start).end()  # type: ignore[arg-type]


async def test_a_full_batch_is_sent_at_once_and_the_rest_when_closing(
    collector: tuple[Collector, str],
) -> None:
    kept, endpoint = collector
    processor = LoopSpanProcessor(
        OtlpSender(endpoint), schedule_delay_millis=60_000, max_export_batch_size=3
    )
    tracer = recorder(processor)

    end(tracer, "a", "b", "c", "d", "e", "f", "g")

    await eventually(lambda: len(kept.requests) == 2, "two full batches")
    assert kept.requests == [["a", "b", "c"], ["d", "e", "f"]]
    await processor.close()
    assert kept.requests[2:] == [["g"]]
    end(tracer, "after")  # closed: dropped
    assert len(kept.requests) == 3


async def test_a_batch_that_does_not_fill_is_sent_after_the_schedule_delay(
    collector: tuple[Collector, str],
) -> None:
    kept, endpoint = collector
    processor = LoopSpanProcessor(OtlpSender(endpoint), schedule_delay_millis=50)
    tracer = recorder(processor)

    end(tracer, "alone")

    await eventually(lambda: kept.requests == [["alone"]], "the span sent by the timer")
    await processor.close()


async def test_unsampled_spans_are_not_sent(collector: tuple[Collector, str]) -> None:
    kept, endpoint = collector
    processor = LoopSpanProcessor(OtlpSender(endpoint))
    tracer = recorder(processor)
    unsampled = trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(0))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(unsampled))

    end(tracer, "not kept", context=parent)
    end(tracer, "kept")
    await processor.close()

    assert kept.requests == [["kept"]]


async def test_a_full_queue_drops_its_oldest_spans(collector: tuple[Collector, str]) -> None:
    kept, endpoint = collector
    processor = LoopSpanProcessor(OtlpSender(endpoint), max_queue_size=2, max_export_batch_size=2)
    tracer = recorder(processor)

    # Ended off the event loop: queued, and nothing sends them before close().
    await asyncio.to_thread(end, tracer, "1", "2", "3", "4")
    await processor.close()

    assert (kept.requests, processor.dropped) == ([["3", "4"]], 2)


async def test_a_transient_refusal_is_retried_after_the_delay_the_collector_asks(
    collector: tuple[Collector, str],
) -> None:
    kept, endpoint = collector
    kept.refusals = [
        (grpc.StatusCode.UNAVAILABLE, 0.01),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 0.01),
    ]
    processor = LoopSpanProcessor(OtlpSender(endpoint), schedule_delay_millis=10)

    end(recorder(processor), "retried")

    await eventually(lambda: kept.requests == [["retried"]], "the batch, retried")
    assert kept.attempts == 3
    await processor.close()


async def test_a_refusal_that_is_not_transient_drops_the_batch_and_says_so_once(
    collector: tuple[Collector, str], caplog: pytest.LogCaptureFixture
) -> None:
    kept, endpoint = collector
    kept.refusals = [(grpc.StatusCode.INVALID_ARGUMENT, None)] * 2
    sender = OtlpSender(endpoint)
    processor = LoopSpanProcessor(sender, max_export_batch_size=1)
    tracer = recorder(processor)

    with caplog.at_level(logging.WARNING, "repogate.tracing"):
        end(tracer, "refused", "refused too")
        await eventually(lambda: kept.attempts == 2, "both batches tried")
        assert sender.failing
        end(tracer, "taken")
        await processor.close()

    assert (kept.attempts, kept.requests) == (3, [["taken"]])
    warnings = [r.getMessage() for r in caplog.records]
    assert len([w for w in warnings if "could not export" in w]) == 1
    assert "INVALID_ARGUMENT" in warnings[0]
    assert any("again" in w for w in warnings)


async def test_the_exporters_headers_are_sent(
    collector: tuple[Collector, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, endpoint = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret,x-team=data")
    processor = LoopSpanProcessor(OtlpSender(endpoint))

    end(recorder(processor), "with headers")
    await processor.close()

    (metadata,) = kept.metadata
    assert (metadata["x-api-key"], metadata["x-team"]) == ("secret", "data")


async def test_closing_gives_up_a_batch_waiting_to_be_retried(
    collector: tuple[Collector, str],
) -> None:
    kept, endpoint = collector
    kept.refusals = [(grpc.StatusCode.UNAVAILABLE, 5.0)]
    sender = OtlpSender(endpoint)
    processor = LoopSpanProcessor(sender, schedule_delay_millis=10)

    end(recorder(processor), "waiting")
    await eventually(lambda: kept.attempts == 1, "the first attempt")
    await eventually(lambda: sender.waiting, "the retry's wait")
    await processor.close()

    # Closing did not wait out the 5 s the collector asked for, nor try again.
    assert (kept.attempts, kept.requests) == (1, [])


async def test_a_batch_that_fails_to_send_does_not_stop_the_next(
    collector: tuple[Collector, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, endpoint = collector
    sender = OtlpSender(endpoint)
    processor = LoopSpanProcessor(sender, schedule_delay_millis=10)
    tracer = recorder(processor)
    send = sender.send
    failures = [RuntimeError("broken")]

    async def failing_once(request: bytes) -> bool:
        if failures:
            raise failures.pop()
        return await send(request)

    monkeypatch.setattr(sender, "send", failing_once)
    end(tracer, "lost")
    await eventually(lambda: not failures, "the failed batch")
    end(tracer, "sent")

    await eventually(lambda: kept.requests == [["sent"]], "the next batch")
    await processor.close()

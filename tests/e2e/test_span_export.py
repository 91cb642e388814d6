"""Span export from the event loop (server/span_export.py) to a real OTLP/gRPC collector
served in the test: batches by size and by time, retries what the SDK's exporter
retries, sends its headers, drops the oldest span of a full queue, and sends what is
queued when it closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc import aio
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource

from server.span_export import LoopSpanProcessor, OtlpSender
from server.spans import Recorder
from tests.polling import eventually

pytestmark = pytest.mark.e2e


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Keeps each request's span names and metadata; refuses the first `refusals`."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self.metadata: list[dict[str, str]] = []
        self.refusals: list[tuple[grpc.StatusCode, float | None]] = []
        self.attempts = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.attempts += 1
        if self.refusals:
            code, delay = self.refusals.pop(0)
            if delay is not None:
                info = error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(nanos=int(delay * 1e9))
                )
                context.set_trailing_metadata(
                    (("google.rpc.retryinfo-bin", info.SerializeToString()),)
                )
            await context.abort(code, "refused")
        self.metadata.append(dict(context.invocation_metadata() or ()))
        self.requests.append(
            [
                span.name
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]
        )
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    kept = Collector()
    server = aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(kept, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield kept, f"http://127.0.0.1:{port}"
    await server.stop(0)


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
    processor = LoopSpanProcessor(OtlpSender(endpoint))

    end(recorder(processor), "retried")
    await processor.close()

    assert (kept.attempts, kept.requests) == (3, [["retried"]])


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

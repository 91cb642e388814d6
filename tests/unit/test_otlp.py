"""The OTLP request written as bytes parses to exactly what the SDK's encoder builds,
for the SDK's spans and for Repogate's own (server/spans.py), which it encodes apart."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags, TraceState

from server import otlp
from server.spans import Recorder


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def sdk_provider(kept: Kept, **resource: str | int) -> TracerProvider:
    made = TracerProvider(resource=Resource.create({"service.name": "repogate", **resource}))
    made.add_span_processor(SimpleSpanProcessor(kept))
    return made


class LeanProvider:
    """Tracers that record LeanSpans, as a server's do, into `kept`."""

    def __init__(self, kept: Kept, **resource: str | int) -> None:
        self._resource = Resource.create({"service.name": "repogate", **resource})
        self._processor = SimpleSpanProcessor(kept)

    def get_tracer(
        self, name: str, version: str | None = None, schema_url: str | None = None
    ) -> trace.Tracer:
        scope = InstrumentationScope(name, version, schema_url)
        return Recorder(self._resource, self._processor, scope=scope)


Provider = Callable[..., Any]


@pytest.fixture(params=["sdk", "lean"])
def provider(request: pytest.FixtureRequest) -> Provider:
    return sdk_provider if request.param == "sdk" else LeanProvider


def same_as_the_sdk(spans: Sequence[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(otlp.encode(spans))
    assert ours == encode_spans(spans)


def test_a_call_with_a_statement_and_a_failure(provider: Provider) -> None:
    kept = Kept()
    tracer = provider(kept).get_tracer("repogate")
    with tracer.start_as_current_span(
        "repogate.v1.UserService/GetUser",
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "server.port": 50051, "network.peer.port": 61000},
    ) as call:
        call.set_attribute("rpc.grpc.status_code", 13)
        statement = tracer.start_span(
            "SELECT users", kind=trace.SpanKind.CLIENT, attributes={"db.system": "postgresql"}
        )
        statement.set_status(trace.StatusCode.ERROR, "OperationalError")
        statement.end()
        call.record_exception(RuntimeError("boom"))
        call.set_status(trace.StatusCode.ERROR, "INTERNAL: boom")

    assert len(kept.spans) == 2
    same_as_the_sdk(kept.spans)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "text é",
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        0.0,
        -2.5,
        1e300,
        b"\x00\xff",
        ("a", "b"),
        (1, 2, -3),
        (True,),
        (),
        (1.5,),
    ],
)
def test_every_kind_of_attribute_value(provider: Provider, value: object) -> None:
    kept = Kept()
    tracer = provider(kept).get_tracer("repogate")
    tracer.start_span("one", attributes={"the.value": value}).end()  # type: ignore[dict-item]

    same_as_the_sdk(kept.spans)


def test_a_remote_parent_with_trace_state_and_a_link(provider: Provider) -> None:
    kept = Kept()
    tracer = provider(kept, **{"service.instance.id": "a", "replicas": 3}).get_tracer(
        "repogate", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0"
    )
    remote = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    linked = SpanContext(trace_id=7, span_id=8, is_remote=False)
    span = tracer.start_span(
        "child",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        links=[Link(linked, {"why": "batch"})],
    )
    span.add_event("event", {"n": 1}, timestamp=123)
    span.end()

    same_as_the_sdk(kept.spans)


def test_spans_of_two_resources_and_two_scopes_group_as_the_sdk_groups_them(
    provider: Provider,
) -> None:
    kept = Kept()
    first, second = provider(kept, zone="a"), provider(kept, zone="b")
    first.get_tracer("one").start_span("a").end()
    second.get_tracer("one").start_span("b").end()
    first.get_tracer("two", "0.1").start_span("c").end()
    first.get_tracer("one").start_span("d").end()

    same_as_the_sdk(kept.spans)


def test_one_attribute_on_a_span_an_event_a_link_and_the_resource(provider: Provider) -> None:
    kept = Kept()
    tracer = provider(kept, shared="same").get_tracer("repogate")
    linked = SpanContext(trace_id=7, span_id=8, is_remote=False)
    span = tracer.start_span(
        "one", attributes={"shared": "same"}, links=[Link(linked, {"shared": "same"})]
    )
    span.add_event("event", {"shared": "same"})
    span.end()
    tracer.start_span("two", attributes={"shared": "same"}).end()

    same_as_the_sdk(kept.spans)


def test_values_equal_to_python_but_not_on_the_wire_are_encoded_each_as_itself(
    provider: Provider,
) -> None:
    kept = Kept()
    tracer = provider(kept).get_tracer("repogate")
    for value in (1, True, 1.0, (1,), (True,), (1.0,), 0, False, 0.0, -0.0):
        tracer.start_span("same", attributes={"the.value": value}).end()

    same_as_the_sdk(kept.spans)
    # Equal to 0.0 for the comparison above; its sign is kept on the wire.
    request = ExportTraceServiceRequest.FromString(otlp.encode(kept.spans))
    last = request.resource_spans[0].scope_spans[0].spans[-1]
    assert math.copysign(1.0, last.attributes[0].value.double_value) == -1.0

"""server/spans.py's Recorder against the OpenTelemetry SDK's Tracer: the same calls give
the same spans (names, kinds, attributes, statuses, events, links, parents, sampling),
and the OTLP request for them is the SDK encoder's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags, TraceState

from server import otlp
from server.spans import Recorder
from tests.unit.test_otlp import Kept

RESOURCE = Resource.create({"service.name": "repogate"})
LIMIT = SpanLimits().max_span_attributes or 128


def sdk(kept: Kept, sampler: Sampler | None = None) -> trace.Tracer:
    provider = TracerProvider(resource=RESOURCE, sampler=sampler or ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider.get_tracer("repogate")


def lean(kept: Kept, sampler: Sampler | None = None) -> trace.Tracer:
    return Recorder(RESOURCE, SimpleSpanProcessor(kept), sampler)


def remote(sampled: bool, state: str = "") -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(
        0xABC, 0xDEF, is_remote=True, trace_flags=flags, trace_state=TraceState.from_header([state])
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def without_frames(attributes: Any) -> dict[str, Any]:
    """An event's attributes, an exception's stack trace cut to its last line: the
    frames above differ between the two tracers."""
    found = dict(attributes or {})
    if "exception.stacktrace" in found:
        found["exception.stacktrace"] = found["exception.stacktrace"].splitlines()[-1]
    return found


def view(span: ReadableSpan, ids: dict[int, int]) -> dict[str, Any]:
    """What a span says, its ids replaced by their order of appearance."""

    def known(value: int) -> int:
        return ids.setdefault(value, len(ids))

    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind,
        "trace": known(context.trace_id),
        "span": known(context.span_id),
        "parent": None if span.parent is None else known(span.parent.span_id),
        "flags": int(context.trace_flags),
        "state": context.trace_state.to_header(),
        "attributes": dict(span.attributes or {}),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "status": (span.status.status_code, span.status.description),
        "events": [(e.name, without_frames(e.attributes)) for e in span.events],
        "links": [
            (known(link.context.span_id), dict(link.attributes or {})) for link in span.links
        ],
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "timed": 0 < (span.start_time or 0) <= (span.end_time or 0),
    }


def both(scenario: Callable[[trace.Tracer], None], sampler: Sampler | None = None) -> list[Any]:
    """The spans `scenario` gives through the SDK and through the Recorder, which must
    agree; the Recorder's."""
    found = []
    for make in (sdk, lean):
        kept = Kept()
        scenario(make(kept, sampler))
        ids: dict[int, int] = {}
        found.append((kept.spans, [view(span, ids) for span in kept.spans]))
    (_, sdk_view), (spans, lean_view) = found
    assert lean_view == sdk_view
    return spans


def a_call(tracer: trace.Tracer, parent: Context | None = None) -> None:
    attributes: dict[str, Any] = {
        "rpc.system": "grpc",
        "server.port": 50051,
        "repogate.tenant": "t-1",
    }
    call = tracer.start_span(
        "repogate.v1.UserService/GetUser",
        context=parent or Context(),
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
    )
    with trace.use_span(call, end_on_exit=True, record_exception=False):
        statement = tracer.start_span(
            "SELECT users", kind=trace.SpanKind.CLIENT, attributes={"db.system": "postgresql"}
        )
        statement.set_attribute("error.type", "OperationalError")
        statement.set_status(trace.StatusCode.ERROR, "OperationalError")
        statement.end()
        try:
            raise RuntimeError("boom")
        except RuntimeError as exc:
            call.record_exception(exc)
        call.set_attribute("rpc.grpc.status_code", 13)
        call.set_attributes({"tuple": ["a", "b"], "flag": True, "ratio": 0.5})
        call.add_event("retried", {"attempt": 2})
        call.set_status(trace.StatusCode.ERROR, "INTERNAL: boom")


def test_a_traced_call_is_the_same_span_tree_as_the_sdks() -> None:
    spans = both(a_call)

    statement, call = spans
    assert statement.parent == call.get_span_context()
    assert call.events[0].name == "exception"
    ours = ExportTraceServiceRequest.FromString(otlp.encode(spans))
    assert ours == encode_spans(spans)


def test_a_call_joins_a_sampled_callers_trace_and_keeps_its_state() -> None:
    (_, call) = both(lambda tracer: a_call(tracer, remote(True, "vendor=1")))

    assert call.parent is not None
    assert call.parent.is_remote
    assert call.get_span_context().trace_id == 0xABC


def test_an_unsampled_caller_gives_no_recording_span() -> None:
    found = []
    for make in (sdk, lean):
        span = make(Kept()).start_span("x", context=remote(False))
        found.append((span.is_recording(), span.get_span_context().trace_id))
    assert found == [(False, 0xABC), (False, 0xABC)]


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, ParentBased(ALWAYS_OFF)])
def test_the_environments_sampler_decides_when_given(sampler: Sampler) -> None:
    assert both(a_call, sampler) == []


class Tagging(Sampler):
    """Samples everything, adding an attribute and a trace state entry."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE, {"sampler": "tagging"}, TraceState([("k", "v")])
        )

    def get_description(self) -> str:
        return "Tagging"


class RecordOnly(Tagging):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)


def test_a_samplers_attributes_and_state_are_the_spans() -> None:
    spans = both(a_call, Tagging())

    assert all((span.attributes or {})["sampler"] == "tagging" for span in spans)


def test_a_span_recorded_but_not_sampled_says_so_and_is_not_exported() -> None:
    found = []
    for make in (sdk, lean):
        kept = Kept()
        span = make(kept, RecordOnly()).start_span("x")
        span.end()
        found.append((span.get_span_context().trace_flags.sampled, len(kept.spans)))
    assert found == [(False, 0), (False, 0)]


def test_a_span_being_recorded_but_not_sampled_records() -> None:
    found = []
    for make in (sdk, lean):
        span = make(Kept(), RecordOnly()).start_span("x")
        found.append(span.is_recording())
        span.end()
    assert found == [True, True]


def test_an_ended_span_changes_no_more_and_ends_once() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("x", attributes={"a": 1})
        span.end()
        span.set_attribute("b", 2)
        span.set_status(trace.StatusCode.ERROR)
        span.add_event("late")
        span.update_name("y")
        span.end()

    (span,) = both(scenario)
    assert isinstance(span, trace.Span)
    assert not span.is_recording()


def test_ok_is_final_and_unset_changes_nothing() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        first = tracer.start_span("ok")
        first.set_status(trace.StatusCode.OK)
        first.set_status(trace.StatusCode.ERROR, "ignored")
        first.end()
        second = tracer.start_span("error")
        second.set_status(trace.Status(trace.StatusCode.ERROR, "kept"))
        second.set_status(trace.StatusCode.UNSET)
        second.end()

    ok, error = both(scenario)
    assert (ok.status.status_code, error.status.description) == (trace.StatusCode.OK, "kept")


def test_values_are_cleaned_as_the_sdk_cleans_them() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        given: dict[str, Any] = {"kept": "yes", "object": object()}
        span = tracer.start_span("x", attributes=given)
        span.set_attribute("dict", {"a": 1})
        span.set_attribute("mixed", [1, "a"])
        span.set_attribute("none", None)
        span.set_attribute("ints", [1, 2])
        span.set_attribute("", "no key")
        span.end()
        keyless = tracer.start_span("y", attributes={"": "no key", "k": 1})
        keyless.end()

    span, keyless = both(scenario)
    kept = dict(span.attributes or {})
    assert (kept["ints"], kept["dict"], kept["object"]) == ((1, 2), {"a": 1}, None)
    assert "" not in kept
    assert dict(keyless.attributes or {}) == {"k": 1}


def test_a_full_span_drops_its_oldest_attributes_and_counts_them() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("x")
        for i in range(LIMIT + 5):
            span.set_attribute(f"a{i}", i)
        span.set_attribute("a0", "changed")
        span.end()

    (span,) = both(scenario)
    assert (len(span.attributes or {}), span.dropped_attributes) == (LIMIT, 6)


def test_leaving_a_span_on_an_exception_records_it_as_the_sdk_does() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        with pytest.raises(ValueError, match="bad"), tracer.start_as_current_span("x"):
            raise ValueError("bad")
        with (
            pytest.raises(ValueError, match="bad"),
            tracer.start_as_current_span(
                "quiet", record_exception=False, set_status_on_exception=False
            ),
        ):
            raise ValueError("bad")

    loud, quiet = both(scenario)
    assert loud.status.description == "ValueError: bad"
    assert not quiet.events


def test_a_length_limit_cuts_long_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")

    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("x", attributes={"long": "abcdefgh"})
        span.set_attribute("later", "ijklmnop")
        span.end()

    (span,) = both(scenario)
    assert dict(span.attributes or {}) == {"long": "abcd", "later": "ijkl"}


def test_links_to_valid_contexts_are_kept() -> None:
    valid = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1))

    def scenario(tracer: trace.Tracer) -> None:
        invalid = trace.INVALID_SPAN_CONTEXT
        span = tracer.start_span("x", links=[Link(valid, {"why": "batch"}), Link(invalid)])
        span.add_link(valid)
        span.end()

    (span,) = both(scenario)
    assert len(span.links) == 2

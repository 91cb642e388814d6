"""Recording spans: a Tracer of the OpenTelemetry API, at a quarter of the SDK's cost per span.

Repogate's spans are started, given attributes and ended on the event loop, one call
at a time, and read by the exporter only once ended. The SDK's spans pay for uses
Repogate has none of: a lock per span taken by every setter, attributes checked and
copied under it, a read-only copy made at the end for the processors, start hooks
and the SDK's own metrics of spans. Measured on the 2-core machine: a call's span,
started, ended and exported over OTLP, cost 40 µs of CPU over the untraced call with
the SDK's Tracer and 20 with this one (python -m bench.layers, "every call"); a served
GetUser traced at every call (its span and its Redis GET's) cost 161 µs of server CPU
over an untraced one with the SDK's and 87 with this one (python -m bench.ab, paired).

What stays the SDK's: the resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), the
sampler OTEL_TRACES_SAMPLER names, the span processors and exporters, which get these
spans as the SDK's ReadableSpan (they are one), and the API's context, so the current
span is found as any instrumentation finds it.

Limits are the SDK's, read from the same environment (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT
and the rest, through its SpanLimits): a full span drops its oldest attribute, event or
link for a new one and counts it; a value that is not a str, bool, int or float is
cleaned as the SDK cleans it, by the API's BoundedAttributes.
"""

from __future__ import annotations

import contextlib
import random
import traceback
from collections.abc import Iterator, Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util import types

_SAMPLED = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_UNSAMPLED = TraceFlags(TraceFlags.RANDOM_TRACE_ID)
# The status of every span until it is given one (the encoder tests for it).
UNSET = Status(StatusCode.UNSET)
# Values an attribute keeps as they are, checked at C speed for all of a span's at once.
_KEPT_AS_IS = frozenset((str, bool, int, float))
_KEYS = frozenset((str,))


def _new_id(bits: int) -> int:
    # As the SDK's RandomIdGenerator: never the invalid id 0.
    found = random.getrandbits(bits)
    while not found:
        found = random.getrandbits(bits)
    return found


def _is_valid_link(context: SpanContext | None, attributes: types.Attributes) -> bool:
    # As the SDK: a link to an invalid context is kept for its attributes or trace state.
    return bool(context and (context.is_valid or attributes or context.trace_state))


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span; what ReadableSpan reads is its own state. Used on one thread."""

    def __init__(
        self,
        recorder: Recorder,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
        start_time: int | None,
        on_exception: tuple[bool, bool],
    ) -> None:
        self._recorder = recorder
        self._name = name
        self._context = self._span_context = context
        self._parent = parent
        self._kind = kind
        # The same dict, typed for writing: ReadableSpan reads _attributes.
        self._attributes = self._kept = attributes
        self._dropped = 0
        # BoundedLists once there is something to keep: most spans have no event.
        self._events: Sequence[Event] = ()
        self._links = recorder.links(links) if links else ()
        self._status = UNSET
        self._resource = recorder.resource
        self._instrumentation_scope = recorder.scope
        self._instrumentation_info = None
        self._start_time = start_time or time_ns()
        self._end_time: int | None = None
        # Whether leaving `with span:` on an exception records it, and sets the status.
        self._on_exception = on_exception

    @property
    def dropped_attributes(self) -> int:
        return self._dropped

    def get_span_context(self) -> SpanContext:
        return self._span_context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is not None:
            return
        recorder = self._recorder
        if type(value) not in _KEPT_AS_IS or type(key) is not str or not key or recorder.clips:
            kept = recorder.clean({key: value})
            if not kept:
                self._dropped += 1
                return
            value = kept[key]
        attributes = self._kept
        limit = recorder.limits.max_span_attributes
        if key not in attributes and limit is not None and len(attributes) >= limit:
            if not attributes:  # a limit of 0 keeps none
                self._dropped += 1
                return
            del attributes[next(iter(attributes))]
            self._dropped += 1
        attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is not None:
            return
        if not isinstance(self._events, BoundedList):
            self._events = BoundedList(self._recorder.limits.max_events)
        limits = self._recorder.limits
        kept = BoundedAttributes(
            limits.max_event_attributes, attributes, max_value_len=limits.max_attribute_length
        )
        self._events.append(Event(name, kept, timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end_time is not None or not _is_valid_link(context, attributes):
            return
        links = self._links
        if not isinstance(links, BoundedList):
            links = self._links = self._recorder.links(links)
        links.append(self._recorder.link(Link(context, attributes)))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, UNSET changes nothing.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The SDK's event, attribute for attribute.
        kind = type(exception)
        module, qualname = kind.__module__, kind.__qualname__
        found: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        found.update(attributes or {})
        self.add_event("exception", found, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time_ns()
        self._recorder.processor.on_end(self)

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if error is not None and self.is_recording():
            record, set_status = self._on_exception
            if record:
                self.record_exception(error, escaped=True)
            if set_status:
                self.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self.end()


class Recorder(trace.Tracer):
    """Starts LeanSpans and hands each, as it ends, to `processor`.

    `sampler` None: a span follows its parent's decision and a new trace is sampled
    (the SDK's ParentBased(ALWAYS_ON), decided here without a call per span);
    otherwise that sampler decides, and gives the span's attributes, as it does in
    the SDK's Tracer."""

    def __init__(
        self,
        resource: Resource,
        processor: SpanProcessor,
        sampler: Sampler | None = None,
        scope: InstrumentationScope | None = None,
        limits: SpanLimits | None = None,
    ) -> None:
        self.resource = resource
        self.processor = processor
        self.scope = scope or InstrumentationScope("repogate")
        self.limits = limits or SpanLimits()
        # The longest a str attribute may be; None: as long as it is.
        self.value_length = self.limits.max_span_attribute_length
        # Whether values may be cut, so that every one goes through the API's cleaning.
        self.clips = self.value_length is not None
        self._sampler = sampler

    def clean(self, attributes: types.Attributes) -> dict[str, Any]:
        """`attributes` as a span keeps them: the API's BoundedAttributes cleans them."""
        kept = BoundedAttributes(None, attributes, False, self.value_length)
        return dict(kept)

    def link(self, link: Link) -> Link:
        limits = self.limits
        kept = BoundedAttributes(
            limits.max_link_attributes, link.attributes, max_value_len=limits.max_attribute_length
        )
        return Link(link.context, kept)

    def links(self, links: Sequence[Link]) -> BoundedList[Link]:
        return BoundedList.from_seq(self.limits.max_links, [self.link(link) for link in links])

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
        else:
            parent, trace_id = None, _new_id(128)
        links = (
            [link for link in links if _is_valid_link(link.context, link.attributes)]
            if links
            else ()
        )
        if self._sampler is None:
            sampled = recording = parent is None or parent.trace_flags.sampled
            state = parent.trace_state if parent is not None else DEFAULT_TRACE_STATE
        else:
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            recording = result.decision is not Decision.DROP
            state = result.trace_state or DEFAULT_TRACE_STATE
            attributes = result.attributes
        flags = _SAMPLED if sampled else _UNSAMPLED
        if parent is not None and not parent.trace_flags.random_trace_id:
            flags = TraceFlags(flags & ~TraceFlags.RANDOM_TRACE_ID)
        span_context = SpanContext(trace_id, _new_id(64), False, flags, state)
        if not recording:
            return trace.NonRecordingSpan(span_context)
        span = LeanSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            {},
            links,
            start_time,
            (record_exception, set_status_on_exception),
        )
        if attributes:
            limit = self.limits.max_span_attributes
            if (
                not self.clips
                and (limit is None or len(attributes) <= limit)
                and _KEPT_AS_IS.issuperset(map(type, attributes.values()))
                and _KEYS.issuperset(map(type, attributes))
                and "" not in attributes
            ):
                span._attributes = span._kept = dict(attributes)
            else:
                span.set_attributes(attributes)
        return span

    # The API's decorator for this (it also makes the result a decorator) is private.
    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current

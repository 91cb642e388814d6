"""The OTLP trace export request, encoded straight to protobuf's wire format.

The OpenTelemetry SDK's OTLP encoder builds a protobuf message object for every span,
attribute and value before serializing them: 39-53 µs per span of Repogate's (a call's
span, 9 attributes, encoded 512 at a time in a loop on the 2-core machine); written as
bytes here (each distinct attribute encoded once and kept), 12-16 µs; a LeanSpan read
from its own fields, its block of attributes kept whole, 4.4-5.6 µs (a call's span and
its Redis GET's, the same loop).
server/span_export.py sends it. tests/unit/test_otlp.py checks that the request parses
to exactly what the SDK's encoder builds. Spans are grouped by their resource object,
where the SDK groups equal resources: a server has one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from server.spans import UNSET, LeanSpan
from server.wire import field, varint

# SpanFlags: the span says whether its parent is remote, and whether it is.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
# Encoded attributes kept, by (field number, key, type, value): Repogate's spans repeat
# theirs.
_KEEP = 4096
_pairs: dict[tuple[int, str, type, Any], bytes] = {}
# Encoded sets of attributes kept, by field number, items and the values' types, when
# every value is one of _SCALARS (not a float: -0.0 is 0.0 to a dict).
_SCALARS = frozenset((str, bool, int))
_KEEP_BLOCKS = 1024
_blocks: dict[tuple[int, tuple[tuple[str, Any], ...], tuple[type, ...]], bytes] = {}
_resources: dict[int, tuple[Any, bytes]] = {}


def _text(number: int, value: str | None) -> bytes:
    return field(number, value.encode()) if value else b""


def _count(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value) if value else b""


def _fixed64(number: int, value: int | None) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<Q", value) if value else b""


def _value(value: Any) -> bytes:
    """An AnyValue, as the SDK's encoder reads a Python value."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return field(1, value.encode())
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return field(7, value)
    if isinstance(value, Sequence):
        return field(5, b"".join(field(1, _value(each)) for each in value))
    if isinstance(value, Mapping):
        return field(6, b"".join(field(1, _pair(str(k), v)) for k, v in value.items()))
    raise TypeError(f"an attribute of type {type(value).__name__}")


def _pair(key: str, value: Any) -> bytes:
    """A KeyValue's fields."""
    return _text(1, key) + field(2, _value(value))


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Field `number` once for each attribute; the whole block is kept by the attributes'
    keys, values and their types (True is 1 to a dict, not to the wire): a call's span
    repeats its set of attributes, and the block costs a fifth of encoding them one by
    one (2.2 µs against 11.7 for a GetUser's nine, in a loop)."""
    if not attributes:
        return b""
    if isinstance(attributes, BoundedAttributes):
        # Its own dict: the mapping's items() walks it through a lock, key by key.
        attributes = attributes._dict
    types = tuple(map(type, attributes.values()))
    if not _SCALARS.issuperset(types):
        # A sequence's items could be told apart by their types only one by one.
        return _each(number, attributes)
    key = (number, tuple(attributes.items()), types)
    found = _blocks.get(key)
    if found is None:
        if len(_blocks) >= _KEEP_BLOCKS:
            _blocks.clear()
        found = _blocks[key] = _each(number, attributes)
    return found


def _each(number: int, attributes: Mapping[str, Any]) -> bytes:
    out = []
    for key, value in attributes.items():
        # Not a float: -0.0 is 0.0 to a dict, not to the wire.
        if isinstance(value, str | int | bytes):
            kept = (number, key, type(value), value)
            found = _pairs.get(kept)
            if found is None:
                if len(_pairs) >= _KEEP:
                    _pairs.clear()
                found = _pairs[kept] = field(number, _pair(key, value))
            out.append(found)
        else:
            out.append(field(number, _pair(key, value)))
    return b"".join(out)


def _flags(number: int, parent: SpanContext | None) -> bytes:
    """Field `number`, the SpanFlags of a span (or link) whose parent is `parent`."""
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return varint(number << 3 | 5) + struct.pack("<I", flags)  # wire type 5: fixed32


def _status(status: Any) -> bytes:
    """Field 15, a span's Status."""
    return field(15, _text(2, status.description) + _count(3, status.status_code.value))


def _rare(span: ReadableSpan) -> bytes:
    """A span's events, links and the counts of those dropped: fields 11 to 14."""
    events = b"".join(
        field(
            11,
            _fixed64(1, event.timestamp)
            + _text(2, event.name)
            + _attributes(3, event.attributes)
            + _count(4, event.dropped_attributes),
        )
        for event in span.events
    )
    links = b"".join(
        field(
            13,
            field(1, link.context.trace_id.to_bytes(16, "big"))
            + field(2, link.context.span_id.to_bytes(8, "big"))
            + _attributes(4, link.attributes)
            + _count(5, link.dropped_attributes)
            + _flags(6, link.context),
        )
        for link in span.links
    )
    return events + _count(12, span.dropped_events) + links + _count(14, span.dropped_links)


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
    return (
        field(1, context.trace_id.to_bytes(16, "big"))
        + field(2, context.span_id.to_bytes(8, "big"))
        + _text(3, state)
        + (field(4, parent.span_id.to_bytes(8, "big")) if parent else b"")
        + _text(5, span.name)
        + _count(6, span.kind.value + 1)  # OTLP's SpanKind counts from UNSPECIFIED
        + _fixed64(7, span.start_time)
        + _fixed64(8, span.end_time)
        + _attributes(9, span._attributes)  # the span's own, not a proxy of them
        + _count(10, span.dropped_attributes)
        + _rare(span)
        + _status(span.status)
        + _flags(16, parent)
    )


# Tags of fixed-size fields, and the fields every LeanSpan has, packed at once.
_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano (7) and end_time_unix_nano (8)
_START, _END = 7 << 3 | 1, 8 << 3 | 1
_TRACE_ID, _SPAN_ID, _PARENT_ID = b"\x0a\x10", b"\x12\x08", b"\x22\x08"
# An unset status: an empty Status message.
_NO_STATUS = field(15, b"")
_LOCAL_PARENT, _REMOTE_PARENT = (
    _flags(16, None),
    varint(16 << 3 | 5) + struct.pack("<I", _HAS_IS_REMOTE | _IS_REMOTE),
)
# The name and kind fields of a span, by its name and kind.
_named: dict[tuple[str, Any], bytes] = {}


def _lean(span: LeanSpan) -> bytes:
    """_span's bytes for a LeanSpan, read from its fields: most of what the API reads
    through properties (events, links, what was dropped, the status) is empty or unset
    on Repogate's spans, which costs a test each here."""
    context = span._span_context
    parent = span._parent
    named = _named.get((span._name, span._kind))
    if named is None:
        if len(_named) >= _KEEP:
            _named.clear()
        named = _named[span._name, span._kind] = _text(5, span._name) + _count(
            6, span._kind.value + 1
        )
    state = context.trace_state
    out = [
        _TRACE_ID,
        context.trace_id.to_bytes(16, "big"),
        _SPAN_ID,
        context.span_id.to_bytes(8, "big"),
    ]
    if state:
        out.append(_text(3, ",".join(f"{k}={v}" for k, v in state.items())))
    if parent is not None:
        out += (_PARENT_ID, parent.span_id.to_bytes(8, "big"))
    out += (
        named,
        _TIMES.pack(_START, span._start_time, _END, span._end_time or 0),
        _attributes(9, span._attributes),
    )
    # A LeanSpan's events and links are an empty tuple until it has one (or drops one).
    if span._dropped or type(span._events) is not tuple or type(span._links) is not tuple:
        out.append(_count(10, span._dropped) + _rare(span))
    out.append(_NO_STATUS if span._status is UNSET else _status(span._status))
    out.append(_REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT)
    return b"".join(out)


def _resource(resource: Any) -> bytes:
    """The Resource message's fields, encoded once per resource."""
    kept = _resources.get(id(resource))
    if kept is None or kept[0] is not resource:
        kept = _resources[id(resource)] = (resource, _attributes(1, resource.attributes))
    return kept[1]


# Spans by resource (by its identity: a Resource hashes by writing its attributes as
# JSON), then by instrumentation scope, each span already encoded.
Groups = dict[int, tuple[Any, dict[Any, list[bytes]]]]


def group(spans: Iterable[ReadableSpan], groups: Groups) -> None:
    """Encodes `spans` into `groups`, in the order their resources and scopes first
    appear, as the SDK groups them."""
    for span in spans:
        scope = span.instrumentation_scope or None
        resource = span.resource
        found = groups.get(id(resource))
        if found is None:
            found = groups[id(resource)] = (resource, {})
        encoded = _lean(span) if type(span) is LeanSpan else _span(span)
        found[1].setdefault(scope, []).append(field(2, encoded))


def assemble(groups: Groups) -> bytes:
    """The ExportTraceServiceRequest of the spans `group` encoded."""
    out = []
    for resource, scopes in groups.values():
        scope_spans = b"".join(
            field(
                2,
                field(
                    1,
                    b""
                    if scope is None
                    else _text(1, scope.name)
                    + _text(2, scope.version)
                    + _attributes(3, scope.attributes),
                )
                + b"".join(encoded)
                + _text(3, scope.schema_url if scope is not None else None),
            )
            for scope, encoded in scopes.items()
        )
        out.append(
            field(1, field(1, _resource(resource)) + scope_spans + _text(3, resource.schema_url))
        )
    return b"".join(out)


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """The ExportTraceServiceRequest for `spans`."""
    groups: Groups = {}
    group(spans, groups)
    return assemble(groups)

"""The SERVER span of each call to a Repogate service.

The request interceptor (server/interceptors.py) starts and ends it: it reads the
call's metadata and knows the status the client gets anyway, so a traced server runs
no interceptor of its own for spans. The span is `{rpc.service}/{rpc.method}` with
`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, `server.address`,
`server.port`, `network.peer.address`, `network.peer.port` and the call's tenant
(`repogate.tenant`) when it is a valid one; it joins the caller's trace when the
metadata carries a W3C `traceparent` (and `tracestate`). Only server faults mark it
as an error: a NOT_FOUND is an answer.

Why not opentelemetry-instrumentation-grpc's aio server interceptor: it costs more
and does less. Per call, in process, around the request interceptor and a no-op
handler, each call a sampled root span (python -m bench.otel_packages, 0.66b1,
2-core machine, seven runs), it added 34-45 µs of CPU where a tracing interceptor of
ours added 27-31, before spans were started here, inside the request interceptor. It
also traces health and reflection (no filter for the exempt services), asks the SDK's
sampler before it can skip an unsampled new trace (20 µs a call; the root ratio here
skips it for 1), and names no server.address. As a separate interceptor, an unsampled
call still cost 7 µs (python -m bench.ab, cached GetUser): a layer of grpc.aio's
interceptor chain and a second scan of the metadata.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from types import MappingProxyType

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from repositories.errors import InvalidArgument
from server import db_semconv
from server.context import TRACEPARENT_KEY, TRACESTATE_KEY, RequestContext, validate_tenant
from server.wrapping import SERVER_FAULTS, split_method

TENANT = "repogate.tenant"
RPC_SYSTEM, RPC_SERVICE, RPC_METHOD = "rpc.system", "rpc.service", "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"
SERVER_ADDRESS, SERVER_PORT = db_semconv.SERVER_ADDRESS, db_semconv.SERVER_PORT
PEER_ADDRESS, PEER_PORT = "network.peer.address", "network.peer.port"

_PROPAGATOR = TraceContextTextMapPropagator()
# The context of a call that carries no trace: its span is a root.
_NO_PARENT = otel_context.Context()

# A started span and the token that makes it current until the call ends.
Started = tuple[trace.Span, object]


class CallSpans:
    """Starts the spans of calls: with `tracer`, keeping `root_ratio` of the calls that
    carry no sampled trace (None: the tracer's sampler decides alone); `server`: the
    server.address and server.port every span says, filled in once the server is bound."""

    def __init__(
        self,
        tracer: trace.Tracer,
        root_ratio: float | None = None,
        server: Mapping[str, str | int] = MappingProxyType({}),
    ) -> None:
        self._tracer = tracer
        self._root_ratio = root_ratio
        self._server = server

    def of(self, method: str) -> MethodSpans:
        """What starts the spans of `method`'s calls (worked out once a method)."""
        service, name = split_method(method)
        attributes = {RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: name}
        return MethodSpans(
            self._tracer, self._root_ratio, f"{service}/{name}", attributes, self._server
        )


class MethodSpans:
    __slots__ = ("_attributes", "_name", "_ratio", "_server", "_tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        ratio: float | None,
        name: str,
        attributes: Mapping[str, str],
        server: Mapping[str, str | int],
    ) -> None:
        self._tracer = tracer
        self._ratio = ratio
        self._name = name
        self._attributes = attributes
        self._server = server

    def start(self, rc: RequestContext, ctx: aio.ServicerContext) -> Started | None:
        """The call's span, current from here until `end`; None when it records nothing
        (not sampled: statements and cache calls then start no span either)."""
        traceparent = rc.traceparent
        if traceparent is None:
            parent = _NO_PARENT
        else:
            carrier = {TRACEPARENT_KEY: traceparent}
            if rc.tracestate is not None:
                carrier[TRACESTATE_KEY] = rc.tracestate
            parent = _PROPAGATOR.extract(carrier)
        if (
            self._ratio is not None
            and (
                traceparent is None
                or not trace.get_current_span(parent).get_span_context().is_valid
            )
            and random.random() >= self._ratio
        ):
            # A new trace, not one of those kept: no span at all.
            return None
        # Every attribute known at the start given at once: the SDK checks and stores
        # each one it is handed apart.
        known = {**self._attributes, **self._server, **peer_attributes(ctx.peer())}
        tenant = _valid_tenant(rc.tenant)
        if tenant is not None:
            known[TENANT] = tenant
        span = self._tracer.start_span(
            self._name, context=parent, kind=trace.SpanKind.SERVER, attributes=known
        )
        if not span.is_recording():
            return None
        return span, otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def end(started: Started, ctx: aio.ServicerContext, code: grpc.StatusCode) -> None:
        """Ends the span of a call that ends with `code`, the status its client gets."""
        span, token = started
        otel_context.detach(token)  # type: ignore[arg-type]
        span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
        if code in SERVER_FAULTS:
            details = ctx.details() or ""
            span.set_status(
                trace.StatusCode.ERROR, f"{code.name}: {details}" if details else code.name
            )
        span.end()


def _valid_tenant(value: str | None) -> str | None:
    """The call's tenant when it is a valid one: a span never carries arbitrary input."""
    if value is None:
        return None
    try:
        return validate_tenant(value)
    except InvalidArgument:
        return None


@functools.lru_cache(maxsize=4096)
def peer_attributes(peer: str) -> Mapping[str, str | int]:
    """network.peer.address and .port of gRPC's peer string: 'ipv4:10.0.0.7:52144',
    'ipv6:[::1]:52144', 'unix:/run/app.sock'."""
    kind, _, where = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return MappingProxyType({PEER_ADDRESS: where} if where else {})
    host, _, port = where.rpartition(":")
    found: dict[str, str | int] = {PEER_ADDRESS: host.strip("[]")}
    if port.isdigit():
        found[PEER_PORT] = int(port)
    return MappingProxyType(found)

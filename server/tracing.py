"""Tracing: a SERVER span per Repogate RPC, with a child per database statement
and per cache call, exported where REPOGATE_TRACE_EXPORTER says.

Names and attributes follow OpenTelemetry's semantic conventions: a call's span is
`{rpc.service}/{rpc.method}`, started by the request interceptor (server/call_spans.py,
which joins the caller's trace when its metadata carries a W3C `traceparent`); a
statement's is
`{operation} {table}` (`SELECT users`) with `db.system`, `db.namespace` and
`db.name`, `db.operation`, `db.sql.table`, `db.statement`, `server.address`,
`server.port` (server/db_semconv.py); a Redis command's is the command, with
`db.system` `redis` (server/cache/traced.py). Only server faults mark a span as an
error; a NOT_FOUND is an answer.

Why not OpenTelemetry's instrumentation packages (0.66b1; see docs/telemetry.md):
- opentelemetry-instrumentation-grpc's aio server interceptor: see server/call_spans.py.
- opentelemetry-instrumentation-asyncpg costs no less per statement, patches asyncpg
  process-wide with one tracer provider for every server, names a span by its
  operation only (`SELECT`), starts root spans for background statements, and misses
  SQLite; see _trace_statements.
- opentelemetry-instrumentation-redis patches redis-py, which the read-through's GET
  and set_if_newer do not pass (they go over server/cache/lane.py's pipelined
  connection): it would trace everything but the hot path.

Nothing here is global: each server builds its own TracerProvider from settings
and flushes it on stop. With the exporter `none` nothing is instrumented at all.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from server import db_semconv
from server.cache.backend import CacheBackend
from server.cache.traced import TracedCache
from server.call_spans import CallSpans
from server.settings import Settings
from server.spans import Recorder

if TYPE_CHECKING:
    # At run time only with the OTLP exporter: it loads the OTLP protos.
    from server.span_export import LoopSpanProcessor

DB_SYSTEM, DB_STATEMENT, DB_OPERATION = "db.system", "db.statement", "db.operation"
# Long enough for any single-row statement; a 1000-row INSERT is cut here.
STATEMENT_MAX = 2048
# The OpenTelemetry sampler that keeps a share of the traces that start here.
RATIO_SAMPLER = "parentbased_traceidratio"
# Where a statement's span waits for the statement to end: on its execution context.
_SPAN = "_repogate_span"


class Tracing:
    """A server's tracer provider and what it instruments; without one, nothing is."""

    def __init__(
        self,
        provider: TracerProvider | None = None,
        root_ratio: float | None = None,
        tracer: trace.Tracer | None = None,
        on_loop: LoopSpanProcessor | None = None,
    ) -> None:
        """`provider`: what holds the span processors (flushed and stopped with the
        server); `tracer`: what starts the spans, by default the provider's; `on_loop`:
        the processor among the provider's that sends from the event loop.
        `root_ratio`: the share of calls without a sampled caller's trace to trace,
        decided before a span starts (every root the tracer starts is then sampled);
        None: the tracer's sampler decides alone."""
        self.provider = provider
        if tracer is None and provider is not None:
            tracer = provider.get_tracer("repogate")
        self._tracer = tracer
        self._root_ratio = root_ratio
        # server.address and server.port of every call's span, once the server is bound.
        self._server: dict[str, str | int] = {}
        self._on_loop = on_loop

    @classmethod
    def from_settings(cls, settings: Settings, exporter: SpanExporter | None = None) -> Tracing:
        """`exporter` replaces REPOGATE_TRACE_EXPORTER's choice (tests use an in-memory
        one) and gets each span as it ends."""
        processor: SpanProcessor
        on_loop: LoopSpanProcessor | None = None
        if exporter is not None:
            processor = SimpleSpanProcessor(exporter)
        elif settings.trace_exporter == "console":
            # sys.stdout as it is now: the exporter's default is the one at import time.
            processor = BatchSpanProcessor(ConsoleSpanExporter(out=sys.stdout, formatter=_one_line))
        elif settings.trace_exporter == "otlp":
            # Imported here: it loads the OTLP protos, which only this exporter needs.
            from server.span_export import LoopSpanProcessor, OtlpSender

            processor = on_loop = LoopSpanProcessor(OtlpSender(settings.otlp_endpoint))
        else:
            return cls()
        # Attributes given here override the environment's: read OTEL_SERVICE_NAME first.
        name = os.environ.get("OTEL_SERVICE_NAME") or "repogate"
        ratio = root_ratio()
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: name}),
            # None: the sampler OTEL_TRACES_SAMPLER names, as the SDK reads it.
            sampler=None if ratio is None else ParentBased(ALWAYS_ON),
        )
        provider.add_span_processor(processor)
        # The provider's resource and sampler (as the environment configures them) and
        # its processor; spans are Repogate's own (server/spans.py).
        sampler = None if ratio is not None else provider.sampler
        recorder = Recorder(provider.resource, processor, sampler)
        return cls(provider, ratio, recorder, on_loop)

    def calls(self) -> CallSpans | None:
        """What starts each call's span (the request interceptor runs it); None when
        calls get no spans."""
        if self._tracer is None:
            return None
        return CallSpans(self._tracer, self._root_ratio, self._server)

    def serving_at(self, address: str) -> None:
        """The address the server bound (host:port, or unix:path): its calls' spans say
        it; set before the first call."""
        self._server.clear()
        if address.startswith("unix:"):
            self._server[db_semconv.SERVER_ADDRESS] = address.removeprefix("unix:")
            return
        host, _, port = address.rpartition(":")
        self._server[db_semconv.SERVER_ADDRESS] = host.strip("[]")
        if port.isdigit():
            self._server[db_semconv.SERVER_PORT] = int(port)

    def engine(self, engine: AsyncEngine) -> AsyncEngine:
        """Gives each statement run inside a traced call a span of its own."""
        if self._tracer is not None:
            _trace_statements(engine, self._tracer)
        return engine

    def cache(self, backend: CacheBackend, url: str | None = None) -> CacheBackend:
        """Wraps the backend, so that CacheService and read-through calls both get spans;
        `url`: the Redis it talks to, for the spans' server attributes."""
        if self._tracer is None:
            return backend
        return TracedCache(backend, self._tracer, url)

    async def flush(self) -> None:
        """Exports every span ended so far."""
        if self._on_loop is not None:
            await self._on_loop.flush()
        if self.provider is not None:
            await asyncio.to_thread(self.provider.force_flush)

    async def shutdown(self) -> None:
        """Exports what is buffered and stops: on the event loop what is sent from it,
        the rest off it, as their exporting blocks."""
        provider, self.provider, self._tracer = self.provider, None, None
        on_loop, self._on_loop = self._on_loop, None
        if on_loop is not None:
            await on_loop.close()
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)


def root_ratio() -> float | None:
    """The share of new traces to keep when OTEL_TRACES_SAMPLER is the ratio sampler that
    follows its caller's decision (parentbased_traceidratio), else None. A new trace's id
    is random, so a random draw keeps the same share as the SDK's test of its id; drawn
    first, an unsampled call starts no span: 1 µs a call, where the SDK's sampler took 20
    (python -m bench.layers)."""
    if os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() != RATIO_SAMPLER:
        return None
    try:
        ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    except ValueError:
        return 1.0  # as the SDK reads an argument that is not a number
    return ratio if 0.0 <= ratio <= 1.0 else 1.0


def _trace_statements(engine: AsyncEngine, tracer: trace.Tracer) -> None:
    """A CLIENT span per statement run inside a traced call.

    Not opentelemetry-instrumentation-asyncpg: it costs no less (`SELECT 1` in a
    sampled call, python -m bench.otel_packages, six runs: 58-108 µs of CPU per
    statement, these listeners 50-81) and does less: see the module's docstring.
    These listeners also see the lean path's statements (repositories/prepared.py
    dispatches the same events) and SQLite's, and start no span outside a traced
    call."""
    # Listeners run in SQLAlchemy's greenlet, which shares the calling task's
    # context: the current span there is the call's.
    base = db_semconv.database_attributes(engine.dialect.name, engine.url)
    # Repogate runs few distinct statements: each one's attributes are worked out once
    # (the SDK copies them into each span).
    attributes_of = functools.lru_cache(maxsize=1024)(
        functools.partial(_statement_attributes, base)
    )

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _before(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        # Statements outside a traced call (migrations, the purge) are left alone.
        if context is None or not trace.get_current_span().is_recording():
            return
        name, attributes = attributes_of(statement)
        span = tracer.start_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)
        setattr(context, _SPAN, span)

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _after(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        span: trace.Span | None = getattr(context, _SPAN, None)
        if span is not None:
            setattr(context, _SPAN, None)
            span.end()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _failed(error: ExceptionContext) -> None:
        span: trace.Span | None = getattr(error.execution_context, _SPAN, None)
        if span is not None:
            setattr(error.execution_context, _SPAN, None)
            # The class only: driver messages can quote the row's values.
            kind = type(error.original_exception).__name__
            span.set_attribute("error.type", kind)
            span.set_status(trace.StatusCode.ERROR, kind)
            span.end()


def _statement_attributes(
    base: Mapping[str, str | int], statement: str
) -> tuple[str, Mapping[str, str | int]]:
    """The span name of `statement` and its attributes, `base` (the database's) included."""
    operation, table = db_semconv.summary(statement)
    operation = operation or str(base[DB_SYSTEM])
    attributes = {**base, DB_OPERATION: operation, DB_STATEMENT: normalized(statement)}
    if table is not None:
        attributes[db_semconv.DB_SQL_TABLE] = table
    return db_semconv.span_name(operation, table), MappingProxyType(attributes)


def normalized(statement: str) -> str:
    """The statement on one line, cut at STATEMENT_MAX. Values never appear in it:
    every statement Repogate runs sends them as bound parameters."""
    text = " ".join(statement[: STATEMENT_MAX * 2].split())
    return text if len(text) <= STATEMENT_MAX else text[: STATEMENT_MAX - 1] + "…"


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"

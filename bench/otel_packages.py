"""`python -m bench.otel_packages`: Repogate's spans against OpenTelemetry's
instrumentation packages, in CPU µs, in process.

- A call: the RequestInterceptor starting call spans against the same without them,
  wrapped in opentelemetry-instrumentation-grpc's aio server interceptor, around a no-op
  handler (bench.layers' stand-ins), 8 calls at a time, every call a sampled root span.
- A statement: the statement listeners (server/tracing.py) against
  opentelemetry-instrumentation-asyncpg, `SELECT 1` through SQLAlchemy on PostgreSQL
  inside a sampled call span.

Spans are exported in batches to an exporter that drops them. The packages are not
dependencies of Repogate: `pip install opentelemetry-instrumentation-grpc
opentelemetry-instrumentation-asyncpg` first. The figures are quoted in server/call_spans.py
and server/tracing.py.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
import uvloop
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.layers import METHOD, TENANT, Ctx, cpu_us, flushed, nothing, stacked
from repositories.database import create_engine
from server import access, context
from server.call_spans import CallSpans
from server.call_stats import CallStats
from server.interceptors import RequestInterceptor
from server.tracing import _trace_statements


class Metadatum(NamedTuple):
    """grpc.aio's metadata item: a pair with names, which the instrumentation reads."""

    key: str
    value: str


METADATA = (Metadatum(context.TENANT_KEY, TENANT),)


class Details:
    method = METHOD
    invocation_metadata = METADATA


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def provider() -> TracerProvider:
    made = TracerProvider()
    made.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=4096))
    return made


def call_rows(args: argparse.Namespace) -> list[tuple[str, float]]:
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    ctx = Ctx(METADATA)
    request = RequestInterceptor(["repogate.v1.UserService"], calls=CallStats())
    inner = stacked([request], nothing)

    def measure(behaviour: Any, traced: TracerProvider) -> float:
        return cpu_us(flushed(behaviour, ctx, traced), args.calls, args.repeat)

    alone = measure(inner, provider())
    ours_provider = provider()
    ours = CallSpans(ours_provider.get_tracer("repogate"))
    spanning = RequestInterceptor(["repogate.v1.UserService"], calls=CallStats(), spans=ours)
    ours_us = measure(stacked([spanning], nothing), ours_provider)
    theirs_provider = provider()

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(inner)

    theirs = aio_server_interceptor(tracer_provider=theirs_provider)
    handler = asyncio.get_event_loop().run_until_complete(
        theirs.intercept_service(continuation, Details())
    )
    theirs_us = measure(handler.unary_unary, theirs_provider)
    return [
        ("a call: RequestInterceptor alone", alone),
        ("  + its call spans", ours_us),
        ("  + opentelemetry-instrumentation-grpc", theirs_us),
    ]


def statement_rows(args: argparse.Namespace) -> list[tuple[str, float]]:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    async def per_statement(engine: AsyncEngine, traced: TracerProvider) -> float:
        tracer = traced.get_tracer("bench")
        best = float("inf")
        async with engine.connect() as conn:
            for round_ in range(args.repeat + 1):  # the first warms up
                started = time.process_time()
                with tracer.start_as_current_span("call"):
                    for _ in range(args.statements):
                        await conn.exec_driver_sql("SELECT 1")
                traced.force_flush()
                if round_:
                    best = min(best, (time.process_time() - started) / args.statements * 1e6)
        await engine.dispose()
        return best

    def measure(instrument: Any) -> float:
        traced = provider()
        engine = create_engine(args.dsn)
        instrument(engine, traced)
        return asyncio.get_event_loop().run_until_complete(per_statement(engine, traced))

    alone = measure(lambda engine, traced: None)
    ours = measure(lambda engine, traced: _trace_statements(engine, traced.get_tracer("r")))
    # Last: it patches asyncpg for the rest of the process.
    theirs = measure(
        lambda engine, traced: AsyncPGInstrumentor().instrument(tracer_provider=traced)
    )
    return [
        ("a statement (SELECT 1) alone", alone),
        ("  + statement listeners", ours),
        ("  + opentelemetry-instrumentation-asyncpg", theirs),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otel_packages", description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    asyncio.set_event_loop(uvloop.new_event_loop())
    access.configure(False)
    rows = call_rows(args) + statement_rows(args)
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:7.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m bench.otel_grpc`: Repogate's TracingInterceptor against
opentelemetry-instrumentation-grpc's aio server interceptor, in CPU µs per call.

Both run around the RequestInterceptor and a no-op handler (bench.layers' stand-ins),
8 calls at a time, every call a sampled root span, exported in batches to an exporter
that drops them. The instrumentation package is not a dependency of Repogate:
`pip install opentelemetry-instrumentation-grpc` first. The figures are quoted in
server/tracing.py.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
import uvloop
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.layers import METHOD, TENANT, Ctx, cpu_us, flushed, nothing, stacked
from server import access, context
from server.call_stats import CallStats
from server.interceptors import RequestInterceptor
from server.tracing import TracingInterceptor


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otel_grpc", description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    asyncio.set_event_loop(uvloop.new_event_loop())
    access.configure(False)
    ctx = Ctx(METADATA)
    request = RequestInterceptor(["repogate.v1.UserService"], calls=CallStats())
    inner = stacked([request], nothing)

    def measure(behaviour: Any, traced: TracerProvider) -> float:
        return cpu_us(flushed(behaviour, ctx, traced), args.calls, args.repeat)

    alone = measure(inner, provider())
    ours_provider = provider()
    ours = TracingInterceptor(ours_provider.get_tracer("repogate"))
    ours_us = measure(stacked([ours, request], nothing), ours_provider)
    theirs_provider = provider()

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(inner)

    theirs = aio_server_interceptor(tracer_provider=theirs_provider)
    handler = asyncio.get_event_loop().run_until_complete(
        theirs.intercept_service(continuation, Details())
    )
    theirs_us = measure(handler.unary_unary, theirs_provider)
    print(f"RequestInterceptor alone              {alone:6.1f} µs")
    print(f"  + TracingInterceptor                {ours_us:6.1f} µs (+{ours_us - alone:.1f})")
    print(f"  + opentelemetry-instrumentation-grpc {theirs_us:6.1f} µs (+{theirs_us - alone:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

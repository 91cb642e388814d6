"""A stand-in OpenTelemetry collector: accepts OTLP/gRPC trace exports, counts the
spans, keeps nothing. "Interceptors on" exports to it, as a server in production
exports to a collector beside it.

Run as `python -m bench.otlp_sink --listen 127.0.0.1:PORT`; it prints the spans it
received when it stops.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvloop
from grpc import aio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.baseline import serve_until_stopped


class Sink(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.spans = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            self.spans += sum(len(scope.spans) for scope in resource.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve(listen: str) -> None:
    server = aio.server()
    sink = Sink()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    await serve_until_stopped(server, listen)
    print(f"spans received: {sink.spans}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink", description=__doc__)
    parser.add_argument("--listen", required=True)
    uvloop.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()

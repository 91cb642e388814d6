"""An OTLP/gRPC trace collector served in a test: keeps each request's spans, the
resource's service names and the call's metadata, and can refuse requests first."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc import aio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Keeps each request's span names and metadata; refuses the first `refusals`."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self.services: set[str] = set()
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
                    retry_delay=duration_pb2.Duration(
                        seconds=int(delay), nanos=int(delay % 1 * 1e9)
                    )
                )
                context.set_trailing_metadata(
                    (("google.rpc.retryinfo-bin", info.SerializeToString()),)
                )
            await context.abort(code, "refused")
        self.metadata.append(dict(context.invocation_metadata() or ()))
        for resource in request.resource_spans:
            self.services.update(
                a.value.string_value
                for a in resource.resource.attributes
                if a.key == "service.name"
            )
        self.requests.append(
            [
                span.name
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]
        )
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def names(self) -> list[str]:
        return [name for request in self.requests for name in request]


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    kept = Collector()
    server = aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(kept, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield kept, f"http://127.0.0.1:{port}"
    await server.stop(0)

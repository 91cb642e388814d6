"""Helpers for calling the server and reading AIP-193 error details."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from server.errors import ERROR_DOMAIN


def md(tenant: str | None, **extra: str) -> tuple[tuple[str, str], ...]:
    """Request metadata for `tenant` (None: no tenant) plus x-* keys given as x_actor_id=..."""
    pairs = [] if tenant is None else [("x-tenant-id", tenant)]
    pairs += [(key.replace("_", "-"), value) for key, value in extra.items()]
    return tuple(pairs)


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    violations: dict[str, str] = field(default_factory=dict)


def details(error: aio.AioRpcError) -> ErrorDetails:
    """Decodes grpc-status-details-bin; fails the test if ErrorInfo is missing."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no status details on {error.code()}: {error.details()}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    info = error_details_pb2.ErrorInfo()
    violations: dict[str, str] = {}
    found_info = False
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
            found_info = True
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
    assert found_info, "ErrorInfo missing from status details"
    assert info.domain == ERROR_DOMAIN
    return ErrorDetails(
        error.code(), status.message, info.reason, info.domain, dict(info.metadata), violations
    )

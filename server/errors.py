"""Domain errors to gRPC status with AIP-193 details: the one table at the edge."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from repositories import errors as e

ERROR_DOMAIN = "repogate.dev"
# Where gRPC carries google.rpc.Status (grpc_status.rpc_status uses the same key).
DETAILS_KEY = "grpc-status-details-bin"

_CODES: dict[type[e.DomainError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.EtagMismatch: grpc.StatusCode.ABORTED,
    e.Conflict: grpc.StatusCode.ABORTED,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
    e.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# The gRPC retry policy's trailer: how long a client should wait before retrying.
PUSHBACK_KEY = "grpc-retry-pushback-ms"


def code_for(error: e.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: e.DomainError, request_id: str) -> Status:
    code = code_for(error)
    details = [_error_info(error.reason, {**error.metadata, "request_id": request_id})]
    if isinstance(error, e.InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    pushback = getattr(error, "pushback_ms", None)
    extra = () if pushback is None else ((PUSHBACK_KEY, str(pushback)),)
    return _status(code, error.message, details, extra)


def internal_status(request_id: str) -> Status:
    """For anything unexpected: a generic message; the details stay in the server log."""
    info = _error_info("INTERNAL_ERROR", {"request_id": request_id})
    return _status(
        grpc.StatusCode.INTERNAL,
        f"internal error; see the server log for this request id ({request_id})",
        [info],
    )


def _error_info(reason: str, metadata: dict[str, str]) -> any_pb2.Any:
    clean = {k: v for k, v in metadata.items() if v}
    return _pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=clean))


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


@dataclass(frozen=True)
class Status:
    """What an RPC ends with: as grpc.Status, plus any trailers of our own."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _status(
    code: grpc.StatusCode,
    message: str,
    details: list[any_pb2.Any],
    extra: tuple[tuple[str, str], ...] = (),
) -> Status:
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return Status(code, message, ((DETAILS_KEY, proto.SerializeToString()), *extra))

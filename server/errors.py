"""Domain errors to gRPC status with AIP-193 details: the one table at the edge."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from repositories import errors as e

ERROR_DOMAIN = "repogate.dev"

_CODES: dict[type[e.DomainError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.EtagMismatch: grpc.StatusCode.ABORTED,
    e.Conflict: grpc.StatusCode.ABORTED,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
    e.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def code_for(error: e.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: e.DomainError, request_id: str) -> grpc.Status:
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
    return _status(code, error.message, details)


def internal_status(request_id: str) -> grpc.Status:
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


def _status(code: grpc.StatusCode, message: str, details: list[any_pb2.Any]) -> grpc.Status:
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(proto)

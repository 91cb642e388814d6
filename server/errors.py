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
# What an error may echo, in bytes of UTF-8; longer text is cut and ends in "…". A client
# refuses trailers over 8 KiB (gRPC's default), and an error repeats what the client sent:
# the message travels twice (grpc-message, percent-encoded, and in the details), the
# details base64-encoded. With these caps the worst case stays under 5 KiB.
MAX_MESSAGE_BYTES = 512
MAX_FIELD_BYTES = 128
MAX_DESCRIPTION_BYTES = 256
MAX_METADATA_BYTES = 128
# The BadRequest holds as many violations as fit in this; ErrorInfo's
# `omitted_violations` says how many more there were.
MAX_VIOLATIONS_BYTES = 1024
_ELLIPSIS = "…".encode()


def code_for(error: e.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: e.DomainError, request_id: str) -> Status:
    code = code_for(error)
    metadata = {**error.metadata, "request_id": request_id}
    bad_request = None
    if isinstance(error, e.InvalidArgument) and error.violations:
        bad_request, omitted = _bad_request(error.violations)
        if omitted:
            metadata["omitted_violations"] = str(omitted)
    details = [_error_info(error.reason, metadata)]
    if bad_request is not None:
        details.append(_pack(bad_request))
    pushback = getattr(error, "pushback_ms", None)
    extra = () if pushback is None else ((PUSHBACK_KEY, str(pushback)),)
    return _status(code, error.message, details, extra)


def _bad_request(
    violations: list[e.FieldViolation],
) -> tuple[error_details_pb2.BadRequest, int]:
    """The violations that fit the budget, each cut to size; and how many did not fit."""
    bad = error_details_pb2.BadRequest()
    for index, violation in enumerate(violations):
        bad.field_violations.add(
            field=clip(violation.field, MAX_FIELD_BYTES),
            description=clip(violation.description, MAX_DESCRIPTION_BYTES),
        )
        if index and bad.ByteSize() > MAX_VIOLATIONS_BYTES:
            del bad.field_violations[-1]
            return bad, len(violations) - index
    return bad, 0


def clip(text: str, limit: int) -> str:
    """`text` if its UTF-8 is at most `limit` bytes; else as much of it as fits with "…"."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    kept = encoded[: limit - len(_ELLIPSIS)].decode(errors="ignore")
    return kept + "…"


def internal_status(request_id: str) -> Status:
    """For anything unexpected: a generic message; the details stay in the server log."""
    info = _error_info("INTERNAL_ERROR", {"request_id": request_id})
    return _status(
        grpc.StatusCode.INTERNAL,
        f"internal error; see the server log for this request id ({request_id})",
        [info],
    )


def _error_info(reason: str, metadata: dict[str, str]) -> any_pb2.Any:
    clean = {k: clip(v, MAX_METADATA_BYTES) for k, v in metadata.items() if v}
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
    message = clip(message, MAX_MESSAGE_BYTES)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return Status(code, message, ((DETAILS_KEY, proto.SerializeToString()), *extra))

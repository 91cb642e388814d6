"""Domain errors to gRPC statuses with AIP-193 details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from repositories import errors as e
from server.errors import ERROR_DOMAIN, code_for, internal_status, to_status

pytestmark = pytest.mark.unit

REQUEST_ID = "req-123"


def _decode(status: grpc.Status) -> tuple[status_pb2.Status, list[object]]:
    metadata = dict(status.trailing_metadata)
    proto = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    details: list[object] = []
    for packed in proto.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                details.append(message)
                break
        else:
            pytest.fail(f"unexpected detail {packed.type_url}")
    return proto, details


def _info(details: list[object]) -> error_details_pb2.ErrorInfo:
    infos = [d for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert len(infos) == 1
    return infos[0]


class TeapotNotFound(e.NotFound):
    """A subclass maps like its base."""


CASES = [
    (e.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (e.NotFound("user", "u1"), grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"),
    (TeapotNotFound("teapot", "t1"), grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"),
    (e.AlreadyExists("user", "email"), grpc.StatusCode.ALREADY_EXISTS, "RESOURCE_ALREADY_EXISTS"),
    (e.EtagMismatch("user", "u1"), grpc.StatusCode.ABORTED, "ETAG_MISMATCH"),
    (e.Conflict("try again"), grpc.StatusCode.ABORTED, "CONCURRENCY_CONFLICT"),
    (e.FailedPrecondition("no"), grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (e.Unavailable("down"), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
    (e.DomainError("???"), grpc.StatusCode.INTERNAL, "UNKNOWN"),
]


@pytest.mark.parametrize(
    ("error", "code", "reason"), CASES, ids=[type(c[0]).__name__ for c in CASES]
)
def test_code_and_error_info_per_domain_error(
    error: e.DomainError, code: grpc.StatusCode, reason: str
) -> None:
    assert code_for(error) == code
    status = to_status(error, REQUEST_ID)

    assert status.code == code
    assert status.details == error.message
    proto, details = _decode(status)
    assert proto.code == getattr(code_pb2, code.name) == code.value[0]
    assert proto.message == error.message
    info = _info(details)
    assert info.reason == reason
    assert info.domain == ERROR_DOMAIN == "repogate.dev"
    assert info.metadata["request_id"] == REQUEST_ID
    # Only InvalidArgument with violations carries a BadRequest.
    assert not any(isinstance(d, error_details_pb2.BadRequest) for d in details)


def test_error_info_metadata_carries_the_errors_metadata() -> None:
    _, details = _decode(to_status(e.NotFound("user", "u-9"), REQUEST_ID))
    assert dict(_info(details).metadata) == {
        "resource_type": "user",
        "id": "u-9",
        "request_id": REQUEST_ID,
    }


def test_empty_metadata_values_are_dropped() -> None:
    error = e.AlreadyExists("user", None)
    assert error.metadata["field"] == ""
    _, details = _decode(to_status(error, REQUEST_ID))
    assert dict(_info(details).metadata) == {"resource_type": "user", "request_id": REQUEST_ID}


def test_request_id_wins_over_error_metadata() -> None:
    error = e.FailedPrecondition("no", metadata={"request_id": "forged", "k": "v"})
    _, details = _decode(to_status(error, REQUEST_ID))
    assert dict(_info(details).metadata) == {"request_id": REQUEST_ID, "k": "v"}


def test_reason_override_on_invalid_argument() -> None:
    error = e.InvalidArgument.field("page_token", "is stale", reason="INVALID_PAGE_TOKEN")
    _, details = _decode(to_status(error, REQUEST_ID))
    assert _info(details).reason == "INVALID_PAGE_TOKEN"


def test_bad_request_for_invalid_argument_with_violations() -> None:
    error = e.InvalidArgument(
        "invalid request",
        [
            e.FieldViolation("user.email", "must be an email address"),
            e.FieldViolation("user.username", "is required"),
        ],
    )
    status = to_status(error, REQUEST_ID)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    _, details = _decode(status)
    assert len(details) == 2
    bad = next(d for d in details if isinstance(d, error_details_pb2.BadRequest))
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("user.email", "must be an email address"),
        ("user.username", "is required"),
    ]
    assert _info(details).reason == "INVALID_ARGUMENT"


def test_no_bad_request_for_invalid_argument_without_violations() -> None:
    _, details = _decode(to_status(e.InvalidArgument("bad", []), REQUEST_ID))
    assert len(details) == 1
    assert isinstance(details[0], error_details_pb2.ErrorInfo)


def test_internal_status_carries_no_detail() -> None:
    status = internal_status(REQUEST_ID)
    assert status.code == grpc.StatusCode.INTERNAL
    assert REQUEST_ID in status.details
    proto, details = _decode(status)
    assert proto.code == code_pb2.INTERNAL
    assert proto.message == status.details
    assert len(details) == 1
    info = _info(details)
    assert info.reason == "INTERNAL_ERROR"
    assert info.domain == ERROR_DOMAIN
    assert dict(info.metadata) == {"request_id": REQUEST_ID}


def test_status_metadata_is_only_the_details() -> None:
    status = to_status(e.NotFound("user", "u1"), REQUEST_ID)
    assert [key for key, _ in status.trailing_metadata] == ["grpc-status-details-bin"]

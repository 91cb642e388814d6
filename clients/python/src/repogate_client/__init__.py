"""A thin helper over Repogate's generated stubs (the `repogate.v1` package beside this one).

- `connect(target, tenant)` opens a channel whose every call carries `x-tenant-id` (and
  `x-transaction-id` inside `transaction()`), plus any fixed metadata such as an API key.
- `transaction(channel)` begins a transaction, sends its id on the calls made in the block,
  commits when the block ends and rolls back when it raises.
- `error_details(error)` decodes the AIP-193 details of a failed call: `ErrorInfo` and
  `BadRequest` from the `grpc-status-details-bin` trailer.

The stubs are used directly for everything else::

    from repogate.v1 import user_pb2, user_pb2_grpc

    channel = connect("127.0.0.1:50051", tenant="acme")
    users = user_pb2_grpc.UserServiceStub(channel)
    with transaction(channel):
        users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(email=..., username=...)))
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from repogate.v1 import transaction_pb2, transaction_pb2_grpc

__all__ = ["ErrorDetails", "connect", "error_details", "transaction"]

TENANT_HEADER = "x-tenant-id"
TRANSACTION_HEADER = "x-transaction-id"
_DETAILS_TRAILER = "grpc-status-details-bin"
_transaction_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "repogate_transaction_id", default=None
)


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the tenant, the current transaction and fixed metadata to every call."""

    def __init__(self, tenant: str, extra: Sequence[tuple[str, str]]) -> None:
        self._fixed = [(TENANT_HEADER, tenant), *extra]

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), *self._fixed]
        current = _transaction_id.get()
        if current is not None:
            metadata.append((TRANSACTION_HEADER, current))
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def connect(
    target: str,
    tenant: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    metadata: Sequence[tuple[str, str]] = (),
) -> grpc.Channel:
    """A channel to Repogate at `target` whose calls carry `tenant` (and `metadata`, e.g.
    `[("authorization", "Bearer ...")]`). TLS when `credentials` are given."""
    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    return grpc.intercept_channel(channel, _Metadata(tenant, metadata))


@contextmanager
def transaction(
    channel: grpc.Channel, options: transaction_pb2.TransactionOptions | None = None
) -> Iterator[transaction_pb2.Transaction]:
    """Begins a transaction on `channel` (one from `connect`); calls made in the block carry
    its id. Commits when the block ends, rolls back when it raises (and re-raises)."""
    stub = transaction_pb2_grpc.TransactionServiceStub(channel)
    begun = stub.BeginTransaction(transaction_pb2.BeginTransactionRequest(options=options))
    token = _transaction_id.set(begun.id)
    try:
        yield begun
    except BaseException:
        _transaction_id.reset(token)
        stub.Rollback(transaction_pb2.RollbackRequest(transaction_id=begun.id))
        raise
    _transaction_id.reset(token)
    stub.Commit(transaction_pb2.CommitRequest(transaction_id=begun.id))


@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call said: its code and message, and the AIP-193 details found."""

    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None = None
    bad_request: error_details_pb2.BadRequest | None = None
    others: list[Any] = field(default_factory=list)  # the other details, as packed Any

    @property
    def reason(self) -> str:
        """ErrorInfo's reason ("" when the call carried none)."""
        return self.error_info.reason if self.error_info is not None else ""


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Decodes `error` (raised by a stub call): the google.rpc.Status Repogate sends in
    `grpc-status-details-bin`, unpacked into ErrorInfo and BadRequest."""
    call: Any = error
    found = ErrorDetails(call.code(), call.details() or "")
    for key, value in call.trailing_metadata() or ():
        if key != _DETAILS_TRAILER:
            continue
        status = status_pb2.Status.FromString(value)
        info, bad, others = None, None, []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
            else:
                others.append(detail)
        return ErrorDetails(found.code, status.message or found.message, info, bad, others)
    return found

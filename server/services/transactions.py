"""repogate.v1.TransactionService: transactions across calls, and Transact."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

from google.protobuf import any_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from repogate.v1 import transaction_pb2 as pb
from repogate.v1 import transaction_pb2_grpc
from repositories.errors import DomainError, FieldViolation, InvalidArgument
from repositories.transactions import Isolation, Limits, Transaction
from server import context, parsing, validation
from server.answers import TIMESTAMP_FIELD_MAX, Answers, Encoded
from server.forwarding import Forwarder
from server.mapping import duration, timestamp
from server.units import Units

Context: TypeAlias = aio.ServicerContext
T = TypeVar("T")

ISOLATION = {
    pb.ISOLATION_LEVEL_READ_COMMITTED: Isolation.READ_COMMITTED,
    pb.ISOLATION_LEVEL_REPEATABLE_READ: Isolation.REPEATABLE_READ,
    pb.ISOLATION_LEVEL_SERIALIZABLE: Isolation.SERIALIZABLE,
}
_ISOLATION_LEVEL = {level: value for value, level in ISOLATION.items()}
MAX_CALLS = 100
# The shortest idle timeout a client may ask for.
MIN_IDLE_TIMEOUT = 0.01


@dataclass(frozen=True)
class Method:
    """A unary method of an entity service that Transact may call."""

    request_type: type[Message]
    # The full name of its response message, for an answer that comes serialized.
    response_type: str
    handler: Callable[[Any, Context], Awaitable[Message | Encoded[Any]]]


def entity_methods(services: Iterable[tuple[ServiceDescriptor, object]]) -> dict[str, Method]:
    """'repogate.v1.UserService/CreateUser' -> its request type and servicer method."""
    return {
        f"{service.full_name}/{method.name}": Method(
            GetMessageClass(method.input_type),
            method.output_type.full_name,
            getattr(servicer, method.name),
        )
        for service, servicer in services
        for method in service.methods
        if not (method.client_streaming or method.server_streaming)
    }


class TransactionService(transaction_pb2_grpc.TransactionServiceServicer):
    def __init__(
        self,
        units: Units,
        methods: Mapping[str, Method],
        forwarder: Forwarder,
        answers: Answers,
    ) -> None:
        self._units = units
        self._transactions = units.transactions
        self._methods = methods
        # Commit and Rollback name their transaction in the request: routed here.
        self._forwarder = forwarder
        self._answers = answers

    async def BeginTransaction(
        self, request: pb.BeginTransactionRequest, context: Context
    ) -> pb.Transaction:
        _outside_transaction()
        options = request.options
        isolation = _isolation(options.isolation_level, "options.isolation_level")
        idle = _idle_timeout(options, self._transactions.limits)
        tenant = _tenant()
        tx = await self._units.guarded(
            lambda _: self._units.retrying(
                lambda: self._transactions.begin(
                    tenant, read_only=options.read_only, isolation=isolation, idle_timeout=idle
                )
            )
        )
        return _message(tx)

    async def Commit(self, request: pb.CommitRequest, context: Context) -> pb.CommitResponse:
        id_, tenant = _transaction_id(request.transaction_id), _tenant()
        owner = self._forwarder.owner(id_, tenant)
        if owner is not None:
            return await self._forwarder.commit(owner, request, context)
        committed = await self._transactions.commit(id_, tenant)
        return pb.CommitResponse(commit_time=timestamp(committed))

    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.RollbackResponse:
        id_, tenant = _transaction_id(request.transaction_id), _tenant()
        owner = self._forwarder.owner(id_, tenant)
        if owner is not None:
            return await self._forwarder.rollback(owner, request, context)
        await self._transactions.rollback(id_, tenant)
        return pb.RollbackResponse()

    async def Transact(
        self, request: pb.TransactRequest, grpc_context: Context
    ) -> pb.TransactResponse:
        _outside_transaction()
        calls = [self._call(i, call) for i, call in enumerate(request.calls)]
        if not calls or len(calls) > MAX_CALLS:
            raise InvalidArgument.field("calls", f"must hold 1 to {MAX_CALLS} calls")
        isolation = _isolation(request.isolation_level, "isolation_level")
        tenant = _tenant()

        async def attempt() -> tuple[pb.TransactResponse, datetime]:
            # Its id never leaves this call: no peer can see it, nor its commit need recording.
            tx = await self._transactions.begin(tenant, isolation=isolation, shared=False)
            token = context.bind(dataclasses.replace(context.current(), transaction_id=tx.id))
            try:
                answer = pb.TransactResponse(
                    responses=[
                        _pack(await _located(i, method.handler(message, grpc_context)), method)
                        for i, (method, message) in enumerate(calls)
                    ]
                )
                # Known to be sendable before anything commits (server/answers.py).
                parts = [response.ByteSize() for response in answer.responses]
                self._answers.check(answer.ByteSize() + TIMESTAMP_FIELD_MAX, parts, "calls")
                return answer, await self._transactions.commit(tx.id, tenant)
            finally:
                context.unbind(token)
                # Nothing to do after a commit; otherwise no call's work may stay.
                await asyncio.shield(self._transactions.rollback(tx.id, tenant))

        answer, committed = await self._units.retrying(attempt)
        answer.commit_time.CopyFrom(timestamp(committed))
        return answer

    def _call(self, index: int, call: pb.TransactCall) -> tuple[Method, Message]:
        method = self._methods.get(call.method.removeprefix("/"))
        if method is None:
            raise InvalidArgument.field(
                f"calls[{index}].method", "must name a method of an entity service"
            )
        message = method.request_type()
        parsing.unpack(call.request, message, f"calls[{index}].request")
        return method, message


def _tenant() -> str:
    return context.tenant()


def _outside_transaction() -> None:
    if context.current().transaction_id is not None:
        raise InvalidArgument.field(
            context.TRANSACTION_KEY, "transactions do not nest; send this call without it"
        )


def _transaction_id(value: str) -> str:
    if not value:
        raise InvalidArgument.field("transaction_id", "is required")
    checked = context.validate_transaction_id(value, "transaction_id")
    assert checked is not None
    return checked


def _isolation(level: int, field: str) -> Isolation | None:
    if level == pb.ISOLATION_LEVEL_UNSPECIFIED:
        return None
    isolation: Isolation | None = ISOLATION.get(level)  # type: ignore[call-overload]
    if isolation is None:
        raise InvalidArgument.field(field, f"{level} is not an isolation level")
    return isolation


def _idle_timeout(options: pb.TransactionOptions, limits: Limits) -> float | None:
    if not options.HasField("idle_timeout"):
        return None
    seconds = validation.duration(options.idle_timeout, "options.idle_timeout")
    if not MIN_IDLE_TIMEOUT <= seconds <= limits.max_lifetime:
        raise InvalidArgument.field(
            "options.idle_timeout",
            f"must be from {MIN_IDLE_TIMEOUT}s to {limits.max_lifetime:g}s (the longest "
            "a transaction may live)",
        )
    return seconds


async def _located(index: int, call: Awaitable[T]) -> T:
    """Awaits one call of a Transact; its error names the call it came from."""
    try:
        return await call
    except DomainError as exc:
        exc.message = f"calls[{index}]: {exc.message}"
        exc.metadata["call_index"] = str(index)
        if isinstance(exc, InvalidArgument):
            exc.violations = [
                FieldViolation(f"calls[{index}].request.{v.field}", v.description)
                for v in exc.violations
            ]
        raise


def _message(tx: Transaction) -> pb.Transaction:
    return pb.Transaction(
        id=tx.id,
        expire_time=timestamp(tx.wall_time(tx.expires_at())),
        max_expire_time=timestamp(tx.wall_time(tx.lifetime_end)),
        read_only=tx.read_only,
        isolation_level=_ISOLATION_LEVEL[tx.isolation],
        idle_timeout=duration(tx.idle_timeout),
    )


def _pack(response: Message | Encoded[Any], method: Method) -> any_pb2.Any:
    if isinstance(response, Encoded):
        return any_pb2.Any(
            type_url=f"{_TYPE_URL_PREFIX}{method.response_type}", value=response.data
        )
    packed = any_pb2.Any()
    packed.Pack(response)
    return packed


# What Any.Pack puts before a message's full name.
_TYPE_URL_PREFIX = "type.googleapis.com/"

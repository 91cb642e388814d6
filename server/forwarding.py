"""Calls for a transaction another process owns are handed to that process.

A transaction lives in the process that began it; its id names that process and
where its peers reach it (repositories/transaction_ids.py). A call carrying
x-transaction-id that lands elsewhere, as any balancer may send it, is forwarded:
the same method with the same bytes, the caller's tenant, credentials, actor,
request id and trace context, the remaining deadline, and a cancellation that
follows the caller's. The owner's answer comes back as it was given, status and
AIP-193 details included. Commit and Rollback carry their id in the request, so
TransactionService routes them here itself.

The ForwardingInterceptor is the innermost interceptor: authentication, the
request context, metrics, tracing and the access log see a forwarded call like
any other, and an unauthenticated call is refused before it goes anywhere. The
owner checks everything again.

When the owner cannot be reached, the transaction must not commit without the
call that failed: the forwarder records it ABORTED (repositories/outcomes.py),
which keeps the owner's Commit from succeeding, and answers UNAVAILABLE naming
the owner. A call that has been forwarded once is never forwarded again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable

import grpc
from grpc import aio
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from repogate.v1 import transaction_pb2 as pb
from repositories.database import Database
from repositories.errors import DomainError, TransactionAborted, TransactionNotFound, Unavailable
from repositories.outcomes import COMMITTED, expiry, poison
from repositories.transaction_ids import Route, TransactionIds
from server import consistency, context
from server.auth.credentials import AUTHORIZATION_KEY
from server.errors import DETAILS_KEY
from server.peers import Peers

log = logging.getLogger("repogate.forwarding")

# Marks a forwarded call; its value is the forwarder's address, for the owner's logs.
FORWARDED_KEY = "x-repogate-forwarded"
_TRACESTATE_KEY = "tracestate"
_TRANSACTIONS = "/repogate.v1.TransactionService/"
_PROPAGATOR = TraceContextTextMapPropagator()
# Codes the owner's own deadline and cancellation end a call with: the owner had the
# call, and ends the transaction itself if the call was cut off mid-statement.
_OWNER_ENDED = frozenset((grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED))


class OwnerUnavailable(Unavailable):
    """The process that owns the transaction could not be reached."""

    reason = "TRANSACTION_OWNER_UNAVAILABLE"

    def __init__(self, route: Route, transaction_id: str, *, recorded: bool = True) -> None:
        # Not recorded: the database could not be told either, and the owner, if it is
        # still up, could yet commit what did reach it.
        then = (
            "the transaction can no longer commit: begin a new one and retry the whole of it"
            if recorded
            else "nor could this be recorded: roll the transaction back, begin a new one and "
            "retry the whole of it"
        )
        DomainError.__init__(
            self,
            f"transaction {transaction_id!r} lives in the server process at {route.address}, "
            f"which this call could not reach; {then}",
            metadata={"id": transaction_id, "owner": route.address, "owner_tag": route.tag},
        )


class _Unreachable(Exception):
    """The owner gave no answer of its own."""


class Forwarder:
    """Hands calls to the process that owns their transaction."""

    def __init__(self, ids: TransactionIds, peers: Peers, db: Database, max_lifetime: float):
        self._ids = ids
        self._peers = peers
        self._db = db
        self._max_lifetime = max_lifetime

    def owner(self, id_: str | None, tenant: str | None) -> Route | None:
        """Where transaction `id_` lives when that is not here; None when this process
        answers: its own transaction, or an id that does not verify for `tenant`."""
        # This process's own tag: answered here, and no MAC to check (about 5 µs) for it;
        # a forgery under this tag is simply not found.
        if id_ is None or tenant is None or id_.startswith(f"{self._ids.tag}."):
            return None
        route = self._ids.route(id_, tenant)
        return None if route is None or route.tag == self._ids.tag else route

    async def forward(self, method: str, payload: bytes, ctx: aio.ServicerContext) -> bytes:
        """A call of `method` in the context's transaction, answered by its owner."""
        rc = context.current()
        id_, tenant = rc.transaction_id, rc.require_tenant()
        route = self.owner(id_, tenant)
        assert id_ is not None, "forwarded only with a transaction"
        assert route is not None, "forwarded only when owned elsewhere"
        try:
            return await self._relay(route, method, payload, ctx)
        except _Unreachable:
            recorded = await self._give_up(route, id_, tenant)
            raise OwnerUnavailable(route, id_, recorded=recorded is not None) from None

    async def commit(
        self, route: Route, request: pb.CommitRequest, ctx: aio.ServicerContext
    ) -> pb.CommitResponse:
        id_ = request.transaction_id
        try:
            path = _TRANSACTIONS + "Commit"
            reply = await self._relay(route, path, request.SerializeToString(), ctx)
        except _Unreachable:
            recorded = await self._give_up(route, id_, context.tenant())
            if recorded is None:
                raise OwnerUnavailable(route, id_, recorded=False) from None
            if recorded == COMMITTED:
                # What the owner answers a retried Commit of a committed transaction.
                why = f"it has ended ({COMMITTED})"
                raise TransactionNotFound(id_, why, state=COMMITTED) from None
            raise TransactionAborted(
                id_, f"a call of it failed to reach its owner at {route.address}"
            ) from None
        return pb.CommitResponse.FromString(reply)

    async def rollback(
        self, route: Route, request: pb.RollbackRequest, ctx: aio.ServicerContext
    ) -> pb.RollbackResponse:
        try:
            path = _TRANSACTIONS + "Rollback"
            reply = await self._relay(route, path, request.SerializeToString(), ctx)
        except _Unreachable:
            # Recorded, it can no longer commit: as good as rolled back.
            if await self._give_up(route, request.transaction_id, context.tenant()) is None:
                raise OwnerUnavailable(route, request.transaction_id, recorded=False) from None
            return pb.RollbackResponse()
        return pb.RollbackResponse.FromString(reply)

    async def _relay(
        self, route: Route, method: str, payload: bytes, ctx: aio.ServicerContext
    ) -> bytes:
        """The owner's answer; its error status through ctx.abort. _Unreachable when it
        gave none: the connection failed, the owner restarted (its address, another
        tag: this process), or the call was forwarded here already."""
        metadata = ctx.invocation_metadata() or ()
        if route.address in ("", self._ids.address) or _get(metadata, FORWARDED_KEY):
            raise _Unreachable
        call = self._peers.method(route.address, method)(
            payload, metadata=self._metadata(metadata), timeout=ctx.time_remaining()
        )
        try:
            # Cancelling this task (the caller cancelled, or its deadline passed)
            # cancels the call to the owner.
            reply: bytes = await call
        except aio.AioRpcError as exc:
            trailers = tuple((key, value) for key, value in exc.trailing_metadata() or ())
            if exc.code() not in _OWNER_ENDED and _get(trailers, DETAILS_KEY) is None:
                log.warning(
                    "transaction owner at %s unreachable: %s %s",
                    route.address,
                    exc.code().name,
                    exc.details(),
                )
                raise _Unreachable from exc
            await ctx.abort(exc.code(), exc.details() or "", trailers)
        # The owner's consistency token (a Commit's, with read replicas): signed with the
        # fleet's key, so the caller may send it to any process.
        token = _get(await call.trailing_metadata() or (), consistency.KEY)
        if token is not None:
            ctx.set_trailing_metadata(((consistency.KEY, token),))
        return reply

    def _metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> list[tuple[str, str]]:
        """What the owner reads of the caller's metadata, as this process read it."""
        rc = context.current()
        carried = [
            (context.TENANT_KEY, rc.tenant),
            (context.REQUEST_ID_KEY, rc.request_id),
            (context.ACTOR_KEY, rc.actor),
            (context.TRANSACTION_KEY, rc.transaction_id),
            (AUTHORIZATION_KEY, _get(metadata, AUTHORIZATION_KEY)),
            (FORWARDED_KEY, self._ids.address),
        ]
        trace: dict[str, str] = {}
        _PROPAGATOR.inject(trace)  # this process's span, when one is recording
        if not trace:
            trace = {
                key: value
                for key in (context.TRACEPARENT_KEY, _TRACESTATE_KEY)
                if isinstance(value := _get(metadata, key), str)
            }
        carried += trace.items()
        return [(key, value) for key, value in carried if isinstance(value, str)]

    async def _give_up(self, route: Route, id_: str, tenant: str) -> str | None:
        """Keeps the transaction from committing without the call that failed to reach
        its owner; returns what is recorded (COMMITTED when it had already), or None
        when the database could not be told."""
        try:
            return await poison(self._db, id_, tenant, expiry(self._max_lifetime))
        except Exception:
            log.warning("could not record transaction %s as aborted", id_, exc_info=True)
            return None


def _get(metadata: Iterable[tuple[str, str | bytes]], key: str) -> str | bytes | None:
    return next((value for k, value in metadata if k == key), None)


class ForwardingInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """For a call whose transaction another process owns, a handler that forwards it
    as bytes; for every other call, the method's own."""

    def __init__(self, forwarder: Forwarder, services: Collection[str]) -> None:
        self._forwarder = forwarder
        self._prefixes = tuple(f"/{service}/" for service in services)
        self._forwarding: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or handler.unary_unary is None or not method.startswith(self._prefixes):
            return handler
        # The first of each key, as the request context reads them.
        id_ = tenant = None
        for key, value in details.invocation_metadata or ():
            if key == context.TRANSACTION_KEY and id_ is None:
                id_ = value
            elif key == context.TENANT_KEY and tenant is None:
                tenant = value
        if not isinstance(id_, str) or not isinstance(tenant, str):
            return handler
        if self._forwarder.owner(id_, tenant) is None:
            return handler
        return self._handler(method)

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        handler = self._forwarding.get(method)
        if handler is None:
            forwarder = self._forwarder

            async def forward(payload: bytes, ctx: aio.ServicerContext) -> bytes:
                return await forwarder.forward(method, payload, ctx)

            handler = self._forwarding[method] = grpc.unary_unary_rpc_method_handler(forward)
        return handler

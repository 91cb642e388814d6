"""Interceptors that wrap a handler's behaviour, and the status code a call ends with.

Tracing and metrics both watch Repogate's own unary methods from outside the
request interceptor, so both need the code the client will receive: the one
`context.abort()` set, UNKNOWN for an exception grpc.aio turns into a status,
or the code of a call the client cancelled or let expire.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

log = logging.getLogger("repogate.rpc")

Behaviour = Callable[[Any, aio.ServicerContext], Awaitable[Any]]
Deserializer = Callable[[bytes], Any]
Serializer = Callable[[Any], bytes] | None

# Codes that mean the server failed; the rest are the caller's doing or an answer.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.DATA_LOSS,
    }
)


def split_method(method: str) -> tuple[str, str]:
    """'/repogate.v1.UserService/GetUser' -> ('repogate.v1.UserService', 'GetUser')."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


# grpc.health.v1.Health and grpc.reflection.*: open to anyone, outside the tenant model.
EXEMPT = "/grpc."


class BehaviourInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps the behaviour of each unary method once, keeping its serializers; gRPC's
    own services (`exempt`: health and reflection) pass untouched. Every other service
    is Repogate's, built in or declared by a schema (REPOGATE_SCHEMA)."""

    # Streaming methods are never wrapped; an interceptor that must see every call
    # (authentication) refuses to serve them instead of letting them pass.
    refuses_streaming = False

    def __init__(self, exempt: str = EXEMPT) -> None:
        self._exempt = exempt
        # By method and behaviour: a method has two handlers, its own and the one that
        # forwards it to the process owning its transaction (server/forwarding.py).
        self._wrapped: dict[tuple[str, Behaviour], grpc.RpcMethodHandler] = {}

    @abc.abstractmethod
    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        """The behaviour to run in place of `behaviour` for calls of `method`."""

    def deserializer(self, deserializer: Deserializer | None) -> Deserializer | None:
        """The request deserializer the wrapped handler uses: the same one, unless a
        subclass must see requests that do not parse."""
        return deserializer

    def serializer(self, serialize: Serializer) -> Serializer:
        """The response serializer to use in place of `serialize`; the same by default."""
        return serialize

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(self._exempt):
            return handler
        if handler.unary_unary is None:
            if self.refuses_streaming:
                log.warning("not serving %s: %s wraps unary methods only", method, self)
                return None
            return handler
        key = (method, handler.unary_unary)
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = grpc.unary_unary_rpc_method_handler(
                self.wrap(handler.unary_unary, method),
                request_deserializer=self.deserializer(handler.request_deserializer),
                response_serializer=self.serializer(handler.response_serializer),
            )
        return wrapped


def final_code(ctx: aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The code the client receives for a behaviour that returned (`error` None) or
    raised `error`."""
    code: grpc.StatusCode | None = ctx.code()  # set by abort() and set_code()
    if error is None or isinstance(error, aio.AbortError):
        return code or grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        # grpc.aio cancels the handler when its client goes away or its deadline passes.
        remaining = ctx.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    # grpc.aio answers any other exception with the code set so far, else UNKNOWN.
    if code is None or code == grpc.StatusCode.OK:
        return grpc.StatusCode.UNKNOWN
    return code

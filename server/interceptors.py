"""The request interceptor: request context in, AIP-193 errors out.

It wraps the handler's behaviour (as OpenTelemetry's aio interceptor does)
rather than the call, so the servicer runs inside it with the context bound
and any exception it raises is turned into a status here and nowhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc
from grpc import aio

from repositories.errors import DomainError
from server import context, errors

log = logging.getLogger("repogate.rpc")

Behaviour = Callable[[Any, aio.ServicerContext], Awaitable[Any]]


def service_of(method: str) -> str:
    """'/repogate.v1.UserService/GetUser' -> 'repogate.v1.UserService'."""
    return method.rsplit("/", 2)[-2]


class RequestInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Applies to Repogate's own services; health and reflection pass untouched."""

    def __init__(self, tenant_scoped: Collection[str], prefix: str = "/repogate.") -> None:
        self._tenant_scoped = frozenset(tenant_scoped)
        self._prefix = prefix
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(self._prefix) or handler.unary_unary is None:
            return handler
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            tenant_required = service_of(method) in self._tenant_scoped
            wrapped = grpc.unary_unary_rpc_method_handler(
                _bounded(handler.unary_unary, tenant_required),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            self._wrapped[method] = wrapped
        return wrapped


def _bounded(behaviour: Behaviour, tenant_required: bool) -> Behaviour:
    async def run(request: Any, ctx: aio.ServicerContext) -> Any:
        remaining = ctx.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        rc = context.from_metadata(ctx.invocation_metadata() or (), deadline)
        token = context.bind(rc)
        try:
            if tenant_required:
                rc.require_tenant()
                context.validate_actor(rc.actor)
                context.validate_transaction_id(rc.transaction_id)
            return await behaviour(request, ctx)
        except DomainError as exc:
            await _abort(ctx, errors.to_status(exc, rc.request_id))
        except aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error (request_id=%s)", rc.request_id)
            await _abort(ctx, errors.internal_status(rc.request_id))
        finally:
            context.unbind(token)
        raise AssertionError("unreachable: abort raises")

    return run


async def _abort(ctx: aio.ServicerContext, status: grpc.Status) -> None:
    await ctx.abort(status.code, status.details, status.trailing_metadata)

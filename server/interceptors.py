"""The request interceptor: request context in, AIP-193 errors out, each call recorded
(counted, logged, and given its span when tracing is on).

It wraps the handler's behaviour (as OpenTelemetry's aio interceptor does)
rather than the call, so the servicer runs inside it with the context bound
and any exception it raises is turned into a status here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Any

import grpc
from grpc import aio

from repositories.errors import DomainError
from server import access, answers, context, errors, parsing
from server.call_spans import CallSpans, MethodSpans
from server.call_stats import CallStats, MethodCalls
from server.drain import Drain, ShuttingDown
from server.wrapping import (
    Behaviour,
    BehaviourInterceptor,
    Deserializer,
    Serializer,
    final_code,
    split_method,
)

log = logging.getLogger("repogate.rpc")


def service_of(method: str) -> str:
    """'/repogate.v1.UserService/GetUser' -> 'repogate.v1.UserService'."""
    return split_method(method)[0]


class RequestInterceptor(BehaviourInterceptor):
    """Applies to Repogate's own services; health and reflection pass untouched."""

    def __init__(
        self,
        tenant_scoped: Collection[str],
        calls: CallStats | None = None,
        drain: Drain | None = None,
        spans: CallSpans | None = None,
    ) -> None:
        """`calls`: where calls are counted; `spans`: what starts each call's span,
        None when tracing is off."""
        super().__init__()
        self._tenant_scoped = frozenset(tenant_scoped)
        self._calls = calls
        self._drain = drain or Drain()
        self._spans = spans

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        tenant_required = service_of(method) in self._tenant_scoped
        calls = self._calls.of(method) if self._calls else None
        spans = self._spans.of(method) if self._spans else None
        return _bounded(behaviour, tenant_required, calls, method, self._drain, spans)

    def serializer(self, serialize: Serializer) -> Serializer:
        # Writes answer with their response already serialized (server/answers.py).
        return answers.passing(serialize)

    def deserializer(self, deserializer: Deserializer | None) -> Deserializer | None:
        # A request that does not parse arrives as an Unparsable, refused below.
        return parsing.tolerant(deserializer)


def _bounded(
    behaviour: Behaviour,
    tenant_required: bool,
    calls: MethodCalls | None,
    method: str,
    drain: Drain,
    spans: MethodSpans | None,
) -> Behaviour:
    async def run(request: Any, ctx: aio.ServicerContext) -> Any:
        started = time.perf_counter()
        if calls is not None:
            calls.started += 1
        code = grpc.StatusCode.OK
        remaining = ctx.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        rc = context.from_metadata(ctx.invocation_metadata() or (), deadline)
        token = context.bind(rc)
        context.note_caller(None)
        admitted = False
        span = None
        try:
            if spans is not None:
                # First: a call refused below (shutting down, no tenant) has its span too.
                span = spans.start(rc, ctx)
            drain.admit()
            admitted = True
            if tenant_required:
                rc.require_tenant()
                context.validate_actor(rc.actor)
                context.validate_transaction_id(rc.transaction_id)
            if isinstance(request, parsing.Unparsable):
                raise request.error()
            return await behaviour(request, ctx)
        except DomainError as exc:
            status = errors.to_status(exc, rc.request_id)
            code = status.code
            await _abort(ctx, status)
        except asyncio.CancelledError as exc:
            if not drain.cut():
                code = final_code(ctx, exc)
                raise
            # Cancelled by the drain at the end of the shutdown grace, not by its client.
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            status = errors.to_status(ShuttingDown(cut=True), rc.request_id)
            code = status.code
            await _abort(ctx, status)
        except aio.AbortError as exc:
            code = final_code(ctx, exc)
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error (request_id=%s)", rc.request_id)
            await _abort(ctx, errors.internal_status(rc.request_id))
        finally:
            if admitted:
                drain.leave()
            context.unbind(token)
            elapsed = time.perf_counter() - started
            if calls is not None:
                calls.ended(code, elapsed)
            if access.enabled():
                ids = None if span is None else span[0].get_span_context()
                access.record(method, rc, code, elapsed, ctx.peer(), context.caller(), ids)
            if span is not None:
                MethodSpans.end(span, ctx, code)
        raise AssertionError("unreachable: abort raises")

    return run


async def _abort(ctx: aio.ServicerContext, status: errors.Status) -> None:
    await ctx.abort(status.code, status.details, status.trailing_metadata)

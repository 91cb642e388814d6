"""repogate.v1.CacheService: check the fields, call the tenant's cache, answer.

Backend failures arrive as CacheUnavailable (UNAVAILABLE, CACHE_UNAVAILABLE)
and reach the client as they are: whoever calls CacheService asked for the
cache, so a miss would be a lie. The resilient wrapper is for read-through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

from grpc import aio

from repogate.v1 import cache_pb2 as pb
from repogate.v1 import cache_pb2_grpc
from server import validation
from server.breaker import Breaker, BreakerPolicy
from server.cache import cache_breaker, checks
from server.cache.backend import CacheBackend
from server.cache.checks import Limits
from server.cache.tenant import TenantCache, decode_position, encode_position
from server.context import tenant
from server.page_tokens import PageTokens

Context: TypeAlias = aio.ServicerContext
T = TypeVar("T")


class CacheService(cache_pb2_grpc.CacheServiceServicer):
    def __init__(
        self,
        backend: CacheBackend,
        tokens: PageTokens,
        limits: Limits,
        breaker: Breaker | None = None,
    ) -> None:
        self._backend = backend
        self._tokens = tokens
        self._limits = limits
        # The cache's breaker, shared with read-through: open, calls fail fast.
        self._breaker = breaker or cache_breaker(BreakerPolicy())

    async def _run(self, call: Callable[[TenantCache], Awaitable[T]]) -> T:
        async with self._breaker.guard():
            return await call(TenantCache(self._backend, tenant()))

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.GetResponse:
        key = checks.key(request.key, "key")
        value = await self._run(lambda cache: cache.get(key))
        return pb.GetResponse(found=value is not None, value=value or b"")

    async def Set(self, request: pb.SetRequest, context: Context) -> pb.SetResponse:
        key = checks.key(request.key, "key")
        value = checks.value(request.value, "value", self._limits)
        ttl = checks.ttl(request, "ttl", self._limits)
        await self._run(lambda cache: cache.set(key, value, ttl))
        return pb.SetResponse()

    async def Delete(self, request: pb.DeleteRequest, context: Context) -> pb.DeleteResponse:
        keys = checks.keys(request.keys, "keys")
        deleted = await self._run(lambda cache: cache.delete(keys))
        return pb.DeleteResponse(deleted_count=deleted)

    async def GetMany(self, request: pb.GetManyRequest, context: Context) -> pb.GetManyResponse:
        keys = checks.keys(request.keys, "keys")
        found = await self._run(lambda cache: cache.get_many(keys))
        return pb.GetManyResponse(entries=[pb.CacheEntry(key=k, value=v) for k, v in found])

    async def SetMany(self, request: pb.SetManyRequest, context: Context) -> pb.SetManyResponse:
        entries = checks.entries(request.entries, "entries", self._limits)
        ttl = checks.ttl(request, "ttl", self._limits)
        await self._run(lambda cache: cache.set_many(entries, ttl))
        return pb.SetManyResponse()

    async def InvalidatePattern(
        self, request: pb.InvalidatePatternRequest, context: Context
    ) -> pb.InvalidatePatternResponse:
        pattern = checks.pattern(request.pattern, "pattern", required=True)
        deleted = await self._run(lambda cache: cache.invalidate(pattern))
        return pb.InvalidatePatternResponse(deleted_count=deleted)

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        pattern = checks.pattern(request.pattern, "pattern", required=False)
        size = validation.page_size(request.page_size)
        query = TenantCache(self._backend, tenant()).listing_query(pattern)
        position = decode_position(self._tokens, request.page_token, query)
        found, after = await self._run(lambda cache: cache.page(pattern, position, size))
        token = encode_position(self._tokens, after, query) if after else ""
        return pb.ListKeysResponse(keys=found, next_page_token=token)

    async def Increment(
        self, request: pb.IncrementRequest, context: Context
    ) -> pb.IncrementResponse:
        key = checks.key(request.key, "key")
        ttl = checks.ttl(request, "ttl", self._limits)
        value = await self._run(lambda cache: cache.increment(key, request.amount, ttl))
        return pb.IncrementResponse(value=value)

    async def Expire(self, request: pb.ExpireRequest, context: Context) -> pb.ExpireResponse:
        key = checks.key(request.key, "key")
        ttl = checks.ttl(request, "ttl", self._limits, required=True)
        existed = await self._run(lambda cache: cache.expire(key, ttl))
        return pb.ExpireResponse(existed=existed)

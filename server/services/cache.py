"""repogate.v1.CacheService: check the fields, call the tenant's cache, answer.

Backend failures arrive as CacheUnavailable (UNAVAILABLE, CACHE_UNAVAILABLE)
and reach the client as they are: whoever calls CacheService asked for the
cache, so a miss would be a lie. The resilient wrapper is for read-through.
"""

from __future__ import annotations

from typing import TypeAlias

from grpc import aio

from repogate.v1 import cache_pb2 as pb
from repogate.v1 import cache_pb2_grpc
from server import validation
from server.cache import checks
from server.cache.backend import CacheBackend
from server.cache.checks import Limits
from server.cache.tenant import TenantCache, decode_position, encode_position
from server.context import tenant
from server.page_tokens import PageTokens

Context: TypeAlias = aio.ServicerContext


class CacheService(cache_pb2_grpc.CacheServiceServicer):
    def __init__(self, backend: CacheBackend, tokens: PageTokens, limits: Limits) -> None:
        self._backend = backend
        self._tokens = tokens
        self._limits = limits

    def _cache(self) -> TenantCache:
        return TenantCache(self._backend, tenant())

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.GetResponse:
        value = await self._cache().get(checks.key(request.key, "key"))
        return pb.GetResponse(found=value is not None, value=value or b"")

    async def Set(self, request: pb.SetRequest, context: Context) -> pb.SetResponse:
        key = checks.key(request.key, "key")
        value = checks.value(request.value, "value", self._limits)
        await self._cache().set(key, value, checks.ttl(request, "ttl", self._limits))
        return pb.SetResponse()

    async def Delete(self, request: pb.DeleteRequest, context: Context) -> pb.DeleteResponse:
        deleted = await self._cache().delete(checks.keys(request.keys, "keys"))
        return pb.DeleteResponse(deleted_count=deleted)

    async def GetMany(self, request: pb.GetManyRequest, context: Context) -> pb.GetManyResponse:
        found = await self._cache().get_many(checks.keys(request.keys, "keys"))
        return pb.GetManyResponse(entries=[pb.CacheEntry(key=k, value=v) for k, v in found])

    async def SetMany(self, request: pb.SetManyRequest, context: Context) -> pb.SetManyResponse:
        entries = checks.entries(request.entries, "entries", self._limits)
        await self._cache().set_many(entries, checks.ttl(request, "ttl", self._limits))
        return pb.SetManyResponse()

    async def InvalidatePattern(
        self, request: pb.InvalidatePatternRequest, context: Context
    ) -> pb.InvalidatePatternResponse:
        pattern = checks.pattern(request.pattern, "pattern", required=True)
        return pb.InvalidatePatternResponse(deleted_count=await self._cache().invalidate(pattern))

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        pattern = checks.pattern(request.pattern, "pattern", required=False)
        size = validation.page_size(request.page_size)
        cache = self._cache()
        query = cache.listing_query(pattern)
        position = decode_position(self._tokens, request.page_token, query)
        found, after = await cache.page(pattern, position, size)
        token = encode_position(self._tokens, after, query) if after else ""
        return pb.ListKeysResponse(keys=found, next_page_token=token)

    async def Increment(
        self, request: pb.IncrementRequest, context: Context
    ) -> pb.IncrementResponse:
        key = checks.key(request.key, "key")
        ttl = checks.ttl(request, "ttl", self._limits)
        return pb.IncrementResponse(value=await self._cache().increment(key, request.amount, ttl))

    async def Expire(self, request: pb.ExpireRequest, context: Context) -> pb.ExpireResponse:
        key = checks.key(request.key, "key")
        ttl = checks.ttl(request, "ttl", self._limits, required=True)
        return pb.ExpireResponse(existed=await self._cache().expire(key, ttl))

"""The cache as read-through caching uses it: a failing backend costs a miss, not a call.

Reads and writes made on behalf of entity caching go through ResilientCache.
A backend failure (CacheUnavailable: Redis down or too slow) is swallowed, and
the backend has already counted and logged it; after repeated failures the
breaker skips the backend for a while, and reads report misses. CacheService
does not use this: its clients asked for the cache and get UNAVAILABLE.

Writes and deletions report whether they happened. A failed delete can leave a
stale entry behind until its TTL ends; callers that invalidate on write should
keep TTLs short (REPOGATE_CACHE_TTL) for that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from server.breaker import Breaker, BreakerPolicy
from server.cache.backend import CacheBackend
from server.cache.errors import CacheUnavailable
from server.cache.stats import CacheStats

log = logging.getLogger(__name__)

T = TypeVar("T")


class ResilientCache:
    def __init__(self, backend: CacheBackend, breaker: Breaker | None = None) -> None:
        self.backend = backend
        self.breaker = breaker or cache_breaker(BreakerPolicy())
        self._skipping = False  # for logging the change, not every skipped call

    @property
    def stats(self) -> CacheStats:
        """The backend's counters, with the calls skipped here in `skipped`."""
        return self.backend.stats

    async def get(self, key: str) -> bytes | None:
        return await self._call(lambda: self.backend.get(key), None)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._call(lambda: self.backend.get_many(keys), [None] * len(keys))

    async def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        return await self._call(lambda: _done(self.backend.set(key, value, ttl)), False)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> bool:
        return await self._call(lambda: _done(self.backend.set_many(items, ttl)), False)

    async def set_if_newer(self, key: str, value: bytes, ttl: float) -> bool:
        """Whether the backend answered (not whether a newer value kept it from writing)."""
        return await self._call(lambda: _done(self.backend.set_if_newer(key, value, ttl)), False)

    async def delete(self, keys: Sequence[str]) -> bool:
        return await self._call(lambda: _done(self.backend.delete(keys)), False)

    async def delete_matching(self, pattern: str) -> bool:
        return await self._call(lambda: _done(self.backend.delete_matching(pattern)), False)

    async def _call(self, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        if not self.breaker.allow():
            if not self._skipping:
                self._skipping = True
                log.warning("cache backend %s keeps failing; skipping it", self.backend.name)
            self.stats.skipped += 1
            return fallback
        try:
            result = await call()
        except CacheUnavailable:
            self.breaker.failure()
            return fallback
        except BaseException:
            self.breaker.release()  # cancelled: no verdict on the backend
            raise
        self.breaker.success()
        if self._skipping:
            self._skipping = False
            log.info("cache backend %s answers again", self.backend.name)
        return result


def cache_breaker(policy: BreakerPolicy) -> Breaker:
    """The cache's breaker: only the backend being unreachable or slow counts."""
    return Breaker("cache", policy, is_fault=lambda exc: isinstance(exc, CacheUnavailable))


async def _done(call: Awaitable[object]) -> bool:
    await call
    return True

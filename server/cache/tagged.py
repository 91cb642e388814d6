"""A backend whose keys carry their tenant as a Redis Cluster hash tag.

Wraps the cluster's backend: every key and glob going in gets its tenant in braces
(server/cache/keys.py `hash_tagged`), and every key a scan brings back loses them,
so nothing above the backend knows the cluster's key form.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.cache.backend import CacheBackend
from server.cache.keys import hash_tagged, untagged


class HashTagged:
    def __init__(self, backend: CacheBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.stats = backend.stats  # the same counters, not a copy

    async def get(self, key: str) -> bytes | None:
        return await self.backend.get(hash_tagged(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self.backend.get_many([hash_tagged(key) for key in keys])

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.backend.set(hash_tagged(key), value, ttl)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None = None) -> None:
        await self.backend.set_many([(hash_tagged(key), value) for key, value in items], ttl)

    async def delete(self, keys: Sequence[str]) -> int:
        return await self.backend.delete([hash_tagged(key) for key in keys])

    async def set_if_newer(self, key: str, value: bytes, ttl: float) -> bool:
        return await self.backend.set_if_newer(hash_tagged(key), value, ttl)

    async def scan(self, pattern: str, cursor: str, count: int) -> tuple[list[str], str]:
        found, after = await self.backend.scan(hash_tagged(pattern), cursor, count)
        return [untagged(key) for key in found], after

    async def delete_matching(self, pattern: str) -> int:
        return await self.backend.delete_matching(hash_tagged(pattern))

    async def incr(self, key: str, amount: int, ttl: float | None = None) -> int:
        return await self.backend.incr(hash_tagged(key), amount, ttl)

    async def expire(self, key: str, ttl: float) -> bool:
        return await self.backend.expire(hash_tagged(key), ttl)

    async def ping(self) -> None:
        await self.backend.ping()

    async def close(self) -> None:
        await self.backend.close()

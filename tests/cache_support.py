"""Redis for the cache tests, treated as tests/conftest.py treats PostgreSQL.

REPOGATE_TEST_REDIS_URL names the server (default redis://127.0.0.1:6379/0).
When it cannot be reached the Redis cases are skipped, loudly, unless
REPOGATE_TEST_REQUIRE_REDIS=1, which makes them fail. Tests share the database
and keep apart by key prefix or tenant.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.cache.errors import CacheUnavailable
from server.cache.memory import MemoryBackend

REDIS_URL = os.environ.get("REPOGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("REPOGATE_TEST_REQUIRE_REDIS") == "1"
# Nothing listens here: connections are refused at once.
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"
CACHE_BACKENDS = ("memory", "redis")


async def require_redis() -> None:
    """Returns when Redis answers PING; else skips the test, or fails it when required."""
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        message = f"Redis at {REDIS_URL} is unreachable: {type(exc).__name__}: {exc}"
        if REQUIRE_REDIS:
            pytest.fail(message + " (REPOGATE_TEST_REQUIRE_REDIS=1)", pytrace=False)
        pytest.skip(message)
    finally:
        await client.aclose()


class Flaky(MemoryBackend):
    """A memory backend that fails, as Redis would, while `down` is set; counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.down:
            self.stats.errors += 1
            raise CacheUnavailable()

    async def get(self, key: str) -> bytes | None:
        self._maybe_fail()
        return await super().get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._maybe_fail()
        return await super().get_many(keys)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._maybe_fail()
        await super().set(key, value, ttl)

    async def set_if_newer(self, key: str, value: bytes, ttl: float) -> bool:
        self._maybe_fail()
        return await super().set_if_newer(key, value, ttl)

    async def delete(self, keys: Sequence[str]) -> int:
        self._maybe_fail()
        return await super().delete(keys)

    async def delete_matching(self, pattern: str) -> int:
        self._maybe_fail()
        return await super().delete_matching(pattern)

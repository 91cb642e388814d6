"""The cache: backends (Redis or memory), tenant-safe keys, and the resilient wrapper
that read-through caching uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.cache.backend import CacheBackend
from server.cache.checks import Limits
from server.cache.errors import CacheUnavailable, NotInteger
from server.cache.memory import MemoryBackend
from server.cache.redis import RedisBackend
from server.cache.resilient import ResilientCache, cache_breaker
from server.cache.stats import CacheStats

if TYPE_CHECKING:
    from server.settings import Settings

__all__ = [
    "CacheBackend",
    "CacheStats",
    "CacheUnavailable",
    "Limits",
    "MemoryBackend",
    "NotInteger",
    "RedisBackend",
    "ResilientCache",
    "build",
    "cache_breaker",
    "limits",
]


def build(settings: Settings) -> CacheBackend:
    """Redis when REPOGATE_REDIS_URL is set, else an LRU in this process. Connects lazily:
    a server whose Redis is down still starts, and its cache calls fail fast."""
    if settings.redis_url:
        return RedisBackend(
            settings.redis_url,
            timeout=settings.cache_timeout,
            max_connections=settings.cache_max_connections,
        )
    return MemoryBackend(settings.cache_max_entries)


def limits(settings: Settings) -> Limits:
    return Limits(max_value_bytes=settings.cache_max_value_bytes, max_ttl=settings.cache_max_ttl)

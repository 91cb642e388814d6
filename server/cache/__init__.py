"""The cache: backends (Redis or memory), tenant-safe keys, and the resilient wrapper
that read-through caching uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.cache import topology
from server.cache.backend import CacheBackend
from server.cache.checks import Limits
from server.cache.cluster import ClusterBackend
from server.cache.errors import CacheMisconfigured, CacheUnavailable, NotInteger
from server.cache.memory import MemoryBackend
from server.cache.redis import FAILURES, RedisBackend
from server.cache.resilient import ResilientCache, cache_breaker
from server.cache.sentinel import SentinelBackend
from server.cache.stats import CacheStats
from server.cache.tagged import HashTagged

if TYPE_CHECKING:
    from server.settings import Settings

__all__ = [
    "CacheBackend",
    "CacheMisconfigured",
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
    "replicated",
    "verify",
]


def build(settings: Settings) -> CacheBackend:
    """Redis when REPOGATE_REDIS_URL is set, else an LRU in this process. Connects lazily:
    a server whose Redis is down still starts, and its cache calls fail fast."""
    if not settings.redis_url:
        return MemoryBackend(settings.cache_max_entries)
    url, timeout = settings.redis_url, settings.cache_timeout
    connections = settings.cache_max_connections
    if topology.parse(url).kind is topology.Kind.CLUSTER:
        # One tenant's keys in one slot: the multi-key commands stay on one node.
        return HashTagged(ClusterBackend(url, timeout=timeout, max_connections=connections))
    if topology.parse(url).kind is topology.Kind.SENTINEL:
        return SentinelBackend(url, timeout=timeout, max_connections=connections)
    return RedisBackend(url, timeout=timeout, max_connections=connections)


def replicated(settings: Settings) -> bool:
    """Whether the cache is a Redis with failover (a cluster or Sentinel's master)."""
    if not settings.redis_url:
        return False
    return topology.parse(settings.redis_url).kind is not topology.Kind.PLAIN


async def verify(settings: Settings) -> None:
    """Refuses, at start, a Redis that the URL's form does not fit (CacheMisconfigured):
    a plain URL reaching a cluster node, which holds only some slots' keys. A Redis
    that cannot be reached now is let be: the server starts and counts misses."""
    if not settings.redis_url:
        return
    found = topology.parse(settings.redis_url)
    if found.kind is not topology.Kind.PLAIN:
        return
    client = topology.client(found, timeout=settings.cache_timeout, max_connections=1)
    try:
        info = await client.info("cluster")
    except FAILURES:
        return
    finally:
        await client.aclose()
    if str(info.get("cluster_enabled")) == "1":
        raise CacheMisconfigured(
            "REPOGATE_REDIS_URL reaches a Redis Cluster node, which holds only some of the "
            f"keys: name the cluster as {topology.CLUSTER_FORM}"
        )


def limits(settings: Settings) -> Limits:
    return Limits(max_value_bytes=settings.cache_max_value_bytes, max_ttl=settings.cache_max_ttl)

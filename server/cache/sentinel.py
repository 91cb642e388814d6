"""The Sentinel backend: RedisBackend on the master that Sentinel names, through
redis-py's `master_for` client, which asks the sentinels again when the master is lost.

Keys are as with one Redis (one server holds them all). Only the health check differs:
it asks every sentinel, and the sentinels about the master and its replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from server.cache.errors import CacheDegraded, CacheUnavailable
from server.cache.redis import FAILURES, RedisBackend


class SentinelBackend(RedisBackend):
    async def ping(self) -> None:
        """Raises CacheDegraded unless the master answers, every sentinel answers, and
        the sentinels find no replica (nor the master) down. Not counted as cache
        errors: a replica or sentinel down costs read-through nothing."""
        manager = self._sentinels
        try:
            await self._redis.ping()
        except FAILURES as exc:
            raise CacheUnavailable() from exc
        answers = await asyncio.gather(
            *(sentinel.ping() for sentinel in manager.sentinels), return_exceptions=True
        )
        listed = len(manager.sentinels)
        asking = [s for s, a in zip(manager.sentinels, answers, strict=True) if a is True]
        if not asking:
            raise CacheDegraded(listed, listed, "no sentinel answers")
        try:
            master = await asking[0].sentinel_master(self.topology.service)
            replicas = await asking[0].sentinel_slaves(self.topology.service)
        except FAILURES as exc:
            raise CacheUnavailable() from exc
        nodes_down = [_is_down(node) for node in [master, *replicas] if isinstance(node, Mapping)]
        down = listed - len(asking) + sum(nodes_down)
        if down:
            nodes = listed + 1 + len(replicas)
            detail = "the master is down" if nodes_down[0] else ""
            raise CacheDegraded(down, nodes, detail)

    def _primaries(self) -> object:
        return self._pool.master_address  # set as each connection is opened

    @property
    def _sentinels(self) -> Sentinel:
        manager: Sentinel = self._pool.sentinel_manager
        return manager

    @property
    def _pool(self) -> SentinelConnectionPool:
        assert isinstance(self._redis, Redis)
        pool = self._redis.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        return pool


def _is_down(node: Mapping[str, Any]) -> bool:
    return bool(node.get("is_sdown") or node.get("is_odown") or node.get("is_disconnected"))

"""The Redis Cluster backend: RedisBackend's commands through redis-py's RedisCluster,
which routes each to the node owning its slot and follows MOVED and ASK.

Keys reach it hash-tagged (server/cache/tagged.py), so the keys of one command share
a slot. What spans the cluster is here: a scan walks every shard in turn, and a ping
asks every node, then the cluster's own view of who is down.

A scan cursor is `<shard>:<cursor>`: the shard is named by the lowest slot it
serves, which stays its name when a replica takes over from a failed primary; the
cursor is that shard's primary's SCAN cursor. A walk that crosses a failover
continues on the promoted replica, whose cursor positions differ: it may then
repeat keys or, for keys written meanwhile, miss some, as SCAN does across a
rehash it did not plan for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from redis.asyncio.cluster import ClusterNode, RedisCluster

from server.cache.errors import CacheDegraded, CacheUnavailable
from server.cache.redis import FAILURES, RedisBackend

# The flags CLUSTER NODES gives a node that it, or the majority, finds unreachable.
_DOWN_FLAGS = ("fail", "fail?", "noaddr")


class ClusterBackend(RedisBackend):
    # Page tokens are bound to the backend: a cluster's cursors name a shard.
    name = "redis-cluster"

    async def scan(self, pattern: str, cursor: str, count: int) -> tuple[list[str], str]:
        async with self._command:
            await self._cluster.initialize()  # the slot map, from the first call on
            shards = self._shards()
            shard, position = _split(cursor, shards[0])
            node = self._cluster.nodes_manager.get_node_from_slot(shard)
            answer = await self._cluster.execute_command(
                "SCAN", position, "MATCH", pattern, "COUNT", count, target_nodes=node
            )
        # redis-py's cluster SCAN answers ({node name: cursor}, keys).
        cursors, keys = answer
        after = cursors[node.name] if isinstance(cursors, dict) else cursors
        if int(after):
            return [_text(key) for key in keys], f"{shard}:{int(after)}"
        later = [each for each in shards if each > shard]
        return [_text(key) for key in keys], f"{later[0]}:0" if later else ""

    async def ping(self) -> None:
        """Raises CacheDegraded unless every node answers, none is marked failing, and
        the cluster serves every slot (`cluster_state:ok`). Not counted as cache
        errors: a replica down costs read-through nothing."""
        try:
            await self._cluster.initialize()
            nodes = self._cluster.get_nodes()
            answers = await asyncio.gather(
                *(self._cluster.ping(target_nodes=node) for node in nodes),
                return_exceptions=True,
            )
            info = await self._cluster.cluster_info(target_nodes=RedisCluster.RANDOM)
            listed = await self._cluster.cluster_nodes()
        except FAILURES as exc:
            raise CacheUnavailable() from exc
        state = str(info.get("cluster_state", "unknown"))
        down = max(
            sum(1 for answer in answers if isinstance(answer, BaseException)),
            sum(_is_down(each) for each in listed.values()),
        )
        if down or state != "ok":
            detail = "" if state == "ok" else f"the cluster's state is {state}"
            raise CacheDegraded(down, max(len(listed), len(nodes)), detail)

    async def _replication(self) -> list[Mapping[str, object]]:
        primaries = self._cluster.get_primaries()
        return list(
            await asyncio.gather(
                *(self._cluster.info("replication", target_nodes=node) for node in primaries)
            )
        )

    def _primaries(self) -> object:
        return frozenset(node.name for node in self._cluster.get_primaries())

    @property
    def _cluster(self) -> RedisCluster:
        assert isinstance(self._redis, RedisCluster)
        return self._redis

    def _shards(self) -> list[int]:
        """The lowest slot of each shard, in order; CacheUnavailable before redis-py
        has a slot map."""
        lowest: dict[str, int] = {}
        for slot, nodes in self._cluster.nodes_manager.slots_cache.items():
            primary: ClusterNode = nodes[0]
            if slot < lowest.get(primary.name, slot + 1):
                lowest[primary.name] = slot
        if not lowest:
            raise CacheUnavailable()
        return sorted(lowest.values())


def _split(cursor: str, first: int) -> tuple[int, int]:
    if not cursor:
        return first, 0
    shard, _, position = cursor.partition(":")
    return int(shard), int(position)


def _is_down(node: Mapping[str, object]) -> bool:
    flags = str(node.get("flags", "")).split(",")
    return any(flag in _DOWN_FLAGS for flag in flags) or node.get("connected") is False


def _text(key: bytes | str) -> str:
    return key if isinstance(key, str) else key.decode(errors="replace")

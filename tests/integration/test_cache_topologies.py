"""Redis Cluster and Sentinel clients that cannot reach a node fail as any cache does:
CacheUnavailable, which read-through counts as a miss, never a failed call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.cache import ResilientCache
from server.cache.cluster import ClusterBackend
from server.cache.errors import CacheUnavailable
from server.cache.redis import RedisBackend
from server.cache.tagged import HashTagged

pytestmark = pytest.mark.integration

# Nothing listens on port 1: connections are refused at once.
UNREACHABLE = {
    "cluster": "redis+cluster://127.0.0.1:1",
    "sentinel": "redis+sentinel://127.0.0.1:1/repogate",
}


@pytest.fixture(params=sorted(UNREACHABLE))
async def unreachable(request: pytest.FixtureRequest) -> AsyncIterator[ResilientCache]:
    url = UNREACHABLE[request.param]
    backend = (
        HashTagged(ClusterBackend(url, timeout=1))
        if request.param == "cluster"
        else RedisBackend(url, timeout=1)
    )
    yield ResilientCache(backend)
    await backend.close()


async def test_no_reachable_node_is_a_miss(unreachable: ResilientCache) -> None:
    assert await unreachable.get("rg:v1:e:users:1:acme:x") is None
    assert await unreachable.set_if_newer("rg:v1:e:users:1:acme:x", b"0" * 21, 5) is False
    assert await unreachable.delete_matching("rg:v1:e:*") is False
    assert unreachable.stats.errors == 3


async def test_no_reachable_node_is_unavailable_to_cache_calls(
    unreachable: ResilientCache,
) -> None:
    backend = unreachable.backend
    with pytest.raises(CacheUnavailable):
        await backend.get_many(["rg:v1:c:acme:a", "rg:v1:c:acme:b"])
    with pytest.raises(CacheUnavailable):
        await backend.scan("rg:v1:c:acme:*", "", 10)
    with pytest.raises(CacheUnavailable):
        await backend.ping()

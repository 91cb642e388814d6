"""The AnythingLLM pack (schemas/anythingllm, seed 001), end to end on SQLite and
PostgreSQL: the seed's CacheRepository calls answered by repogate.v1.CacheService, as
schemas/anythingllm/README.md maps them."""

from __future__ import annotations

import json

import pytest
from google.protobuf.duration_pb2 import Duration

from repogate.v1 import cache_pb2, cache_pb2_grpc
from tests.conftest import Running
from tests.declared import Client
from tests.e2e.packs import llm
from tests.e2e.packs.llm import create_job
from tests.rpc import md

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = llm.PACK, llm.EXTENSIONS  # what the pack_server fixture serves
PACKAGE = llm.PACKAGE  # the client fixture's


@pytest.fixture
def cache(pack_server: Running) -> cache_pb2_grpc.CacheServiceStub:
    return cache_pb2_grpc.CacheServiceStub(pack_server.channel)


# ------------------------------------------------------------ CacheRepository


async def test_cache_set_get_delete(cache: cache_pb2_grpc.CacheServiceStub, client: Client) -> None:
    tenant = md(client.tenant)
    job = await create_job(client, workspace_id="w1")
    value = json.dumps({"id": job.id, "status": "pending"}).encode()

    # The seed's cache-aside read of a job: miss, read the job, set with a TTL, hit.
    miss = await cache.Get(cache_pb2.GetRequest(key=f"job:{job.id}"), metadata=tenant)
    await cache.Set(
        cache_pb2.SetRequest(key=f"job:{job.id}", value=value, ttl=Duration(seconds=3600)),
        metadata=tenant,
    )
    hit = await cache.Get(cache_pb2.GetRequest(key=f"job:{job.id}"), metadata=tenant)
    theirs = await cache.Get(
        cache_pb2.GetRequest(key=f"job:{job.id}"), metadata=md(client.tenant + "-other")
    )
    deleted = await cache.Delete(cache_pb2.DeleteRequest(keys=[f"job:{job.id}"]), metadata=tenant)

    assert not miss.found
    assert (hit.found, json.loads(hit.value)) == (True, {"id": job.id, "status": "pending"})
    assert not theirs.found
    assert deleted.deleted_count == 1
    assert not (await cache.Get(cache_pb2.GetRequest(key=f"job:{job.id}"), metadata=tenant)).found


async def test_cache_set_many_get_many(
    cache: cache_pb2_grpc.CacheServiceStub, client: Client
) -> None:
    tenant = md(client.tenant)
    entries = [cache_pb2.CacheEntry(key=f"key{n}", value=f"value{n}".encode()) for n in (1, 2)]

    await cache.SetMany(cache_pb2.SetManyRequest(entries=entries), metadata=tenant)
    got = await cache.GetMany(
        cache_pb2.GetManyRequest(keys=["key1", "absent", "key2"]), metadata=tenant
    )

    assert [(e.key, e.value) for e in got.entries] == [(e.key, e.value) for e in entries]


async def test_cache_invalidate_pattern_and_get_keys(
    cache: cache_pb2_grpc.CacheServiceStub, client: Client
) -> None:
    tenant = md(client.tenant)
    keys = ["workspace:w1:docs", "workspace:w1:chat", "workspace:w2:docs", "session:s1"]
    entries = [cache_pb2.CacheEntry(key=k, value=b"1") for k in keys]
    await cache.SetMany(cache_pb2.SetManyRequest(entries=entries), metadata=tenant)

    sessions = await cache.ListKeys(cache_pb2.ListKeysRequest(pattern="session:*"), metadata=tenant)
    invalidated = await cache.InvalidatePattern(
        cache_pb2.InvalidatePatternRequest(pattern="workspace:w1:*"), metadata=tenant
    )
    left = await cache.ListKeys(cache_pb2.ListKeysRequest(pattern="*"), metadata=tenant)

    assert list(sessions.keys) == ["session:s1"]
    assert invalidated.deleted_count == 2
    assert sorted(left.keys) == ["session:s1", "workspace:w2:docs"]


async def test_cache_increment_and_expire(
    cache: cache_pb2_grpc.CacheServiceStub, client: Client
) -> None:
    tenant = md(client.tenant)

    first = await cache.Increment(
        cache_pb2.IncrementRequest(key="counter", amount=5), metadata=tenant
    )
    second = await cache.Increment(
        cache_pb2.IncrementRequest(key="counter", amount=5), metadata=tenant
    )
    expired = await cache.Expire(
        cache_pb2.ExpireRequest(key="counter", ttl=Duration(seconds=300)), metadata=tenant
    )
    gone = await cache.Expire(
        cache_pb2.ExpireRequest(key="counter", ttl=Duration()), metadata=tenant
    )

    assert (first.value, second.value) == (5, 10)
    assert expired.existed
    assert gone.existed
    assert not (await cache.Get(cache_pb2.GetRequest(key="counter"), metadata=tenant)).found

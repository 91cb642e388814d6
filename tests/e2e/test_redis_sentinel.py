"""A Repogate on a master that Sentinel watches, set up by the test (a master, a
replica, three sentinels): cache calls and read-through through Sentinel, and a master
killed under load or after a write its replica missed: no failed entity call, no stale
value."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf.duration_pb2 import Duration

from repogate.v1 import admin_pb2, admin_pb2_grpc, cache_pb2_grpc
from repogate.v1 import cache_pb2 as pb
from tests import redis_topologies
from tests.e2e import redis_load
from tests.e2e.support import StartRepogate, create, get
from tests.e2e.test_read_through import errors, failovers, hits, rename
from tests.polling import eventually
from tests.rpc import md

pytestmark = pytest.mark.e2e


async def test_cache_calls_and_read_through_go_to_the_master(
    own_postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    with redis_topologies.sentinel() as setup:
        app = await start_repogate(
            database_url=own_postgresql_url, redis_url=setup.url, purge_interval=0
        )
        feed = app.app.feed
        assert feed is not None
        # The backstop drops every entity entry as it starts following the change log.
        await eventually(lambda: feed.following, "the change log's backstop to start")
        stub = cache_pb2_grpc.CacheServiceStub(app.channel)
        entries = [pb.CacheEntry(key=f"k{i}", value=b"%d" % i) for i in range(20)]
        ttl = Duration(seconds=600)
        await stub.SetMany(pb.SetManyRequest(entries=entries, ttl=ttl), metadata=md(tenant))
        got = await stub.GetMany(pb.GetManyRequest(keys=["k3", "k19"]), metadata=md(tenant))
        assert [(e.key, e.value) for e in got.entries] == [("k3", b"3"), ("k19", b"19")]
        page = await stub.ListKeys(pb.ListKeysRequest(page_size=100), metadata=md(tenant))
        assert sorted(page.keys) == sorted(f"k{i}" for i in range(20))
        assert int(setup.master.cli("dbsize").strip()) > 0

        ann = await create(app.users, tenant, username="ann")
        await get(app.users, tenant, ann.id)
        before = hits(app)
        assert await get(app.users, tenant, ann.id) == ann
        assert hits(app) == before + 1
        # A server started later trusts the cache at once: its master was never promoted.
        fresh = await start_repogate(
            database_url=own_postgresql_url, redis_url=setup.url, purge_interval=0
        )
        assert await get(fresh.users, tenant, ann.id) == ann
        assert hits(fresh) == 1
        assert failovers(fresh) == 0


async def test_a_master_killed_under_load_fails_no_entity_call(
    own_postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    with redis_topologies.sentinel() as setup:
        app = await start_repogate(
            database_url=own_postgresql_url,
            redis_url=setup.url,
            purge_interval=0,
            db_pool_size=8,
            cache_timeout=1,
            cache_ttl=3,
        )
        who = await redis_load.users(app, [f"{tenant}-{i}" for i in range(8)])
        old = setup.master.port

        async def drive(load: redis_load.Load) -> None:
            await redis_load.calls_reach(load, 200)
            await asyncio.to_thread(setup.master.kill)
            await eventually(
                lambda: asyncio.to_thread(lambda: setup.master_port() != old),
                "Sentinel to promote the replica",
                within=60,
            )
            await redis_load.calls_reach(load, load.calls + 300)

        load = await redis_load.run(app, who, drive)
        assert load.failures == []
        assert load.stale == []
        for id_, (owner, name) in load.last.items():
            assert (await get(app.users, owner, id_)).display_name == name
        assert setup.replica.cli("role").startswith("master")


async def test_a_write_the_promoted_replica_missed_is_not_served(
    own_postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    with redis_topologies.sentinel() as setup:
        app = await start_repogate(
            database_url=own_postgresql_url, redis_url=setup.url, purge_interval=0, cache_ttl=600
        )
        ann = await create(app.users, tenant, username="ann", display_name="before")
        await get(app.users, tenant, ann.id)
        await eventually(
            lambda: int(setup.replica.cli("dbsize").strip()) > 0, "the entry to replicate"
        )
        await asyncio.to_thread(setup.master.cut_replication)
        await eventually(lambda: not setup.replica.replicating(), "the replica to be cut off")
        feed = app.app.feed
        assert feed is not None
        applied = feed.applier.applied
        await rename(app, tenant, ann.id, "after")  # its tombstone: on the master only
        await eventually(lambda: feed.applier.applied > applied, "the backstop to apply it")

        old = setup.master.port
        await asyncio.to_thread(setup.master.kill)
        await eventually(
            lambda: asyncio.to_thread(lambda: setup.master_port() != old),
            "Sentinel to promote the replica",
            within=60,
        )
        # A server started now (once every sentinel names the promoted replica, so that
        # no call of its fails) finds it as the master, and no change of master: it reads
        # around the cache all the same, as the replica was promoted.
        await eventually(
            lambda: asyncio.to_thread(lambda: setup.masters_named() == {setup.replica.port}),
            "every sentinel to name the promoted replica",
        )
        fresh = await start_repogate(
            database_url=own_postgresql_url, redis_url=setup.url, purge_interval=0, cache_ttl=600
        )
        # Its first reads at once: none is answered before the promotion is found.
        first = await asyncio.gather(*(get(fresh.users, tenant, ann.id) for _ in range(8)))
        assert {read.display_name for read in first} == {"after"}
        assert failovers(fresh) == 1
        assert errors(fresh) == 0
        # The next read reconnects, through the sentinels, to the promoted replica,
        # which holds the entry from before the write: no call of ours fails on the way.
        for _ in range(5):
            assert (await get(app.users, tenant, ann.id)).display_name == "after"


async def test_health_reflects_a_replica_or_sentinel_that_is_down(
    own_postgresql_url: str, start_repogate: StartRepogate
) -> None:
    with redis_topologies.sentinel() as setup:
        app = await start_repogate(
            database_url=own_postgresql_url, redis_url=setup.url, purge_interval=0
        )
        admin = admin_pb2_grpc.AdminServiceStub(app.channel)

        async def cache_error() -> str:
            report = await admin.CheckHealth(admin_pb2.CheckHealthRequest())
            return next(d.error for d in report.dependencies if d.name == "cache")

        assert await cache_error() == ""
        await asyncio.to_thread(setup.sentinels[2].kill)
        assert (await cache_error()).startswith("1 of 5 cache nodes are down")
        await asyncio.to_thread(setup.replica.kill)

        async def replica_seen_down() -> bool:
            return (await cache_error()).startswith("2 of 5 cache nodes are down")

        await eventually(replica_seen_down, "the sentinels to flag the replica down")
        await asyncio.to_thread(setup.replica.restart)
        await asyncio.to_thread(setup.sentinels[2].restart)

        async def healthy() -> bool:
            return await cache_error() == ""

        await eventually(healthy, "every node to be seen up again", within=30)

"""A Repogate on a Redis Cluster of the test's own (3 primaries, a replica each):
CacheService over many tenants, complete listings across nodes, read-through of
entity calls, health that sees every node, a plain URL refused, and a primary killed
under load costing no entity call and serving no stale value."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from google.protobuf.duration_pb2 import Duration

from repogate.v1 import admin_pb2, admin_pb2_grpc, cache_pb2_grpc
from repogate.v1 import cache_pb2 as pb
from repositories.database import Database, create_engine
from server.cache import CacheMisconfigured
from tests import redis_topologies
from tests.e2e import redis_load
from tests.e2e.support import Dedicated, StartRepogate, create, get
from tests.e2e.test_read_through import errors, failovers, hits, rename, rename_behind_its_back
from tests.polling import eventually
from tests.rpc import md

pytestmark = pytest.mark.e2e


TTL = Duration(seconds=600)


@pytest.fixture(scope="module")
def cluster() -> Iterator[redis_topologies.Cluster]:
    with redis_topologies.cluster() as made:
        yield made


@pytest.fixture
async def app(
    cluster: redis_topologies.Cluster, own_postgresql_url: str, start_repogate: StartRepogate
) -> Dedicated:
    return await start_repogate(
        database_url=own_postgresql_url, redis_url=cluster.url, purge_interval=0, db_pool_size=4
    )


def tenants(count: int, tenant: str) -> list[str]:
    return [f"{tenant}-{i}" for i in range(count)]


async def list_all(stub: cache_pb2_grpc.CacheServiceStub, tenant: str, pattern: str) -> list[str]:
    found, token = [], ""
    while True:
        request = pb.ListKeysRequest(pattern=pattern, page_size=7, page_token=token)
        page = await stub.ListKeys(request, metadata=md(tenant))
        found += page.keys
        token = page.next_page_token
        if not token:
            return found


async def test_cache_calls_over_many_tenants_are_whole(
    app: Dedicated, cluster: redis_topologies.Cluster, tenant: str
) -> None:
    stub = cache_pb2_grpc.CacheServiceStub(app.channel)
    everyone = tenants(24, tenant)
    for who in everyone:
        entries = [pb.CacheEntry(key=f"k{i}", value=f"{who}/{i}".encode()) for i in range(30)]
        await stub.SetMany(pb.SetManyRequest(entries=entries, ttl=TTL), metadata=md(who))
        await stub.Set(pb.SetRequest(key="single", value=b"1", ttl=TTL), metadata=md(who))

    # The tenants' keys are spread over every primary, so each listing below spans nodes
    # as a whole (ListKeys on one node's SCAN would see a third of the tenants).
    holding = [n for n in cluster.primaries() if int(n.cli("dbsize").strip()) > 0]
    assert len(holding) == 3
    for who in everyone:
        got = await stub.GetMany(
            pb.GetManyRequest(keys=[f"k{i}" for i in range(30)] + ["absent"]), metadata=md(who)
        )
        assert {e.key: e.value for e in got.entries} == {
            f"k{i}": f"{who}/{i}".encode() for i in range(30)
        }
        assert sorted(await list_all(stub, who, "*")) == sorted(
            [f"k{i}" for i in range(30)] + ["single"]
        )
        counted = await stub.Increment(pb.IncrementRequest(key="n", amount=3), metadata=md(who))
        assert counted.value == 3

    gone = await stub.InvalidatePattern(
        pb.InvalidatePatternRequest(pattern="k1*"), metadata=md(everyone[0])
    )
    assert gone.deleted_count == 11  # k1, k10..k19
    assert sorted(await list_all(stub, everyone[0], "k*")) == sorted(
        f"k{i}" for i in range(30) if not str(i).startswith("1")
    )
    # Another tenant's keys are untouched.
    assert len(await list_all(stub, everyone[1], "k1*")) == 11


async def test_entity_reads_are_cached_and_writes_seen(
    app: Dedicated, own_postgresql_url: str, tenant: str
) -> None:
    ann = await create(app.users, tenant, username="ann")
    first = await get(app.users, tenant, ann.id)
    before = hits(app)
    database = Database(create_engine(own_postgresql_url))
    try:
        await rename_behind_its_back(database, tenant, ann.id, "changed underneath")
    finally:
        await database.dispose()
    assert await get(app.users, tenant, ann.id) == first  # from the cluster
    assert hits(app) == before + 1

    await rename(app, tenant, ann.id, "renamed")
    assert (await get(app.users, tenant, ann.id)).display_name == "renamed"


async def test_servers_sharing_the_cluster_see_each_others_writes(
    app: Dedicated,
    cluster: redis_topologies.Cluster,
    own_postgresql_url: str,
    start_repogate: StartRepogate,
    tenant: str,
) -> None:
    other = await start_repogate(
        database_url=own_postgresql_url, redis_url=cluster.url, purge_interval=0, db_pool_size=4
    )
    ann = await create(app.users, tenant, username="ann")
    await get(other.users, tenant, ann.id)  # cached by the other server
    before = hits(app)
    assert await get(app.users, tenant, ann.id) == ann  # the shared entry
    assert hits(app) == before + 1

    await rename(app, tenant, ann.id, "renamed")
    assert (await get(other.users, tenant, ann.id)).display_name == "renamed"


async def test_a_server_started_later_uses_the_cache_at_once(
    app: Dedicated,
    cluster: redis_topologies.Cluster,
    own_postgresql_url: str,
    start_repogate: StartRepogate,
    tenant: str,
) -> None:
    """No primary of this cluster was ever promoted: a new server trusts its entries."""
    feed = app.app.feed
    assert feed is not None
    # The backstop drops every entry as it starts following the change log.
    await eventually(lambda: feed.following, "the change log's backstop to start")
    ann = await create(app.users, tenant, username="ann")
    await get(app.users, tenant, ann.id)  # cached
    fresh = await start_repogate(
        database_url=own_postgresql_url, redis_url=cluster.url, purge_interval=0, db_pool_size=4
    )
    assert await get(fresh.users, tenant, ann.id) == ann
    assert hits(fresh) == 1
    assert failovers(fresh) == 0


async def test_a_cluster_whose_primaries_cannot_be_asked_is_read_around(
    app: Dedicated,
    cluster: redis_topologies.Cluster,
    own_postgresql_url: str,
    start_repogate: StartRepogate,
    tenant: str,
) -> None:
    """A user that may not run INFO cannot tell whether a primary was promoted: a server
    using it assumes one was."""
    for node in cluster.primaries():
        node.cli("acl", "setuser", "noinfo", "on", ">secret", "~*", "+@all", "-info")
    ann = await create(app.users, tenant, username="ann")
    await get(app.users, tenant, ann.id)  # cached
    database = Database(create_engine(own_postgresql_url))
    try:  # only a read around the cache sees this
        await rename_behind_its_back(database, tenant, ann.id, "changed underneath")
    finally:
        await database.dispose()
    url = cluster.url.replace("redis+cluster://", "redis+cluster://noinfo:secret@")
    fresh = await start_repogate(
        database_url=own_postgresql_url, redis_url=url, purge_interval=0, db_pool_size=4
    )
    for _ in range(3):
        assert (await get(fresh.users, tenant, ann.id)).display_name == "changed underneath"
    assert failovers(fresh) == 1


async def test_a_plain_url_to_a_cluster_node_is_refused(
    cluster: redis_topologies.Cluster, start_repogate: StartRepogate
) -> None:
    node = cluster.primaries()[0]
    with pytest.raises(CacheMisconfigured, match=r"redis\+cluster://"):
        await start_repogate(redis_url=f"redis://{node.address}/0")


async def test_health_reflects_a_node_that_is_down(
    app: Dedicated, cluster: redis_topologies.Cluster
) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(app.channel)

    async def status() -> tuple[int, str]:
        report = await admin.CheckHealth(admin_pb2.CheckHealthRequest())
        cache = next(d for d in report.dependencies if d.name == "cache")
        return report.status, cache.error

    assert await status() == (admin_pb2.HEALTH_STATUS_HEALTHY, "")
    replica = cluster.replicas()[0]
    replica.kill()
    try:
        state, error = await status()
        assert state == admin_pb2.HEALTH_STATUS_DEGRADED
        assert error.startswith("1 of 6 cache nodes are down or do not answer")
    finally:
        replica.restart()
    await eventually(lambda: _healthy(admin), "the restarted replica to be seen healthy", within=30)


async def _healthy(admin: admin_pb2_grpc.AdminServiceStub) -> bool:
    report = await admin.CheckHealth(admin_pb2.CheckHealthRequest())
    return bool(report.status == admin_pb2.HEALTH_STATUS_HEALTHY)


async def test_a_primary_killed_under_load_fails_no_entity_call(
    own_postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    with redis_topologies.cluster() as cluster:
        app = await start_repogate(
            database_url=own_postgresql_url,
            redis_url=cluster.url,
            purge_interval=0,
            db_pool_size=8,
            cache_timeout=1,
            cache_ttl=3,
        )
        who = await redis_load.users(app, tenants(8, tenant))
        victim = max(cluster.primaries(), key=lambda n: int(n.cli("dbsize").strip()))

        async def drive(load: redis_load.Load) -> None:
            await redis_load.calls_reach(load, 200)
            await asyncio.to_thread(victim.kill)
            await eventually(lambda: asyncio.to_thread(cluster.state_ok), "the failover", within=60)
            await redis_load.calls_reach(load, load.calls + 300)

        load = await redis_load.run(app, who, drive)
        assert load.failures == []
        assert load.stale == []
        # And once the failover is over, a read after the last write sees it.
        for id_, (owner, name) in load.last.items():
            assert (await get(app.users, owner, id_)).display_name == name
        # Misses for a bounded window: a TTL after the last error the cache serves again.
        before = hits(app)

        async def hit_again() -> bool:
            owner, id_ = who[0]
            await get(app.users, owner, id_)
            return hits(app) > before

        await eventually(hit_again, "reads to be served from the cache again", within=30)


@pytest.mark.parametrize("failover", ["primary killed", "replica takes over"])
async def test_a_write_the_promoted_replica_missed_is_not_served(
    own_postgresql_url: str, start_repogate: StartRepogate, tenant: str, failover: str
) -> None:
    """The primary takes a write's tombstone that its replica never gets; then it dies,
    or the replica takes its slots over (CLUSTER FAILOVER TAKEOVER, as an operator
    might): the promoted replica still holds the entry from before the write."""
    with redis_topologies.cluster() as cluster:
        app = await start_repogate(
            database_url=own_postgresql_url, redis_url=cluster.url, purge_interval=0, cache_ttl=600
        )
        # Two rows: the first read after the failover meets it (and misses); the second
        # is served by a cache whose promoted replica still holds the old entries.
        both = [
            await create(app.users, tenant, username=name, display_name="before")
            for name in ("ann", "bob")
        ]
        for user in both:
            await get(app.users, tenant, user.id)  # cached, and replicated
        primary = cluster.primary_of(tenant)
        replica = cluster.replica_of(primary)
        await asyncio.to_thread(primary.cut_replication)
        await eventually(lambda: not replica.replicating(), "the replica to be cut off")

        feed = app.app.feed
        assert feed is not None
        applied = feed.applier.applied
        for user in both:
            await rename(app, tenant, user.id, "after")  # tombstones: on the primary only
        # The change log's backstop has applied them too (to the primary) before it dies.
        await eventually(lambda: feed.applier.applied >= applied + 2, "the backstop")
        if failover == "primary killed":
            # The next read finds the lost primary gone and, through redis-py's retry
            # after its slot map is refreshed, may reach the promoted replica's entry.
            await asyncio.to_thread(primary.kill)
        else:
            # The next read is answered MOVED by the old primary, which redis-py follows
            # to the promoted replica's entry: no call fails on the way.
            await asyncio.to_thread(replica.cli, "cluster", "failover", "takeover")
        await eventually(
            lambda: asyncio.to_thread(lambda: replica.cli("role").startswith("master")),
            "the promotion",
            within=60,
        )
        await eventually(lambda: asyncio.to_thread(cluster.state_ok), "the failover", within=60)
        # A server started after the failover (told of live nodes only, once every node
        # has taken the promotion in, so that no call of its fails) sees no primary
        # change, only a primary promoted since it started: it reads around the cache.
        await eventually(
            lambda: asyncio.to_thread(cluster.all_see_primary, replica),
            "every node to see the promotion",
        )
        live = "redis+cluster://" + ",".join(n.address for n in cluster.primaries())
        fresh = await start_repogate(
            database_url=own_postgresql_url, redis_url=live, purge_interval=0, cache_ttl=600
        )
        # Its first reads at once: none is answered before the promotion is found.
        first = [get(fresh.users, tenant, user.id) for user in both for _ in range(4)]
        assert {read.display_name for read in await asyncio.gather(*first)} == {"after"}
        for user in both:
            assert (await get(fresh.users, tenant, user.id)).display_name == "after"
        assert failovers(fresh) == 1
        assert errors(fresh) == 0
        for _ in range(5):
            for user in both:
                assert (await get(app.users, tenant, user.id)).display_name == "after"

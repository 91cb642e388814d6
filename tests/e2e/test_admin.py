"""AdminService through a real server: pool, health and statistics that tell the truth."""

from __future__ import annotations

import uuid

import grpc
import pytest

from repogate.v1 import admin_pb2 as pb
from repogate.v1 import admin_pb2_grpc, user_pb2
from tests.cache_support import CLOSED_REDIS_URL
from tests.e2e.support import Dedicated, StartRepogate, create, fails, get
from tests.e2e.test_transactions import TxStub, begin, rollback

pytestmark = pytest.mark.e2e


def admin(app: Dedicated) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(app.channel)


async def pool(app: Dedicated) -> pb.PoolStatus:
    return await admin(app).GetPoolStatus(pb.GetPoolStatusRequest())


async def test_the_pool_shows_what_transactions_hold(
    database_url: str, backend: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(
        database_url=database_url, db_pool_size=4, db_max_overflow=2, purge_interval=0
    )
    tx = await begin(TxStub(app.channel), tenant, read_only=True)

    holding = await pool(app)
    await rollback(TxStub(app.channel), tenant, tx)
    after = await pool(app)

    assert (holding.dialect, holding.size, holding.max_overflow) == (backend, 4, 2)
    assert (holding.checked_out, holding.open_transactions) == (1, 1)
    assert (after.checked_out, after.open_transactions) == (0, 0)
    assert after.checked_in >= 1


async def test_the_pools_overflow_counts_connections_beyond_its_size(
    database_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    """Never SQLAlchemy's internal counter, which starts at -size: 0 until the pool opens
    more than `size` connections, then how many more."""
    app = await start_repogate(
        database_url=database_url,
        db_pool_size=4,
        db_max_overflow=2,
        max_transactions=5,
        tenant_max_concurrency=0,
        purge_interval=0,
    )
    await create(app.users, tenant, username="ann")
    within = await pool(app)
    txs = [await begin(TxStub(app.channel), tenant, read_only=True) for _ in range(5)]
    beyond = await pool(app)
    for tx in txs:
        await rollback(TxStub(app.channel), tenant, tx)
    back = await pool(app)

    assert (within.size, within.checked_out, within.overflow) == (4, 0, 0)
    assert (beyond.checked_out, beyond.overflow, beyond.max_overflow) == (5, 1, 2)
    assert (back.checked_out, back.overflow, back.checked_in) == (0, 0, 4)


async def test_health_is_healthy_with_round_trips(
    database_url: str, start_repogate: StartRepogate
) -> None:
    app = await start_repogate(database_url=database_url, db_pool_size=4, purge_interval=0)

    report = await admin(app).CheckHealth(pb.CheckHealthRequest())

    assert report.status == pb.HEALTH_STATUS_HEALTHY
    assert [d.name for d in report.dependencies] == ["database", "cache"]
    for dependency in report.dependencies:
        assert dependency.reachable
        assert dependency.HasField("round_trip")
        assert dependency.breaker == pb.BREAKER_STATE_CLOSED
    assert report.dependencies[1].backend == "memory"


async def test_health_is_degraded_while_the_cache_is_down(
    database_url: str, start_repogate: StartRepogate
) -> None:
    app = await start_repogate(
        database_url=database_url, redis_url=CLOSED_REDIS_URL, db_pool_size=4, purge_interval=0
    )

    report = await admin(app).CheckHealth(pb.CheckHealthRequest())

    database, cache = report.dependencies
    assert report.status == pb.HEALTH_STATUS_DEGRADED
    assert database.reachable
    assert (cache.reachable, cache.backend) == (False, "redis")
    assert cache.error
    assert "127.0.0.1" not in cache.error


async def test_stats_count_calls_faults_and_latencies_by_method(
    database_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(database_url=database_url, db_pool_size=4, purge_interval=0)
    ann = await create(app.users, tenant, username="ann")
    for _ in range(5):
        await get(app.users, tenant, ann.id)
    await fails(get(app.users, tenant, str(uuid.uuid4())))
    tx = await begin(TxStub(app.channel), tenant, read_only=True)

    stats = await admin(app).GetStats(pb.GetStatsRequest())
    await rollback(TxStub(app.channel), tenant, tx)

    methods = {m.method: m for m in stats.methods}
    get_user = methods["repogate.v1.UserService/GetUser"]
    assert (get_user.count, get_user.server_errors) == (6, 0)
    assert methods["repogate.v1.UserService/CreateUser"].count == 1
    p50, p95, p99 = (d.ToTimedelta() for d in (get_user.p50, get_user.p95, get_user.p99))
    assert p50.total_seconds() > 0
    assert p50 <= p95 <= p99
    assert (stats.transactions.open, stats.transactions.begun) == (1, 1)
    # The first Get filled the cache, the other four hit it; the missing id missed.
    assert (stats.cache.backend, stats.cache.hits) == ("memory", 4)
    assert stats.cache.misses == 2
    assert stats.cache.hit_rate == pytest.approx(4 / 6)


async def test_server_faults_are_counted_as_such(
    start_repogate: StartRepogate, tmp_path, tenant: str
) -> None:
    app = await start_repogate(migrate=False)  # no tables: every user call fails inside
    await fails(get(app.users, tenant, str(uuid.uuid4())))

    stats = await admin(app).GetStats(pb.GetStatsRequest())

    get_user = {m.method: m for m in stats.methods}["repogate.v1.UserService/GetUser"]
    assert (get_user.count, get_user.server_errors) == (1, 1)


async def test_slow_statements_are_listed_without_values(
    database_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(
        database_url=database_url, db_pool_size=4, purge_interval=0, slow_statement_ms=0
    )
    secret = f"secret-{uuid.uuid4().hex[:8]}"
    await create(app.users, tenant, username=secret)
    missing = user_pb2.BatchGetUsersRequest(ids=[str(uuid.uuid4()) for _ in range(5)])
    await fails(app.users.BatchGetUsers(missing, metadata=(("x-tenant-id", tenant),)))

    stats = await admin(app).GetStats(pb.GetStatsRequest())

    statements = [s.sql for s in stats.slow_statements]
    durations = [s.duration.ToTimedelta() for s in stats.slow_statements]
    assert any(sql.startswith("INSERT INTO users") for sql in statements)
    # BatchGetUsers: an IN list (folded) on SQLite, one array parameter on PostgreSQL.
    assert any("IN (…)" in sql or "= ANY (" in sql for sql in statements)
    assert not any(secret in sql or tenant in sql for sql in statements)
    assert durations == sorted(durations, reverse=True)


async def test_admin_needs_no_tenant(database_url: str, start_repogate: StartRepogate) -> None:
    app = await start_repogate(database_url=database_url, db_pool_size=4, purge_interval=0)

    status = await pool(app)

    assert status.size == 4
    with pytest.raises(grpc.aio.AioRpcError):
        await app.users.GetUser(user_pb2.GetUserRequest(id=str(uuid.uuid4())))

"""Several `repogate serve` processes on one PostgreSQL: a write through any of them, or
straight into the database, reaches every other's cache (docs/caching.md).

Each test runs real processes on the session's PostgreSQL database. B caches a row,
then the row changes some other way; B's Get must come to show the change (within
the 10 s these tests wait; without invalidation across processes B would serve its
cached row for the whole REPOGATE_CACHE_TTL of 300 s). How long it took is printed,
never asserted.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from grpc import aio
from sqlalchemy.engine import make_url

from repogate.v1 import admin_pb2, admin_pb2_grpc, user_pb2, user_pb2_grpc
from repositories import change_log
from repositories.changes import Changes
from server import coherence
from server.cache import keys
from server.read_through import schema_version
from tests.cache_support import REDIS_URL, require_redis
from tests.conftest import _plain_dsn
from tests.e2e.test_cli import RPC_TIMEOUT, Server, cli_env, run, run_async, serving
from tests.e2e.test_transactions import TxStub, begin, commit
from tests.polling import eventually
from tests.proxy import Proxy
from tests.rpc import md

pytestmark = pytest.mark.e2e

Users = user_pb2_grpc.UserServiceStub
# Long enough for anything the machine may do; B would stay stale for 300 s.
WITHIN = 10.0


class Process:
    """A running `repogate serve` and stubs on a channel to it."""

    def __init__(self, server: Server, channel: aio.Channel) -> None:
        self.server = server
        self.users = Users(channel)
        self.txs = TxStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    async def hits(self) -> int:
        stats = await self.admin.GetStats(admin_pb2.GetStatsRequest(), timeout=RPC_TIMEOUT)
        return stats.cache.hits

    async def get(self, tenant: str, id_: str) -> user_pb2.User:
        request = user_pb2.GetUserRequest(id=id_)
        return await self.users.GetUser(request, metadata=md(tenant), timeout=RPC_TIMEOUT)


StartFleet = Callable[..., Awaitable[list[Process]]]


@pytest.fixture
async def start_fleet(tmp_path: Path, postgresql_url: str) -> AsyncIterator[StartFleet]:
    """Starts `repogate serve` processes on the session's PostgreSQL database, with small
    pools and the settings given; all are stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(count: int = 2, **settings: str) -> list[Process]:
            started = []
            for i in range(count):
                env = cli_env(
                    tmp_path,
                    database_url=postgresql_url,
                    db_pool_size="3",
                    db_max_overflow="1",
                    purge_interval="0",
                    soft_delete_retention="1",
                    access_log="false",
                    **settings,
                )
                home = tmp_path / f"p{i}"
                home.mkdir(exist_ok=True)
                server = await stack.enter_async_context(serving(env, home, env["REPOGATE_LISTEN"]))
                channel = await stack.enter_async_context(aio.insecure_channel(server.address))
                started.append(Process(server, channel))
            return started

        yield start


async def create(process: Process, tenant: str, name: str) -> user_pb2.User:
    request = user_pb2.CreateUserRequest(
        user=user_pb2.User(email=f"{name}@example.com", username=name)
    )
    return await process.users.CreateUser(request, metadata=md(tenant), timeout=RPC_TIMEOUT)


async def rename(process: Process, tenant: str, id_: str, name: str, **extra: str) -> user_pb2.User:
    request = user_pb2.UpdateUserRequest(user=user_pb2.User(id=id_, display_name=name))
    return await process.users.UpdateUser(
        request, metadata=md(tenant, **extra), timeout=RPC_TIMEOUT
    )


async def cached(process: Process, tenant: str, id_: str) -> user_pb2.User:
    """Gets the user twice through `process`; the second answer came from its cache."""
    first = await process.get(tenant, id_)
    before = await process.hits()
    second = await process.get(tenant, id_)
    assert await process.hits() == before + 1, "the second Get was not a cache hit"
    assert second == first
    return first


async def seen(
    process: Process, tenant: str, id_: str, fresh: Callable[[user_pb2.User], bool]
) -> float:
    """Polls Gets through `process` until one answers `fresh`; returns how long that took."""
    started = time.monotonic()
    last: list[user_pb2.User] = []

    async def probe() -> bool:
        last[:] = [await process.get(tenant, id_)]
        return fresh(last[0])

    await eventually(probe, f"a fresh answer from {process.server.address}", WITHIN)
    took = time.monotonic() - started
    print(f"observed staleness: {took * 1000:.0f} ms")
    return took


async def write_directly(postgresql_url: str, tenant: str, id_: str, name: str) -> None:
    """What a tool, or a Repogate process that died right after its commit, leaves: a
    committed row change and no invalidation from anyone."""
    conn = await asyncpg.connect(_plain_dsn(postgresql_url))
    try:
        changed = await conn.execute(
            "UPDATE users SET display_name = $3, version = version + 1, update_time = now() "
            "WHERE tenant_id = $1 AND id = $2",
            tenant,
            uuid.UUID(id_),
            name,
        )
    finally:
        await conn.close()
    assert changed == "UPDATE 1"


# -- without Redis: each process's memory cache hears of every write ------------------


async def test_an_update_through_one_process_is_seen_through_another(
    start_fleet: StartFleet, tenant: str
) -> None:
    a, b = await start_fleet()
    ann = await create(a, tenant, "ann")
    await cached(b, tenant, ann.id)

    updated = await rename(a, tenant, ann.id, "Ann")

    await seen(b, tenant, ann.id, lambda user: user.etag == updated.etag)
    assert await b.get(tenant, ann.id) == updated


async def test_a_transactions_writes_are_seen_through_another_process(
    start_fleet: StartFleet, tenant: str
) -> None:
    a, b = await start_fleet()
    ann = await create(a, tenant, "ann")
    await cached(b, tenant, ann.id)

    tx = await begin(a.txs, tenant)
    updated = await rename(a, tenant, ann.id, "in a transaction", x_transaction_id=tx.id)
    assert (await b.get(tenant, ann.id)).etag == ann.etag  # not committed yet
    await commit(a.txs, tenant, tx)

    await seen(b, tenant, ann.id, lambda user: user.etag == updated.etag)


async def test_a_batch_too_large_to_name_its_rows_is_seen_through_another_process(
    start_fleet: StartFleet, postgresql_url: str, tenant: str
) -> None:
    a, b = await start_fleet()
    count = change_log.MAX_ROWS + 100
    requests = [
        user_pb2.CreateUserRequest(user=user_pb2.User(email=f"u{i}@example.com", username=f"u{i}"))
        for i in range(count)
    ]
    created = await a.users.BatchCreateUsers(
        user_pb2.BatchCreateUsersRequest(requests=requests), metadata=md(tenant)
    )
    last = created.users[-1]
    await cached(b, tenant, last.id)

    async with recording(postgresql_url) as recorded:
        # One UPDATE soft-deletes them all: too many to name, so their tenant is.
        await a.users.BatchDeleteUsers(
            user_pb2.BatchDeleteUsersRequest(
                requests=[user_pb2.DeleteUserRequest(id=user.id) for user in created.users]
            ),
            metadata=md(tenant),
        )
        await seen(b, tenant, last.id, lambda user: user.HasField("delete_time"))

    assert ("users", tenant) in {table for changes in recorded for table in changes.tables}


async def test_a_purge_by_another_command_is_seen(
    start_fleet: StartFleet, tmp_path: Path, postgresql_url: str, tenant: str
) -> None:
    a, b = await start_fleet()
    ann = await create(a, tenant, "ann")
    deleted = await a.users.DeleteUser(user_pb2.DeleteUserRequest(id=ann.id), metadata=md(tenant))
    # Soft-deleted rows are still read by id, until the purge removes them.
    assert (await cached(b, tenant, ann.id)).etag == deleted.etag
    env = cli_env(tmp_path, database_url=postgresql_url)

    async def purged() -> bool:
        code, _, err = await run_async(["purge"], env, tmp_path)
        assert code == 0, err
        return not await row_exists(postgresql_url, tenant, ann.id)

    await eventually(purged, "the purge to remove the user (1 s after its deletion)", WITHIN)

    await seen_gone(b, tenant, ann.id)


async def test_a_write_straight_into_the_database_is_seen(
    start_fleet: StartFleet, postgresql_url: str, tenant: str
) -> None:
    a, b = await start_fleet()
    ann = await create(a, tenant, "ann")
    await cached(a, tenant, ann.id)
    await cached(b, tenant, ann.id)

    await write_directly(postgresql_url, tenant, ann.id, "behind their backs")

    for process in (a, b):
        await seen(process, tenant, ann.id, lambda user: user.display_name == "behind their backs")


async def row_exists(postgresql_url: str, tenant: str, id_: str) -> bool:
    conn = await asyncpg.connect(_plain_dsn(postgresql_url))
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM users WHERE tenant_id = $1 AND id = $2",
                tenant,
                uuid.UUID(id_),
            )
        )
    finally:
        await conn.close()


async def seen_gone(process: Process, tenant: str, id_: str) -> None:
    async def gone() -> bool:
        try:
            await process.get(tenant, id_)
        except aio.AioRpcError as exc:
            return exc.code() == grpc.StatusCode.NOT_FOUND
        return False

    await eventually(gone, "the purged user to be NOT_FOUND", WITHIN)


@contextlib.asynccontextmanager
async def recording(postgresql_url: str) -> AsyncIterator[list[Changes]]:
    """What the change log records meanwhile (read when the block ends)."""
    recorded: list[Changes] = []
    conn = await asyncpg.connect(_plain_dsn(postgresql_url))
    try:
        snapshot = await conn.fetchval(change_log.SNAPSHOT)
        yield recorded
        row = await conn.fetchrow(change_log.SINCE, snapshot)
        assert row is not None
        recorded += [change_log.parse(payload) for payload in row["payloads"]]
    finally:
        await conn.close()


# -- the feed breaks ------------------------------------------------------------------


async def feed_backend(postgresql_url: str, process: Process) -> int:
    """The PostgreSQL backend `process` follows the change log on, found by its
    application_name."""
    name = f"{coherence.APPLICATION_NAME}-{process.server.proc.pid}"
    conn = await asyncpg.connect(_plain_dsn(postgresql_url))
    try:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", name
        )
    finally:
        await conn.close()
    assert pid is not None, f"no backend named {name}"
    return int(pid)


async def test_while_its_feed_is_down_a_process_never_serves_a_row_it_missed(
    start_fleet: StartFleet, postgresql_url: str, tenant: str
) -> None:
    url = make_url(postgresql_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.open()
    try:
        through_proxy = url.set(host="127.0.0.1", port=proxy.port)
        (b,) = await start_fleet(
            1, database_session_url=through_proxy.render_as_string(hide_password=False)
        )
        ann = await create(b, tenant, "ann")
        await cached(b, tenant, ann.id)
        backend = await feed_backend(postgresql_url, b)

        # The feed's session ends, and it cannot connect again.
        await proxy.refuse()
        admin = await asyncpg.connect(_plain_dsn(postgresql_url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", backend)
        finally:
            await admin.close()

        async def around_the_cache() -> bool:
            before = await b.hits()
            await b.get(tenant, ann.id)
            return await b.hits() == before

        await eventually(around_the_cache, "Gets to go around the cache", WITHIN)
        await write_directly(postgresql_url, tenant, ann.id, "while nobody read the log")
        while_down = [await b.get(tenant, ann.id) for _ in range(5)]

        await proxy.open()

        async def cache_used_again() -> bool:
            before = await b.hits()
            await b.get(tenant, ann.id)
            return await b.hits() > before

        await eventually(cache_used_again, "the cache to be used again", WITHIN)
        after = [await b.get(tenant, ann.id) for _ in range(3)]
    finally:
        await proxy.close()

    assert {user.display_name for user in while_down} == {"while nobody read the log"}
    # The entry cached before the outage was dropped when the feed came back.
    assert {user.display_name for user in after} == {"while nobody read the log"}
    assert "change log lost" in b.server.output()


# -- with Redis: writers tombstone the shared cache, one process backs them up ---------


async def backstop_holder(postgresql_url: str) -> int | None:
    """The pid of the `repogate serve` process whose feed holds the backstop lock."""
    conn = await asyncpg.connect(_plain_dsn(postgresql_url))
    try:
        name = await conn.fetchval(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND (l.classid::bigint << 32) | l.objid::bigint = $1",
            coherence.BACKSTOP_LOCK_ID,
        )
    finally:
        await conn.close()
    return None if name is None else int(name.rpartition("-")[2])


async def entry_version(tenant: str, id_: str) -> int | None:
    """The version the shared cache holds for the user (a value or a tombstone)."""
    key = keys.entity_key("users", schema_version(user_pb2.User), tenant, id_)
    client = aioredis.from_url(REDIS_URL)
    try:
        entry = await client.get(key)
    finally:
        await client.aclose()
    return None if entry is None else int(entry[:20])


async def test_with_redis_one_process_applies_writes_nobody_invalidated(
    start_fleet: StartFleet, postgresql_url: str, tenant: str
) -> None:
    await require_redis()
    a, b = await start_fleet(redis_url=REDIS_URL, cache_timeout="5")
    by_pid = {process.server.proc.pid: process for process in (a, b)}
    ann = await create(a, tenant, "ann")
    await cached(b, tenant, ann.id)

    await eventually(lambda: backstop_holder(postgresql_url), "a process to take the role")
    first = await backstop_holder(postgresql_url)
    await write_directly(postgresql_url, tenant, ann.id, "first")
    await eventually(
        lambda: _at_least(tenant, ann.id, 2), "the backstop to tombstone the entry", WITHIN
    )
    await seen(b, tenant, ann.id, lambda user: user.display_name == "first")

    assert first in by_pid
    survivor = next(process for pid, process in by_pid.items() if pid != first)
    by_pid[first].server.proc.send_signal(signal.SIGKILL)
    await by_pid[first].server.proc.wait()

    async def taken_over() -> bool:
        # Holding the lock is not yet following: on taking the role the survivor drops
        # every entity entry, which a Get cached just before would lose.
        holds = await backstop_holder(postgresql_url) == survivor.server.proc.pid
        return holds and "applying it to the shared cache" in survivor.server.output()

    await eventually(taken_over, "the surviving process to take the role", WITHIN)
    await cached(survivor, tenant, ann.id)
    await write_directly(postgresql_url, tenant, ann.id, "second")
    await seen(survivor, tenant, ann.id, lambda user: user.display_name == "second")


async def _at_least(tenant: str, id_: str, version: int) -> bool:
    found = await entry_version(tenant, id_)
    return found is not None and found >= version


@pytest.mark.parametrize(
    "settings",
    [
        {"database_session_url": "postgresql://postgres@127.0.0.1/test"},  # on SQLite
        {
            "database_url": "postgresql://postgres@127.0.0.1/test",
            "database_session_url": "sqlite:///elsewhere.db",
        },
        {
            "database_url": "postgresql://postgres@127.0.0.1/test",
            "database_session_url": "postgresql://postgres@127.0.0.1/test?sslmode=require",
        },
    ],
)
def test_a_session_url_needs_postgresql_on_both_sides(
    tmp_path: Path, settings: dict[str, str]
) -> None:
    result = run(["serve"], cli_env(tmp_path, **settings), tmp_path)

    assert result.returncode == 2, result.stderr
    assert "REPOGATE_DATABASE_SESSION_URL" in result.stderr
    assert "Traceback" not in result.stderr

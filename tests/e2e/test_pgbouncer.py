"""Repogate behind PgBouncer in transaction pooling mode, under concurrency.

A PgBouncer of the test's own (tests/pgbouncer.py) keeps 3 server connections for 12
concurrent callers, so their statements keep moving between server connections. With
REPOGATE_DB_PGBOUNCER=true every call must succeed with the right result; without it, the
failures the pooler causes must be UNAVAILABLE (never INTERNAL), trip the database
breaker and turn health NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from repogate.v1 import job_pb2, query_pb2, transaction_pb2, user_pb2
from repositories import driver_faults
from repositories.migrate import head_revision
from server.app import Repogate
from server.settings import Settings
from tests.conftest import Running
from tests.e2e.domain import Stubs
from tests.e2e.support import eventually, fails
from tests.e2e.test_cli import cli_env, run
from tests.e2e.test_transact import UPDATE, call, creating
from tests.pgbouncer import PgBouncer, fresh_database, running
from tests.rpc import md

pytestmark = pytest.mark.e2e

CALLERS = 12
ROUNDS = 3
JOBS = 48
EXACT = query_pb2.COUNT_MODE_EXACT


@pytest.fixture(scope="module")
async def own_url() -> AsyncIterator[str]:
    """A database of this module's own, created empty: the first Repogate migrates it
    through PgBouncer."""
    async with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def bouncer(own_url: str) -> Iterator[PgBouncer]:
    with running(own_url) as bouncer:
        yield bouncer


@pytest.fixture
async def start(bouncer: PgBouncer, own_url: str) -> AsyncIterator[Any]:
    """Starts a Repogate whose database URL goes through PgBouncer; stops it after."""
    started: list[tuple[Repogate, aio.Channel]] = []

    async def start(**overrides: Any) -> Running:
        fields: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "database_url": bouncer.url(own_url),
            # The change log is followed past the pooler, as the README says.
            "database_session_url": own_url,
            "shutdown_grace": 1,
            "purge_interval": 0,
            "access_log": False,
            **overrides,
        }
        app = Repogate(Settings(**fields))
        try:
            await app.start()
        except BaseException:
            await app.stop(0)
            raise
        channel = aio.insecure_channel(app.address)
        started.append((app, channel))
        return Running(app, channel)

    yield start
    for app, channel in reversed(started):
        await channel.close()
        await app.stop(0)


def new_user(name: str, **fields: Any) -> user_pb2.User:
    return user_pb2.User(email=f"{name}@example.com", username=name, **fields)


async def users_of(s: Stubs, tenant: str) -> dict[str, user_pb2.User]:
    page = await s.users.ListUsers(user_pb2.ListUsersRequest(page_size=1000), metadata=md(tenant))
    return {user.username: user for user in page.users}


async def one_round(s: Stubs, tenant: str, r: int) -> set[str]:
    """Every kind of call once; returns the usernames this round leaves live."""
    at = md(tenant)
    # Create with a request id, and its retry.
    request_id = str(uuid.uuid4())
    create = user_pb2.CreateUserRequest(user=new_user(f"u{r}"), request_id=request_id)
    ann = await s.users.CreateUser(create, metadata=at)
    assert (await s.users.CreateUser(create, metadata=at)).id == ann.id
    assert (await s.users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=at)) == ann
    # Update with the etag, then with the stale one.
    ann.display_name = f"Ann {r}"
    renamed = await s.users.UpdateUser(user_pb2.UpdateUserRequest(user=ann), metadata=at)
    assert renamed.etag != ann.etag
    stale = await fails(s.users.UpdateUser(user_pb2.UpdateUserRequest(user=ann), metadata=at))
    assert stale.code == grpc.StatusCode.ABORTED
    # Batches: create three, rename them, delete two of them for good.
    made = await s.users.BatchCreateUsers(
        user_pb2.BatchCreateUsersRequest(
            requests=[user_pb2.CreateUserRequest(user=new_user(f"b{r}{i}")) for i in range(3)]
        ),
        metadata=at,
    )
    await s.users.BatchUpdateUsers(
        user_pb2.BatchUpdateUsersRequest(
            requests=[
                user_pb2.UpdateUserRequest(user=user_pb2.User(id=u.id, display_name="batch"))
                for u in made.users
            ]
        ),
        metadata=at,
    )
    await s.users.BatchDeleteUsers(
        user_pb2.BatchDeleteUsersRequest(
            requests=[user_pb2.DeleteUserRequest(id=u.id, force=True) for u in made.users[:2]]
        ),
        metadata=at,
    )
    # A filtered, ordered list with its count, and a count.
    listed = await s.users.ListUsers(
        user_pb2.ListUsersRequest(
            filter='display_name = "batch" AND username = "b*"',
            order_by="username desc",
            count_mode=EXACT,
        ),
        metadata=at,
    )
    assert [u.username for u in listed.users] == [f"b{n}2" for n in range(r, -1, -1)]
    assert listed.total_size == r + 1
    count = await s.users.CountUsers(
        user_pb2.CountUsersRequest(filter="is_active = true"), metadata=at
    )
    assert count.total_size == 4 * r + 2  # u, b.2, t and x of the rounds so far
    # A transaction across calls that commits, and one that rolls back.
    kept = await in_transaction(s, tenant, f"t{r}", commit=True)
    await in_transaction(s, tenant, f"r{r}", commit=False)
    assert (await s.users.GetUser(user_pb2.GetUserRequest(id=kept), metadata=at)).id == kept
    # Transact: a create and an update in one round trip.
    rename = user_pb2.UpdateUserRequest(user=user_pb2.User(id=ann.id, display_name="transacted"))
    done = await s.txs.Transact(
        transaction_pb2.TransactRequest(calls=[creating(f"x{r}"), call(UPDATE, rename)]),
        metadata=at,
    )
    assert len(done.responses) == 2
    return {f"u{r}", f"b{r}2", f"t{r}", f"x{r}"}


async def in_transaction(s: Stubs, tenant: str, name: str, *, commit: bool) -> str:
    tx = await s.txs.BeginTransaction(
        transaction_pb2.BeginTransactionRequest(), metadata=md(tenant)
    )
    inside = md(tenant, x_transaction_id=tx.id)
    user = await s.users.CreateUser(
        user_pb2.CreateUserRequest(user=new_user(name)), metadata=inside
    )
    again = await s.users.GetUser(user_pb2.GetUserRequest(id=user.id), metadata=inside)
    assert again.username == name
    if commit:
        await s.txs.Commit(transaction_pb2.CommitRequest(transaction_id=tx.id), metadata=md(tenant))
    else:
        await s.txs.Rollback(
            transaction_pb2.RollbackRequest(transaction_id=tx.id), metadata=md(tenant)
        )
    return user.id


async def caller(s: Stubs, tenant: str) -> None:
    expected: set[str] = set()
    for r in range(ROUNDS):
        expected |= await one_round(s, tenant, r)
    assert set(await users_of(s, tenant)) == expected


async def worker(s: Stubs, tenant: str, name: str) -> list[str]:
    """Claims jobs until none is pending; returns their ids."""
    claimed = []
    while True:
        reply = await s.jobs.ClaimNextJob(
            job_pb2.ClaimNextJobRequest(worker_id=name), metadata=md(tenant)
        )
        if not reply.HasField("job"):
            return claimed
        assert reply.job.worker_id == name
        claimed.append(reply.job.id)


async def test_concurrent_traffic_through_pgbouncer_all_succeeds(start: Any, own_url: str) -> None:
    # Its first start migrates the empty database through PgBouncer.
    running_app = await start(
        db_pgbouncer=True, db_pool_size=8, db_max_overflow=8, max_transactions=CALLERS
    )
    app, s = running_app.app, Stubs.on(running_app.channel)
    queue = f"jobs-{uuid.uuid4().hex[:8]}"
    jobs = await s.jobs.BatchCreateJobs(
        job_pb2.BatchCreateJobsRequest(
            requests=[
                job_pb2.CreateJobRequest(job=job_pb2.Job(job_type="render", priority=i % 3))
                for i in range(JOBS)
            ]
        ),
        metadata=md(queue),
    )
    tenants = [f"t-{uuid.uuid4().hex[:12]}" for _ in range(CALLERS)]

    claims = await asyncio.gather(
        *(worker(s, queue, f"w{i}") for i in range(CALLERS)),
        *(caller(s, tenant) for tenant in tenants),
    )

    claimed = [job for ids in claims[:CALLERS] for job in ids]
    assert sorted(claimed) == sorted(job.id for job in jobs.jobs), "each job claimed once"
    assert app.breakers["database"].state.value == "CLOSED"
    stats = app.units.transactions.stats() if app.units else None
    assert stats is not None
    assert stats.open == 0
    assert stats.outcomes.get("ABORTED", 0) == 0
    assert stats.outcomes.get("UNKNOWN", 0) == 0


async def test_without_the_flag_pooler_failures_are_unavailable_and_open_the_breaker(
    start: Any,
    bouncer: PgBouncer,
    own_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(driver_faults, "_pooler_advised", False)
    # One pooled connection, no pre-ping: every call runs on the same client connection;
    # no entity cache: every GetUser reaches the database.
    running_app = await start(
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_pre_ping=False,
        breaker_trip_after=2,
        cache_entities=False,
    )
    s = Stubs.on(running_app.channel)
    health = health_pb2_grpc.HealthStub(running_app.channel)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    ann = await s.users.CreateUser(
        user_pb2.CreateUserRequest(user=new_user("ann")), metadata=md(tenant)
    )
    get = user_pb2.GetUserRequest(id=ann.id)
    await s.users.GetUser(get, metadata=md(tenant))  # prepared on one server connection
    # Another client takes that server connection (PgBouncer reuses the one released
    # last) and holds it, so the next GetUser runs on another one.
    other = await asyncpg.connect(
        host="127.0.0.1", port=bouncer.port, user="postgres", database=make_url(own_url).database
    )
    await other.execute("BEGIN")
    try:
        with caplog.at_level(logging.WARNING, logger="repositories.errors"):
            failures = [await fails(s.users.GetUser(get, metadata=md(tenant))) for _ in range(3)]
    finally:
        await other.close()

    assert [f.code for f in failures] == [grpc.StatusCode.UNAVAILABLE] * 3
    assert [f.reason for f in failures] == ["DATABASE_UNAVAILABLE"] * 2 + ["CIRCUIT_OPEN"]
    assert any("REPOGATE_DB_PGBOUNCER=true" in r.getMessage() for r in caplog.records)

    async def not_serving() -> bool:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

    await eventually(not_serving, "health to follow the open breaker")


@pytest.mark.parametrize("command", ["migrate", "purge"])
def test_commands_run_through_pgbouncer(
    tmp_path: Path, bouncer: PgBouncer, own_url: str, command: str
) -> None:
    env = cli_env(
        tmp_path,
        database_url=bouncer.url(own_url),
        db_pgbouncer="true",
        database_session_url=own_url,
    )

    results = [run([command], env, tmp_path) for _ in range(2)]

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]


async def test_two_migrations_at_once_through_pgbouncer(own_url: str, tmp_path: Path) -> None:
    # The migration lock is transaction-level: it serialises them through the pooler too.
    async with fresh_database() as empty:
        with running(empty) as bouncer:
            env = cli_env(
                tmp_path,
                database_url=bouncer.url(empty),
                db_pgbouncer="true",
                database_session_url=empty,
            )
            results = await asyncio.gather(
                *(asyncio.to_thread(run, ["migrate"], env, tmp_path) for _ in range(2))
            )
            assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
            conn = await asyncpg.connect(
                host="127.0.0.1",
                port=bouncer.port,
                user="postgres",
                database=make_url(empty).database,
                statement_cache_size=0,
            )
            try:
                assert await conn.fetchval("SELECT version_num FROM alembic_version") == (
                    head_revision()
                )
            finally:
                await conn.close()


@pytest.mark.parametrize("command", ["serve", "migrate", "purge"])
@pytest.mark.parametrize(
    ("url", "flag", "named"),
    [
        (
            "postgresql://postgres@127.0.0.1/x?statement_cache_size=zero",
            "false",
            "statement_cache_size",
        ),
        (
            "postgresql://postgres@127.0.0.1/x?statement_cache_size=100",
            "true",
            "REPOGATE_DB_PGBOUNCER",
        ),
        ("postgresql://postgres@127.0.0.1/x?sslmode=require", "false", "sslmode"),
        ("sqlite:///x.db", "true", "REPOGATE_DB_PGBOUNCER"),
    ],
)
def test_urls_that_cannot_work_exit_2(
    tmp_path: Path, command: str, url: str, flag: str, named: str
) -> None:
    result = run([command], cli_env(tmp_path, database_url=url, db_pgbouncer=flag), tmp_path)

    assert result.returncode == 2, result.stderr
    assert "REPOGATE_DATABASE_URL" in result.stderr or "REPOGATE_DB_PGBOUNCER" in result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr

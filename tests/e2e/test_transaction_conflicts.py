"""Conflicts: inside a transaction they end it with ABORTED (the client retries all
of it); a single call is retried for its client, within its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from sqlalchemy import text

from repogate.v1 import transaction_pb2 as pb
from repogate.v1 import user_pb2
from repositories.database import Database, create_engine
from tests.e2e.support import Dedicated, create, eventually, fails, get, in_use
from tests.e2e.test_transactions import TxStub, begin, commit, inside, registry
from tests.rpc import md

pytestmark = pytest.mark.e2e

ABORTED = grpc.StatusCode.ABORTED


def rename(id_: str, name: str) -> user_pb2.UpdateUserRequest:
    return user_pb2.UpdateUserRequest(user=user_pb2.User(id=id_, display_name=name))


def retried(app: Dedicated) -> int:
    assert app.app.units is not None
    return app.app.units.retried


def waiting_for_a_lock(database: Database) -> Callable[[], Awaitable[bool]]:
    """Whether a backend of this PostgreSQL database waits for a lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )

    async def probe() -> bool:
        async with database.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one()) > 0

    return probe


# SQLite runs one read-write transaction at a time, so these conflicts are PostgreSQL's.


@pytest.fixture
async def pg_database(postgresql_url: str) -> AsyncIterator[Database]:
    db = Database(create_engine(postgresql_url))
    yield db
    await db.dispose()


async def test_a_serialization_failure_aborts_the_whole_transaction(
    postgresql_url: str, start_repogate, tenant: str
) -> None:
    app = await start_repogate(database_url=postgresql_url, db_pool_size=4, purge_interval=0)
    stub, users = TxStub(app.channel), app.users
    ann = await create(users, tenant, username="ann")
    first = await begin(stub, tenant, isolation_level=pb.ISOLATION_LEVEL_SERIALIZABLE)
    second = await begin(stub, tenant, isolation_level=pb.ISOLATION_LEVEL_SERIALIZABLE)
    for tx in (first, second):
        await users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=inside(tenant, tx))
    await users.UpdateUser(rename(ann.id, "first"), metadata=inside(tenant, first))
    await commit(stub, tenant, first)

    aborted = await fails(
        users.UpdateUser(rename(ann.id, "second"), metadata=inside(tenant, second))
    )
    gone = await fails(commit(stub, tenant, second))

    assert (aborted.code, aborted.reason) == (ABORTED, "TRANSACTION_ABORTED")
    assert (gone.code, gone.metadata["state"]) == (grpc.StatusCode.NOT_FOUND, "ABORTED")
    assert (await get(users, tenant, ann.id)).display_name == "first"
    assert registry(app.app).stats().open == 0
    assert retried(app) == 0  # never retried for the client: only it can retry all of it


async def test_a_deadlocked_single_call_is_retried_for_its_client(
    postgresql_url: str, pg_database: Database, start_repogate, tenant: str
) -> None:
    app = await start_repogate(database_url=postgresql_url, db_pool_size=4, purge_interval=0)
    stub, users = TxStub(app.channel), app.users
    x = await create(users, tenant, username="x")
    y = await create(users, tenant, username="y")
    tx = await begin(stub, tenant)
    await users.UpdateUser(rename(y.id, "tx"), metadata=inside(tenant, tx))

    # The single call locks x and waits for y; then the transaction waits for x.
    batch = user_pb2.BatchUpdateUsersRequest(requests=[rename(x.id, "call"), rename(y.id, "call")])
    single = asyncio.ensure_future(users.BatchUpdateUsers(batch, metadata=md(tenant)))
    await eventually(waiting_for_a_lock(pg_database))
    # PostgreSQL ends the deadlock by failing whoever waited past deadlock_timeout
    # first: the single call. Its retry then waits for this transaction to commit.
    await users.UpdateUser(rename(x.id, "tx"), metadata=inside(tenant, tx))
    await commit(stub, tenant, tx)
    await single

    assert retried(app) >= 1
    assert (await get(users, tenant, x.id)).display_name == "call"
    assert (await get(users, tenant, y.id)).display_name == "call"


# SQLite's busy lock fails a waiting writer after its busy timeout, so retries show there.


async def test_a_single_call_meeting_sqlite_busy_is_retried_until_the_lock_frees(
    start_repogate, tenant: str
) -> None:
    app = await start_repogate(
        sqlite_busy_timeout_ms=20, retry_max_attempts=1000, retry_max_backoff=0.05
    )
    stub = TxStub(app.channel)
    tx = await begin(stub, tenant)  # holds SQLite's write lock

    single = asyncio.ensure_future(create(app.users, tenant, username="ann"))

    await eventually(lambda: retried(app) >= 2)
    await commit(stub, tenant, tx)
    ann = await single

    assert (await get(app.users, tenant, ann.id)).username == "ann"


async def test_retries_stop_before_the_callers_deadline(start_repogate, tenant: str) -> None:
    app = await start_repogate(
        sqlite_busy_timeout_ms=20, retry_max_attempts=100_000, retry_max_backoff=0.05
    )
    stub = TxStub(app.channel)
    tx = await begin(stub, tenant)

    error = await fails(
        app.users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(email="a@example.com", username="a")),
            metadata=md(tenant),
            timeout=1.5,
        )
    )
    await commit(stub, tenant, tx)

    assert (error.code, error.reason) == (ABORTED, "CONCURRENCY_CONFLICT")
    assert 1 <= retried(app) < 100_000


async def test_a_call_cancelled_mid_statement_ends_its_transaction_and_frees_its_connection(
    postgresql_url: str, start_repogate, tenant: str
) -> None:
    # PostgreSQL: only there does a statement inside a transaction wait for a row lock.
    app = await start_repogate(database_url=postgresql_url, db_pool_size=4, purge_interval=0)
    stub, users = TxStub(app.channel), app.users
    ann = await create(users, tenant, username="ann")
    holder = await begin(stub, tenant)
    await users.UpdateUser(rename(ann.id, "holder"), metadata=inside(tenant, holder))
    waiter = await begin(stub, tenant)

    with pytest.raises(grpc.aio.AioRpcError) as late:
        await users.UpdateUser(
            rename(ann.id, "waiter"), metadata=inside(tenant, waiter), timeout=0.5
        )
    transactions = registry(app.app)

    await eventually(lambda: transactions.stats().open == 1)
    gone = await fails(commit(stub, tenant, waiter))
    await commit(stub, tenant, holder)

    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (gone.code, gone.metadata["state"]) == (grpc.StatusCode.NOT_FOUND, "ABORTED")
    assert (await get(users, tenant, ann.id)).display_name == "holder"
    assert in_use(app) == 0

"""Transactions across calls through the real server, on SQLite and PostgreSQL:
begin, calls bound by x-transaction-id, commit and rollback, ownership, limits,
expiry and the connections they hold."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import duration_pb2
from sqlalchemy import text

from repogate.v1 import transaction_pb2 as pb
from repogate.v1 import transaction_pb2_grpc, user_pb2
from repositories.database import Database
from server.app import Repogate
from tests.conftest import Running
from tests.e2e.support import Stub, all_users, create, eventually, fails, get, in_use
from tests.integration.support import fetch
from tests.rpc import md

pytestmark = pytest.mark.e2e

TxStub = transaction_pb2_grpc.TransactionServiceStub
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def txs(server: Running) -> TxStub:
    return TxStub(server.channel)


async def begin(stub: TxStub, tenant: str, **options: object) -> pb.Transaction:
    return await stub.BeginTransaction(
        pb.BeginTransactionRequest(options=pb.TransactionOptions(**options)),  # type: ignore[arg-type]
        metadata=md(tenant),
    )


def idle(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(seconds=seconds))
    return value


def inside(tenant: str, tx: pb.Transaction | str) -> tuple[tuple[str, str], ...]:
    return md(tenant, x_transaction_id=tx if isinstance(tx, str) else tx.id)


async def commit(stub: TxStub, tenant: str, tx: pb.Transaction) -> pb.CommitResponse:
    return await stub.Commit(pb.CommitRequest(transaction_id=tx.id), metadata=md(tenant))


async def rollback(stub: TxStub, tenant: str, tx: pb.Transaction | str) -> None:
    id_ = tx if isinstance(tx, str) else tx.id
    await stub.Rollback(pb.RollbackRequest(transaction_id=id_), metadata=md(tenant))


def registry(app: Repogate):  # type: ignore[no-untyped-def]
    assert app.units is not None
    return app.units.transactions


async def create_in(users: Stub, tenant: str, tx: pb.Transaction, name: str) -> user_pb2.User:
    user = user_pb2.User(email=f"{name}@example.com", username=name)
    return await users.CreateUser(
        user_pb2.CreateUserRequest(user=user), metadata=inside(tenant, tx)
    )


# ------------------------------------------------------------------ visibility


async def test_writes_are_seen_inside_and_nowhere_else_until_commit(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    tx = await begin(txs, tenant)
    ann = await create_in(users, tenant, tx, "ann")

    seen_inside = await users.GetUser(
        user_pb2.GetUserRequest(id=ann.id), metadata=inside(tenant, tx)
    )
    listed_inside = await users.ListUsers(user_pb2.ListUsersRequest(), metadata=inside(tenant, tx))
    assert seen_inside == ann
    assert [u.id for u in listed_inside.users] == [ann.id]
    assert (await fails(get(users, tenant, ann.id))).code == NOT_FOUND
    assert await all_users(users, tenant) == []

    response = await commit(txs, tenant, tx)

    assert await get(users, tenant, ann.id) == ann
    assert abs(response.commit_time.ToDatetime(UTC) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_rollback_discards_every_write_of_every_call(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    kept = await create(users, tenant, username="kept")
    doomed = await create(users, tenant, username="doomed")
    tx = await begin(txs, tenant)
    await create_in(users, tenant, tx, "new")
    await users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=kept.id, display_name="changed")),
        metadata=inside(tenant, tx),
    )
    await users.DeleteUser(
        user_pb2.DeleteUserRequest(id=doomed.id, force=True), metadata=inside(tenant, tx)
    )

    await rollback(txs, tenant, tx)

    assert {u.username: u for u in await all_users(users, tenant)} == {
        "kept": kept,
        "doomed": doomed,
    }


async def test_a_failed_call_undoes_only_itself(txs: TxStub, users: Stub, tenant: str) -> None:
    tx = await begin(txs, tenant)
    await create_in(users, tenant, tx, "ann")

    taken = await fails(create_in(users, tenant, tx, "ann"))
    bob = await create_in(users, tenant, tx, "bob")
    await commit(txs, tenant, tx)

    assert taken.code == grpc.StatusCode.ALREADY_EXISTS
    assert sorted(u.username for u in await all_users(users, tenant)) == ["ann", "bob"]
    assert await get(users, tenant, bob.id) == bob


async def test_a_request_id_rolled_back_with_its_transaction_is_free_again(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    request = user_pb2.CreateUserRequest(
        user=user_pb2.User(email="ann@example.com", username="ann"),
        request_id=str(uuid.uuid4()),
    )
    tx = await begin(txs, tenant)
    first = await users.CreateUser(request, metadata=inside(tenant, tx))
    replayed = await users.CreateUser(request, metadata=inside(tenant, tx))
    await rollback(txs, tenant, tx)

    again = await users.CreateUser(request, metadata=md(tenant))

    assert replayed == first
    assert again.id != first.id
    assert [u.id for u in await all_users(users, tenant)] == [again.id]


async def test_calls_sharing_a_transaction_run_one_at_a_time(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    # Interleaved on one connection these would fail ("another operation is in progress").
    tx = await begin(txs, tenant)
    created = await asyncio.gather(*(create_in(users, tenant, tx, f"u{i}") for i in range(20)))
    listed = await users.ListUsers(user_pb2.ListUsersRequest(), metadata=inside(tenant, tx))
    await commit(txs, tenant, tx)

    assert len(listed.users) == 20
    assert sorted(u.id for u in await all_users(users, tenant)) == sorted(u.id for u in created)


# ------------------------------------------------------------------ options


async def test_read_only_transaction_reads_and_refuses_writes(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    ann = await create(users, tenant, username="ann")
    tx = await begin(txs, tenant, read_only=True)

    refused = await fails(create_in(users, tenant, tx, "bob"))
    seen = await users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=inside(tenant, tx))
    await commit(txs, tenant, tx)

    assert tx.read_only
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TRANSACTION_READ_ONLY",
    )
    assert seen == ann
    assert [u.username for u in await all_users(users, tenant)] == ["ann"]


@pytest.mark.parametrize(
    "level",
    [
        pb.ISOLATION_LEVEL_UNSPECIFIED,
        pb.ISOLATION_LEVEL_READ_COMMITTED,
        pb.ISOLATION_LEVEL_REPEATABLE_READ,
        pb.ISOLATION_LEVEL_SERIALIZABLE,
    ],
)
async def test_begin_reports_what_the_database_gives(
    txs: TxStub, tenant: str, backend: str, level: int
) -> None:
    tx = await begin(txs, tenant, isolation_level=level, idle_timeout=idle(12))
    await rollback(txs, tenant, tx)

    if backend == "sqlite":
        expected = pb.ISOLATION_LEVEL_SERIALIZABLE
    else:
        expected = level or pb.ISOLATION_LEVEL_READ_COMMITTED
    now = datetime.now(UTC)
    assert tx.isolation_level == expected
    assert tx.idle_timeout.ToTimedelta() == timedelta(seconds=12)
    assert timedelta(0) < tx.expire_time.ToDatetime(UTC) - now <= timedelta(seconds=12)
    assert timedelta(minutes=9) < tx.max_expire_time.ToDatetime(UTC) - now <= timedelta(minutes=10)
    assert len(tx.id) > 32


async def test_repeatable_read_sees_one_snapshot(
    txs: TxStub, users: Stub, tenant: str, backend: str
) -> None:
    ann = await create(users, tenant, username="ann", display_name="before")
    tx = await begin(
        txs, tenant, isolation_level=pb.ISOLATION_LEVEL_REPEATABLE_READ, read_only=True
    )
    first = await users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=inside(tenant, tx))

    await users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=ann.id, display_name="after")),
        metadata=md(tenant),
    )
    second = await users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=inside(tenant, tx))
    await commit(txs, tenant, tx)

    assert first.display_name == second.display_name == "before"
    assert (await get(users, tenant, ann.id)).display_name == "after"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"idle_timeout": idle(-1)}, "options.idle_timeout"),
        ({"idle_timeout": idle(0)}, "options.idle_timeout"),
        ({"idle_timeout": idle(601)}, "options.idle_timeout"),
        ({"isolation_level": 99}, "options.isolation_level"),
    ],
)
async def test_begin_refuses_bad_options(
    txs: TxStub, tenant: str, options: dict[str, object], field: str
) -> None:
    error = await fails(begin(txs, tenant, **options))

    assert (error.code, error.reason) == (INVALID, "INVALID_ARGUMENT")
    assert field in error.violations


async def test_transactions_do_not_nest(txs: TxStub, tenant: str) -> None:
    tx = await begin(txs, tenant)

    error = await fails(
        txs.BeginTransaction(pb.BeginTransactionRequest(), metadata=inside(tenant, tx))
    )
    await rollback(txs, tenant, tx)

    assert error.code == INVALID
    assert "x-transaction-id" in error.violations


# ------------------------------------------------------------------ ids and ownership


async def test_another_tenant_gets_the_answer_an_unknown_id_gets(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    tx = await begin(txs, tenant)
    await create_in(users, tenant, tx, "ann")
    other = f"{tenant}-other"
    # Same owner tag, same length: only the existence of the transaction differs.
    unknown = tx.id[:-4] + ("aaaa" if not tx.id.endswith("aaaa") else "bbbb")

    answers = []
    for id_ in (tx.id, unknown):
        on_call = await fails(
            users.ListUsers(user_pb2.ListUsersRequest(), metadata=inside(other, id_))
        )
        on_commit = await fails(
            txs.Commit(pb.CommitRequest(transaction_id=id_), metadata=md(other))
        )
        await rollback(txs, other, id_)  # OK, and leaves the owner's transaction alone
        answers.append(
            [
                (
                    e.code,
                    e.reason,
                    e.message.replace(id_, "ID"),
                    {**e.metadata, "id": "", "request_id": ""},
                )
                for e in (on_call, on_commit)
            ]
        )
    await commit(txs, tenant, tx)

    assert answers[0] == answers[1]
    assert answers[0][0][:2] == (NOT_FOUND, "TRANSACTION_NOT_FOUND")
    assert [u.username for u in await all_users(users, tenant)] == ["ann"]
    assert await all_users(users, other) == []


async def test_an_ended_transaction_is_not_found_and_its_owner_learns_how_it_ended(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    done = await begin(txs, tenant)
    await commit(txs, tenant, done)
    dropped = await begin(txs, tenant)
    await rollback(txs, tenant, dropped)

    again = await fails(commit(txs, tenant, done))
    late_call = await fails(create_in(users, tenant, dropped, "ann"))
    await rollback(txs, tenant, done)  # OK: ended already

    assert (again.code, again.reason, again.metadata["state"]) == (
        NOT_FOUND,
        "TRANSACTION_NOT_FOUND",
        "COMMITTED",
    )
    assert (late_call.code, late_call.metadata["state"]) == (NOT_FOUND, "ROLLED_BACK")
    assert await all_users(users, tenant) == []


@pytest.mark.parametrize("value", ["", "not an id", "x" * 257, "a/b"])
async def test_a_malformed_transaction_id_is_invalid(users: Stub, tenant: str, value: str) -> None:
    error = await fails(
        users.ListUsers(user_pb2.ListUsersRequest(), metadata=inside(tenant, value))
    )

    assert (error.code, error.reason) == (INVALID, "INVALID_TRANSACTION_ID")
    assert "x-transaction-id" in error.violations


@pytest.mark.parametrize("method", ["Commit", "Rollback"])
async def test_commit_and_rollback_need_an_id(txs: TxStub, tenant: str, method: str) -> None:
    request = pb.CommitRequest() if method == "Commit" else pb.RollbackRequest()
    error = await fails(getattr(txs, method)(request, metadata=md(tenant)))

    assert error.code == INVALID
    assert error.violations == {"transaction_id": "is required"}


async def test_a_call_that_reaches_another_server_process_is_answered_by_the_owner(
    database_url: str, start_repogate, tenant: str
) -> None:
    shared = {"database_url": database_url, "db_pool_size": 4, "purge_interval": 0}
    shared["page_token_secret"] = "a-secret-both-processes-share"
    first = await start_repogate(**shared)
    second = await start_repogate(**shared)
    tx = await begin(TxStub(first.channel), tenant)

    ann = await create_in(second.users, tenant, tx, "ann")
    seen = await first.users.GetUser(
        user_pb2.GetUserRequest(id=ann.id), metadata=inside(tenant, tx)
    )
    await commit(TxStub(second.channel), tenant, tx)

    assert seen == ann
    assert await get(first.users, tenant, ann.id) == ann
    assert registry(first.app).stats().outcomes["COMMITTED"] == 1
    assert registry(second.app).stats().outcomes.get("BEGUN", 0) == 0


# ------------------------------------------------------------------ lifetime and limits


async def test_an_idle_transaction_is_rolled_back_and_returns_its_connection(
    txs: TxStub, users: Stub, server: Running, tenant: str
) -> None:
    before = registry(server.app).stats().outcomes.get("EXPIRED", 0)
    tx = await begin(txs, tenant, idle_timeout=idle(0.2))
    ann = await create_in(users, tenant, tx, "ann")

    await eventually(lambda: registry(server.app).stats().outcomes.get("EXPIRED", 0) > before)
    error = await fails(create_in(users, tenant, tx, "bob"))

    assert (error.code, error.metadata["state"]) == (NOT_FOUND, "EXPIRED")
    assert (await fails(get(users, tenant, ann.id))).code == NOT_FOUND
    assert registry(server.app).stats().open == 0


async def test_a_busy_transaction_still_ends_at_its_maximum_lifetime(
    start_repogate, tenant: str
) -> None:
    app = await start_repogate(transaction_idle_timeout=0.3, transaction_max_lifetime=0.6)
    stub = TxStub(app.channel)
    tx = await begin(stub, tenant, read_only=True)
    loop = asyncio.get_running_loop()
    end = loop.time() + 10

    # Calls every 50 ms keep it from idling; only the lifetime can end it.
    while True:
        try:
            await app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=inside(tenant, tx))
        except grpc.aio.AioRpcError as exc:
            error = exc
            break
        assert loop.time() < end, "the transaction outlived its maximum lifetime"
        await asyncio.sleep(0.05)

    assert error.code() == NOT_FOUND
    assert tx.max_expire_time.ToDatetime(UTC) <= datetime.now(UTC)
    await eventually(lambda: registry(app.app).stats().open == 0)


async def test_open_transactions_are_capped(database_url: str, start_repogate, tenant: str) -> None:
    app = await start_repogate(
        database_url=database_url, db_pool_size=4, max_transactions=2, purge_interval=0
    )
    stub = TxStub(app.channel)
    # Read-only, so SQLite lets them be open together.
    first = await begin(stub, tenant, read_only=True)
    await begin(stub, tenant, read_only=True)

    refused = await fails(begin(stub, f"{tenant}-b", read_only=True))
    await rollback(stub, tenant, first)
    third = await begin(stub, tenant, read_only=True)

    assert (refused.code, refused.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_TRANSACTIONS",
    )
    assert refused.metadata["limit"] == "2"
    assert third.id
    assert registry(app.app).stats().open == 2


async def test_a_thousand_abandoned_transactions_give_back_every_connection(
    database_url: str, backend: str, database: Database, start_repogate, tenant: str
) -> None:
    app = await start_repogate(
        database_url=database_url,
        db_pool_size=6,
        db_max_overflow=0,
        max_transactions=4,
        purge_interval=0,
    )
    stub, users = TxStub(app.channel), app.users
    begun = 0
    while begun < 1000:
        # Every hundredth is used once before it is abandoned: it lives long enough for
        # that call to reach it on a busy machine.
        used = (begun + 1) % 100 == 0
        try:
            # Read-write on PostgreSQL; SQLite allows one writer, so read-only there.
            tx = await begin(
                stub,
                tenant,
                idle_timeout=idle(1.0 if used else 0.01),
                read_only=backend == "sqlite",
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.01)
            continue
        begun += 1
        if used:
            await users.ListUsers(user_pb2.ListUsersRequest(), metadata=inside(tenant, tx))

    transactions = registry(app.app)
    await eventually(lambda: transactions.stats().open == 0)

    # A transaction leaves the registry before its ROLLBACK and close have returned its
    # connection: wait out that last round trip (a leaked connection never comes back).
    await eventually(lambda: in_use(app) == 0, "every connection back in the pool")
    assert in_use(app) == 0
    assert transactions.stats().outcomes["BEGUN"] == 1000
    assert transactions.stats().outcomes["EXPIRED"] == 1000
    if backend == "postgresql":
        assert await idle_in_transaction(database) == 0


async def idle_in_transaction(database: Database) -> int:
    """PostgreSQL backends of this database holding a transaction open between statements."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
    )
    async with database.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_stopping_the_server_rolls_back_open_transactions(
    database_url: str, database: Database, start_repogate, tenant: str
) -> None:
    app = await start_repogate(database_url=database_url, db_pool_size=4, purge_interval=0)
    stub = TxStub(app.channel)
    tx = await begin(stub, tenant)
    ann = await create_in(app.users, tenant, tx, "ann")
    transactions = registry(app.app)

    await app.app.stop(0)

    assert transactions.stats().open == 0
    assert transactions.stats().outcomes["ROLLED_BACK"] == 1
    assert await fetch(database, tenant, uuid.UUID(ann.id)) is None


async def test_stats_count_open_transactions_and_the_oldest_age(
    txs: TxStub, server: Running, tenant: str
) -> None:
    transactions = registry(server.app)
    first = await begin(txs, tenant, read_only=True)
    await asyncio.sleep(0.05)
    second = await begin(txs, tenant, read_only=True)

    both = transactions.stats()
    await rollback(txs, tenant, first)
    one = transactions.stats()
    await rollback(txs, tenant, second)

    assert both.open == 2
    assert both.oldest_age >= 0.05
    assert one.open == 1
    assert one.oldest_age < both.oldest_age

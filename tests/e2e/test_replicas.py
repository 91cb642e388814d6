"""Read replicas on a real primary and streaming standby (tests/replica.py).

The standby's replay is paused (pg_wal_replay_pause()) to make lag real: what a
read returns then tells which server served it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from grpc import aio

from repogate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    transaction_pb2,
    transaction_pb2_grpc,
    user_pb2,
)
from repositories import wal
from repositories.database import Database, create_engine
from server.consistency import KEY
from tests.e2e.support import Dedicated, StartRepogate, create, fails, get
from tests.polling import eventually
from tests.replica import Pair, running_pair
from tests.rpc import md

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with running_pair() as started:
        yield started


@pytest.fixture
async def replay(pair: Pair) -> AsyncIterator[Pair]:
    """The pair, its standby's replay resumed (and running) again after the test."""
    yield pair
    if not pair.replica_running():
        pair.start_replica()
    await eventually(lambda: _accepts(pair), "the standby to accept connections", within=30)
    await pair.resume_replay()


async def _accepts(pair: Pair) -> bool:
    try:
        await pair.on_replica("SELECT 1")
    except Exception:  # refused while it starts, or still in its startup
        return False
    return True


def _tenant() -> str:
    return f"replicas-{uuid.uuid4().hex[:8]}"


async def _started(start: StartRepogate, pair: Pair, **overrides: Any) -> Dedicated:
    fields: dict[str, Any] = {
        "database_url": pair.primary_url,
        "database_replica_urls": pair.replica_url,
        # Every read reaches the database: the cache is tested on its own below.
        "cache_entities": False,
        **overrides,
    }
    app = await start(**fields)
    # Migrated just now: the standby serves reads once it has replayed that.
    await eventually(lambda: bool(_replica(app)["usable"]), "the standby to catch up")
    return app


async def _rename(app: Dedicated, tenant: str, user: user_pb2.User, name: str) -> str:
    """Renames `user`; returns the consistency token the write answered."""
    user.display_name = name
    call = app.users.UpdateUser(user_pb2.UpdateUserRequest(user=user), metadata=md(tenant))
    user.CopyFrom(await call)  # its new etag, for the next update
    trailers = dict(await call.trailing_metadata() or ())
    token = trailers.get(KEY)
    assert isinstance(token, str), "a committed write answers a consistency token"
    return token


async def _name(app: Dedicated, tenant: str, id_: str, token: str | None = None) -> str:
    extra = {} if token is None else {"x_consistency_token": token}
    user = await app.users.GetUser(user_pb2.GetUserRequest(id=id_), metadata=md(tenant, **extra))
    return user.display_name


def _replica(app: Dedicated) -> dict[str, Any]:
    assert app.app.replicas is not None
    [state] = app.app.replicas.status().values()
    return state


async def test_an_idle_primarys_standby_is_seen_caught_up(replay: Pair) -> None:
    # A new WAL segment: the primary's insert position points past its page header,
    # where the standby's replay position (the last record's end) stops.
    await replay.on_primary("SELECT pg_switch_wal()")
    database = Database(create_engine(replay.primary_url))
    try:
        inserted = await database.position(wal.INSERTED)
    finally:
        await database.dispose()
    assert inserted is not None

    async def replayed() -> bool:
        position = await replay.on_replica("SELECT pg_last_wal_replay_lsn() - '0/0'")
        return int(str(position)) >= inserted

    await eventually(replayed, "the standby to replay the primary's position")


async def test_reads_go_to_the_replica_and_writes_to_the_primary(
    start_repogate: StartRepogate, replay: Pair
) -> None:
    app = await _started(start_repogate, replay, replica_max_lag=60)
    tenant = _tenant()
    user = await create(app.users, tenant, username="ada", display_name="before")
    await eventually(lambda: _name_is(app, tenant, user.id, "before"), "the standby to replay")
    await replay.pause_replay()
    # Writes succeed with replay paused: they go to the primary (the standby refuses any).
    await _rename(app, tenant, user, "after")
    reads = _replica(app)["reads"]
    # Only the paused standby still holds the old name.
    assert await _name(app, tenant, user.id) == "before"
    assert _replica(app)["reads"] == reads + 1
    # The tenant's scope holds there as on the primary: another tenant finds nothing.
    error = await fails(_name(app, _tenant(), user.id))
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert _replica(app)["reads"] == reads + 2
    report = await admin_pb2_grpc.AdminServiceStub(app.channel).CheckHealth(
        admin_pb2.CheckHealthRequest()
    )
    assert report.status == admin_pb2.HEALTH_STATUS_HEALTHY
    assert [d.name for d in report.dependencies if d.reachable] == [
        "database",
        "cache",
        "replica 1",
    ]


async def test_reads_in_a_transaction_go_to_the_primary(
    start_repogate: StartRepogate, replay: Pair
) -> None:
    app = await _started(start_repogate, replay, replica_max_lag=60)
    tenant = _tenant()
    user = await create(app.users, tenant, username="al", display_name="before")
    await eventually(lambda: _name_is(app, tenant, user.id, "before"), "the standby to replay")
    await replay.pause_replay()
    await _rename(app, tenant, user, "after")
    transactions = transaction_pb2_grpc.TransactionServiceStub(app.channel)
    tx = await transactions.BeginTransaction(
        transaction_pb2.BeginTransactionRequest(
            options=transaction_pb2.TransactionOptions(read_only=True)
        ),
        metadata=md(tenant),
    )
    inside = await app.users.GetUser(
        user_pb2.GetUserRequest(id=user.id), metadata=md(tenant, x_transaction_id=tx.id)
    )
    await transactions.Rollback(
        transaction_pb2.RollbackRequest(transaction_id=tx.id), metadata=md(tenant)
    )

    assert inside.display_name == "after"
    assert await _name(app, tenant, user.id) == "before"  # outside: the paused standby


async def test_a_committed_transaction_answers_a_token(
    start_repogate: StartRepogate, replay: Pair
) -> None:
    app = await _started(start_repogate, replay, replica_max_lag=60)
    tenant = _tenant()
    user = await create(app.users, tenant, username="ed", display_name="before")
    await eventually(lambda: _name_is(app, tenant, user.id, "before"), "the standby to replay")
    await replay.pause_replay()
    transactions = transaction_pb2_grpc.TransactionServiceStub(app.channel)
    tx = await transactions.BeginTransaction(
        transaction_pb2.BeginTransactionRequest(), metadata=md(tenant)
    )
    user.display_name = "after"
    await app.users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user), metadata=md(tenant, x_transaction_id=tx.id)
    )
    commit = transactions.Commit(
        transaction_pb2.CommitRequest(transaction_id=tx.id), metadata=md(tenant)
    )
    await commit
    token = dict(await commit.trailing_metadata() or ()).get(KEY)

    assert isinstance(token, str)
    assert await _name(app, tenant, user.id, token) == "after"
    assert await _name(app, tenant, user.id) == "before"  # the paused standby


async def test_a_commit_forwarded_to_the_transactions_owner_answers_its_token(
    start_repogate: StartRepogate, replay: Pair
) -> None:
    """A fleet behind a balancer: Commit reaches a process that does not own the
    transaction, which forwards it to the owner and relays the owner's token."""
    shared = {"replica_max_lag": 60, "page_token_secret": "a fleet's shared secret, 16+"}
    owner = await _started(start_repogate, replay, **shared)
    other = await _started(start_repogate, replay, **shared)
    tenant = _tenant()
    user = await create(owner.users, tenant, username="fy", display_name="before")
    await eventually(lambda: _name_is(other, tenant, user.id, "before"), "the standby to replay")
    await replay.pause_replay()
    tx = await transaction_pb2_grpc.TransactionServiceStub(owner.channel).BeginTransaction(
        transaction_pb2.BeginTransactionRequest(), metadata=md(tenant)
    )
    user.display_name = "after"
    await owner.users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user), metadata=md(tenant, x_transaction_id=tx.id)
    )
    commit = transaction_pb2_grpc.TransactionServiceStub(other.channel).Commit(
        transaction_pb2.CommitRequest(transaction_id=tx.id), metadata=md(tenant)
    )
    await commit
    token = dict(await commit.trailing_metadata() or ()).get(KEY)

    assert isinstance(token, str)
    assert await _name(other, tenant, user.id, token) == "after"
    assert await _name(other, tenant, user.id) == "before"  # the paused standby


async def _name_is(app: Dedicated, tenant: str, id_: str, name: str) -> bool:
    try:
        return await _name(app, tenant, id_) == name
    except aio.AioRpcError as exc:
        # Created within the lag bound: a standby may not have it yet.
        if exc.code() is not grpc.StatusCode.NOT_FOUND:
            raise
        return False


async def test_token_reads_never_miss_their_own_write(
    start_repogate: StartRepogate, replay: Pair
) -> None:
    app = await _started(start_repogate, replay, replica_max_lag=60)
    tenant = _tenant()
    user = await create(app.users, tenant, username="bo", display_name="0")
    await replay.pause_replay()
    for n in range(1, 6):
        token = await _rename(app, tenant, user, str(n))
        assert await _name(app, tenant, user.id, token) == str(n)
    await replay.resume_replay()
    # Caught up, the standby serves them again.
    token = await _rename(app, tenant, user, "caught up")
    await eventually(
        lambda: _replayed(replay, token, app, tenant, user.id), "a token read on the standby"
    )


async def _replayed(pair: Pair, token: str, app: Dedicated, tenant: str, id_: str) -> bool:
    reads = _replica(app)["reads"]
    assert await _name(app, tenant, id_, token) == "caught up"
    return bool(_replica(app)["reads"] > reads)


async def test_a_lagging_replica_is_taken_out_within_the_bound(
    start_repogate: StartRepogate, replay: Pair
) -> None:
    max_lag = 1.0
    app = await _started(start_repogate, replay, replica_max_lag=max_lag)
    tenant = _tenant()
    user = await create(app.users, tenant, username="cy", display_name="old")
    await eventually(lambda: _name_is(app, tenant, user.id, "old"), "the standby to replay")
    await replay.pause_replay()
    await _rename(app, tenant, user, "new")
    answered = time.monotonic()
    # Tokenless reads may see the old name, but never once max_lag has passed since the
    # write was answered (the server's clock is this process's: it runs in it).
    while True:
        started = time.monotonic()
        name = await _name(app, tenant, user.id)
        if started > answered + max_lag:
            assert name == "new", "a read started past the lag bound saw an older row"
        if name == "new" and started > answered + max_lag:
            break
        await asyncio.sleep(0.05)
    assert not _replica(app)["usable"]
    await replay.resume_replay()
    await eventually(lambda: bool(_replica(app)["usable"]), "the caught-up standby back in")


async def test_forged_tokens_are_refused(start_repogate: StartRepogate, replay: Pair) -> None:
    app = await _started(start_repogate, replay)
    tenant = _tenant()
    user = await create(app.users, tenant, username="di")
    token = await _rename(app, tenant, user, "x")
    body, mac = token.split(".")
    edited = ("A" if body[0] != "A" else "B") + body[1:] + "." + mac
    for forged in (edited, "garbled", token + "x", ""):
        error = await fails(_name(app, tenant, user.id, forged))
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "INVALID_CONSISTENCY_TOKEN"
        assert KEY in error.violations
    # Bound to its tenant: another tenant's token is no token of its own.
    error = await fails(_name(app, _tenant(), user.id, token))
    assert error.reason == "INVALID_CONSISTENCY_TOKEN"


async def test_a_replica_killed_mid_load_fails_no_read(
    start_repogate: StartRepogate, replay: Pair
) -> None:
    app = await _started(start_repogate, replay, replica_max_lag=60)
    tenant = _tenant()
    users = [await create(app.users, tenant, username=f"u{n}") for n in range(5)]
    await eventually(lambda: _listed(app, tenant, len(users)), "the standby to replay")
    failures: list[BaseException] = []
    served = 0
    stop = asyncio.Event()

    async def reader(user: user_pb2.User) -> None:
        nonlocal served
        while not stop.is_set():
            try:
                await get(app.users, tenant, user.id)
                await app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))
                served += 2
            except aio.AioRpcError as exc:
                failures.append(exc)

    readers = [asyncio.create_task(reader(user)) for user in users]
    await eventually(lambda: _replica(app)["reads"] > 20, "reads on the standby")
    await asyncio.to_thread(replay.stop_replica)
    after = served
    await eventually(lambda: served > after + 50, "reads after the standby died")
    stop.set()
    await asyncio.gather(*readers)
    assert failures == []
    assert not _replica(app)["usable"]
    report = await admin_pb2_grpc.AdminServiceStub(app.channel).CheckHealth(
        admin_pb2.CheckHealthRequest()
    )
    assert report.status == admin_pb2.HEALTH_STATUS_DEGRADED
    assert {d.name: d.reachable for d in report.dependencies} == {
        "database": True,
        "cache": True,
        "replica 1": False,
    }


async def _listed(app: Dedicated, tenant: str, count: int) -> bool:
    page = await app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))
    return len(page.users) == count

"""Transactions behind a balancer, as real `repogate serve` processes on one PostgreSQL:
two instances behind one round_robin channel, a forwarded call that runs out of time,
and an owner killed mid-transaction. (`serve --workers 2`: tests/e2e/test_workers.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from sqlalchemy import select, text

from repogate.v1 import transaction_pb2 as pb
from repogate.v1 import transaction_pb2_grpc, user_pb2, user_pb2_grpc
from repositories.database import Database, create_engine
from repositories.tables import transaction_outcomes
from repositories.transaction_ids import TransactionIds
from tests.e2e.support import fails
from tests.e2e.test_cli import RPC_TIMEOUT, Server, access_lines, cli_env, free_port, serving
from tests.polling import eventually
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

SECRET = "the-secret-every-instance-of-this-fleet-shares"
CREATE = "/repogate.v1.UserService/CreateUser"
UPDATE = "/repogate.v1.UserService/UpdateUser"


@contextlib.asynccontextmanager
async def instances(url: str, tmp_path: Path, count: int = 2) -> AsyncIterator[list[Server]]:
    """`count` instances of `repogate serve` on one database, sharing the fleet's key."""
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for _ in range(count):
            address = f"127.0.0.1:{free_port()}"
            env = cli_env(
                tmp_path,
                database_url=url,
                listen=address,
                page_token_secret=SECRET,
                db_pool_size="4",
                purge_interval="0",
            )
            servers.append(await stack.enter_async_context(serving(env, tmp_path, address)))
        yield servers


@pytest.fixture
async def db(postgresql_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(postgresql_url))
    yield database
    await database.dispose()


def owner_of(tx: pb.Transaction, tenant: str) -> str:
    route = TransactionIds(SECRET).route(tx.id, tenant)
    assert route is not None
    return route.address


def creates_in(server: Server, tx: pb.Transaction) -> int:
    logged = [
        (line["method"], line.get("transaction_id")) for line in access_lines(server.output())
    ]
    return logged.count((CREATE, tx.id))


def user(name: str) -> user_pb2.CreateUserRequest:
    new = user_pb2.User(email=f"{name}@example.com", username=name)
    return user_pb2.CreateUserRequest(user=new)


async def outcome(db: Database, tx: pb.Transaction) -> str | None:
    async with db.engine.connect() as conn:
        column, key = transaction_outcomes.c.outcome, transaction_outcomes.c.id
        found = await conn.scalar(select(column).where(key == tx.id))
    return None if found is None else str(found)


async def test_a_transaction_spread_over_two_instances_by_round_robin_commits_whole(
    postgresql_url: str, tmp_path: Path, tenant: str
) -> None:
    async with instances(postgresql_url, tmp_path) as servers:
        ports = [server.address.rsplit(":", 1)[1] for server in servers]
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        balanced = [("grpc.lb_policy_name", "round_robin")]
        async with aio.insecure_channel(target, options=balanced) as channel:
            users = user_pb2_grpc.UserServiceStub(channel)
            txs = transaction_pb2_grpc.TransactionServiceStub(channel)

            async def both_answer() -> bool:
                await users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))
                return all(access_lines(server.output()) for server in servers)

            await eventually(both_answer, "both instances to answer on the channel")
            tx = await txs.BeginTransaction(pb.BeginTransactionRequest(), metadata=md(tenant))
            for i in range(8):
                await users.CreateUser(
                    user(f"u{i}"), metadata=md(tenant, x_transaction_id=tx.id), timeout=RPC_TIMEOUT
                )
            await txs.Commit(pb.CommitRequest(transaction_id=tx.id), metadata=md(tenant))
            listed = await users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))
        (owner,) = [s for s in servers if s.address == owner_of(tx, tenant)]
        (peer,) = [s for s in servers if s is not owner]
        for server in servers:
            assert await server.stop() == 0

    assert sorted(u.username for u in listed.users) == [f"u{i}" for i in range(8)]
    # The owner ran all 8; the peer took some from the balancer and forwarded them.
    assert creates_in(owner, tx) == 8
    assert 0 < creates_in(peer, tx) < 8


async def test_a_forwarded_call_past_its_deadline_is_cut_off_at_the_owner_too(
    postgresql_url: str, tmp_path: Path, db: Database, tenant: str
) -> None:
    async with (
        instances(postgresql_url, tmp_path) as (owner, peer),
        aio.insecure_channel(owner.address) as to_owner,
        aio.insecure_channel(peer.address) as to_peer,
    ):
        ann = await user_pb2_grpc.UserServiceStub(to_owner).CreateUser(
            user("ann"), metadata=md(tenant)
        )
        txs = transaction_pb2_grpc.TransactionServiceStub(to_owner)
        tx = await txs.BeginTransaction(pb.BeginTransactionRequest(), metadata=md(tenant))
        inside = md(tenant, x_transaction_id=tx.id)
        users = user_pb2_grpc.UserServiceStub(to_peer)
        # The peer's channel to the owner is up before the timed call.
        await users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=inside)
        update = user_pb2.UpdateUserRequest(user=user_pb2.User(id=ann.id, display_name="Ann"))
        async with db.engine.connect() as holder:
            await holder.execute(
                text("SELECT 1 FROM users WHERE tenant_id = :t AND id = :id FOR UPDATE"),
                {"t": tenant, "id": uuid.UUID(ann.id)},
            )
            pid = int((await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            watch = asyncio.create_task(waited_on(db, pid))
            with pytest.raises(aio.AioRpcError) as late:
                await users.UpdateUser(update, metadata=inside, timeout=0.05)
            # Still holding the lock: the owner's statement stops on its own deadline.
            await eventually(lambda: watch.done(), "the watch to end", within=15)
            await holder.rollback()
        try:
            await transaction_pb2_grpc.TransactionServiceStub(to_peer).Commit(
                pb.CommitRequest(transaction_id=tx.id), metadata=md(tenant)
            )
            ended = None
        except aio.AioRpcError as exc:
            ended = details(exc)
        after = await users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=md(tenant))

        def updates() -> list[dict[str, Any]]:
            return [line for line in access_lines(owner.output()) if line["method"] == UPDATE]

        # Written within 50 ms of the call's end; the owner is then killed outright.
        await eventually(updates, "the owner's access line of the UpdateUser")

    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert watch.result() != "still", "the owner's statement outlived the call's deadline"
    # The owner had the deadline itself, not only a cancellation from the peer.
    assert [line["code"] for line in updates()] == ["DEADLINE_EXCEEDED"]
    if watch.result() == "stopped":
        # Cut off mid-statement by its own deadline, the owner ended the transaction.
        assert ended is not None
        assert (ended.code, ended.reason, ended.metadata["state"]) == (
            grpc.StatusCode.NOT_FOUND,
            "TRANSACTION_NOT_FOUND",
            "ABORTED",
        )
    else:
        # A machine so busy that the call never reached its statement in 50 ms: the
        # owner never ran it, and the transaction goes on without it.
        assert ended is None
    assert after.display_name == ""
    assert await outcome(db, tx) != "ABORTED"  # a deadline is not a failure to reach the owner


async def waited_on(db: Database, pid: int, within: float = 10.0) -> str:
    """Watches for a backend waiting on backend `pid`'s lock: "stopped" once one has
    waited and stopped, "still" if one waits still after `within` seconds, "never"
    if none did."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    seen = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with db.engine.connect() as conn:
        while loop.time() < deadline:
            waiting = int((await conn.execute(query, {"pid": pid})).scalar_one())
            await conn.rollback()
            if waiting:
                seen = True
            elif seen:
                return "stopped"
            await asyncio.sleep(0.002)
    return "still" if seen else "never"


async def test_an_owner_killed_mid_transaction_leaves_nothing_committed(
    postgresql_url: str, tmp_path: Path, db: Database, tenant: str
) -> None:
    async with (
        instances(postgresql_url, tmp_path) as (owner, peer),
        aio.insecure_channel(owner.address) as to_owner,
        aio.insecure_channel(peer.address) as to_peer,
    ):
        tx = await transaction_pb2_grpc.TransactionServiceStub(to_owner).BeginTransaction(
            pb.BeginTransactionRequest(), metadata=md(tenant)
        )
        inside = md(tenant, x_transaction_id=tx.id)
        await user_pb2_grpc.UserServiceStub(to_owner).CreateUser(user("ann"), metadata=inside)
        users = user_pb2_grpc.UserServiceStub(to_peer)
        await users.CreateUser(user("bob"), metadata=inside)  # forwarded
        owner.proc.kill()
        await owner.proc.wait()

        gone = await fails(users.CreateUser(user("cy"), metadata=inside))
        aborted = await fails(
            transaction_pb2_grpc.TransactionServiceStub(to_peer).Commit(
                pb.CommitRequest(transaction_id=tx.id), metadata=md(tenant)
            )
        )
        listed = await users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))

    assert (gone.code, gone.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "TRANSACTION_OWNER_UNAVAILABLE",
    )
    assert gone.metadata["owner"] == owner.address
    assert (aborted.code, aborted.reason) == (grpc.StatusCode.ABORTED, "TRANSACTION_ABORTED")
    assert list(listed.users) == []
    assert await outcome(db, tx) == "ABORTED"

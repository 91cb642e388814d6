"""A fleet: three `repogate serve` processes in front of one PostgreSQL, with the settings the
README recommends ("Deploying a fleet"), under mixed traffic spread over all of them.

Each user is written by one task only, so the test knows every version a client was told
about and when. It checks what the README promises a fleet:
- no Get, sent more than the staleness bound after a write was acknowledged, answers an
  older version (whichever process served the write and whichever serves the Get);
- every acknowledged write is in the database at the end;
- a transaction across calls, its calls spread over every process by a round_robin
  channel, commits all of its creates or none;
- no call fails as a server fault, and no process logs a prepared-statement error or a
  traceback.

Once straight to PostgreSQL with each process caching in its own memory (kept coherent
by PostgreSQL's LISTEN/NOTIFY), once through a PgBouncer in transaction mode with the
processes sharing a Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio
from sqlalchemy.engine import make_url

from repogate.v1 import transaction_pb2, transaction_pb2_grpc, user_pb2, user_pb2_grpc
from server.coherence import BOUND as STALENESS_BOUND
from tests import pgbouncer
from tests.cache_support import REDIS_URL, require_redis
from tests.e2e.test_cli import CHANNEL_OPTIONS, Server, cli_env, free_port, run_async, serving
from tests.rpc import md

pytestmark = pytest.mark.e2e

PROCESSES = 3
# Seconds of traffic; the issue asks for at least 30.
DURATION = float(os.environ.get("REPOGATE_TEST_FLEET_SECONDS", "30"))
OWNERS = 6  # tasks that each create and change users of their own
TRANSACTORS = 3  # tasks running transactions across calls
READERS = 3  # tasks reading anybody's users through any process
CREATES_PER_TRANSACTION = 4
USERS_PER_OWNER = 6
RPC_TIMEOUT = 10.0
# Codes a healthy fleet never answers.
FAULTS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.DATA_LOSS,
}


@dataclass
class Seen:
    """One Get: when it was sent and the version it answered (None: NOT_FOUND)."""

    user: str
    sent: float
    version: int | None
    via: int


@dataclass
class Ledger:
    """What clients were told, and when (time.monotonic())."""

    # user id -> [(acknowledged at, version)] in order
    writes: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    reads: list[Seen] = field(default_factory=list)
    # transaction tag -> "COMMITTED", "ROLLED_BACK" or "FAILED"
    transactions: dict[str, str] = field(default_factory=dict)
    codes: Counter[str] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)

    def acknowledge(self, user: user_pb2.User) -> None:
        self.writes.setdefault(user.id, []).append((time.monotonic(), int(user.etag)))

    def stale(self, bound: float) -> list[str]:
        """Gets that answered a version older than one acknowledged `bound` seconds before
        they were sent."""
        found = []
        for seen in self.reads:
            due = [v for at, v in self.writes.get(seen.user, []) if at + bound < seen.sent]
            if due and (seen.version is None or seen.version < max(due)):
                found.append(
                    f"{seen.user} via process {seen.via}: version {seen.version}, "
                    f"{max(due)} was acknowledged more than {bound}s before"
                )
        return found


class Fleet:
    def __init__(self, servers: list[Server], tenant: str) -> None:
        self.servers = servers
        self.tenant = tenant
        self.channels = [aio.insecure_channel(s.address, options=CHANNEL_OPTIONS) for s in servers]
        # One channel over every process: each call of a transaction goes to the next one.
        self.spread = aio.insecure_channel(
            "ipv4:" + ",".join(s.address for s in servers),
            options=[*CHANNEL_OPTIONS, ("grpc.lb_policy_name", "round_robin")],
        )
        self.ledger = Ledger()

    def users(self) -> tuple[int, user_pb2_grpc.UserServiceStub]:
        index = random.randrange(len(self.channels))
        return index, user_pb2_grpc.UserServiceStub(self.channels[index])

    async def call(self, what: str, call: Awaitable[object]) -> object | None:
        """Awaits `call`; a failure is counted by code and returns None."""
        try:
            result = await call
        except aio.AioRpcError as exc:
            self.ledger.codes[f"{what}:{exc.code().name}"] += 1
            if exc.code() in FAULTS:
                self.ledger.faults.append(f"{what}: {exc.code().name} {exc.details()}")
            return None
        self.ledger.codes[f"{what}:OK"] += 1
        return result

    async def get(self, user_id: str) -> None:
        via, stub = self.users()
        sent = time.monotonic()
        try:
            got = await stub.GetUser(
                user_pb2.GetUserRequest(id=user_id), metadata=md(self.tenant), timeout=RPC_TIMEOUT
            )
        except aio.AioRpcError as exc:
            self.ledger.codes[f"get:{exc.code().name}"] += 1
            if exc.code() in FAULTS:
                self.ledger.faults.append(f"get: {exc.code().name} {exc.details()}")
            elif exc.code() == grpc.StatusCode.NOT_FOUND:
                self.ledger.reads.append(Seen(user_id, sent, None, via))
            return
        self.ledger.codes["get:OK"] += 1
        self.ledger.reads.append(Seen(user_id, sent, int(got.etag), via))

    async def close(self) -> None:
        for channel in (*self.channels, self.spread):
            await channel.close()


async def owner(fleet: Fleet, index: int, until: float) -> None:
    """Creates users of its own, then reads, updates (with the etag a Get gave) and deletes
    them through random processes."""
    mine: list[str] = []
    n = 0
    while time.monotonic() < until:
        n += 1
        if len(mine) < USERS_PER_OWNER:
            _, stub = fleet.users()
            name = f"o{index}-{n}-{uuid.uuid4().hex[:6]}"
            created = await fleet.call(
                "create",
                stub.CreateUser(
                    user_pb2.CreateUserRequest(
                        user=user_pb2.User(email=f"{name}@example.com", username=name)
                    ),
                    metadata=md(fleet.tenant),
                    timeout=RPC_TIMEOUT,
                ),
            )
            if isinstance(created, user_pb2.User):
                fleet.ledger.acknowledge(created)
                mine.append(created.id)
            continue
        user_id = random.choice(mine)
        await fleet.get(user_id)
        _, stub = fleet.users()
        got = await fleet.call(
            "read-for-write",
            stub.GetUser(
                user_pb2.GetUserRequest(id=user_id), metadata=md(fleet.tenant), timeout=RPC_TIMEOUT
            ),
        )
        if not isinstance(got, user_pb2.User):
            continue
        if random.random() < 0.05:
            done = await fleet.call(
                "delete",
                stub.DeleteUser(
                    user_pb2.DeleteUserRequest(id=user_id, etag=got.etag),
                    metadata=md(fleet.tenant),
                    timeout=RPC_TIMEOUT,
                ),
            )
            if isinstance(done, user_pb2.User):
                fleet.ledger.acknowledge(done)
                fleet.ledger.deleted[user_id] = time.monotonic()
                mine.remove(user_id)
            continue
        changed = user_pb2.User(id=user_id, etag=got.etag, display_name=f"v{n}")
        updated = await fleet.call(
            "update",
            stub.UpdateUser(
                user_pb2.UpdateUserRequest(
                    user=changed, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
                ),
                metadata=md(fleet.tenant),
                timeout=RPC_TIMEOUT,
            ),
        )
        if isinstance(updated, user_pb2.User):
            fleet.ledger.acknowledge(updated)


async def reader(fleet: Fleet, until: float) -> None:
    """Reads anybody's users through random processes, keeping every process's cache warm."""
    while time.monotonic() < until:
        known = list(fleet.ledger.writes)
        if not known:
            await asyncio.sleep(0.01)
            continue
        await fleet.get(random.choice(known))


async def transactor(fleet: Fleet, index: int, until: float) -> None:
    """Transactions across calls whose calls the round_robin channel spreads over every
    process: creates, then mostly Commit, sometimes Rollback."""
    transactions = transaction_pb2_grpc.TransactionServiceStub(fleet.spread)
    users = user_pb2_grpc.UserServiceStub(fleet.spread)
    n = 0
    while time.monotonic() < until:
        n += 1
        tag = f"tx{index}-{n}-{uuid.uuid4().hex[:8]}"
        begun = await fleet.call(
            "begin",
            transactions.BeginTransaction(
                transaction_pb2.BeginTransactionRequest(),
                metadata=md(fleet.tenant),
                timeout=RPC_TIMEOUT,
            ),
        )
        if not isinstance(begun, transaction_pb2.Transaction):
            continue
        inside = md(fleet.tenant, x_transaction_id=begun.id)
        for i in range(CREATES_PER_TRANSACTION):
            name = f"{tag}-{i}"
            # A careless client: it commits whatever its calls answered. A call that
            # did not reach the transaction must keep it from committing.
            await fleet.call(
                "create-in-transaction",
                users.CreateUser(
                    user_pb2.CreateUserRequest(
                        user=user_pb2.User(
                            email=f"{name}@example.com", username=name, display_name=tag
                        )
                    ),
                    metadata=inside,
                    timeout=RPC_TIMEOUT,
                ),
            )
        if random.random() < 0.2:
            await fleet.call(
                "rollback",
                transactions.Rollback(
                    transaction_pb2.RollbackRequest(transaction_id=begun.id),
                    metadata=md(fleet.tenant),
                    timeout=RPC_TIMEOUT,
                ),
            )
            fleet.ledger.transactions[tag] = "ROLLED_BACK"
            continue
        committed = await fleet.call(
            "commit",
            transactions.Commit(
                transaction_pb2.CommitRequest(transaction_id=begun.id),
                metadata=md(fleet.tenant),
                timeout=RPC_TIMEOUT,
            ),
        )
        fleet.ledger.transactions[tag] = "COMMITTED" if committed is not None else "FAILED"


async def drive(fleet: Fleet, seconds: float) -> None:
    until = time.monotonic() + seconds
    tasks: list[Callable[[], Awaitable[None]]] = [
        *(lambda i=i: owner(fleet, i, until) for i in range(OWNERS)),
        *(lambda i=i: transactor(fleet, i, until) for i in range(TRANSACTORS)),
        *(lambda: reader(fleet, until) for _ in range(READERS)),
    ]
    await asyncio.gather(*(task() for task in tasks))


async def database_rows(database_url: str, tenant: str) -> dict[str, tuple[int, bool, str]]:
    """id -> (version, deleted, display_name) of the tenant's users, read from PostgreSQL."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, version, delete_time IS NOT NULL AS deleted, display_name "
            "FROM users WHERE tenant_id = $1",
            tenant,
        )
    finally:
        await conn.close()
    return {str(r["id"]): (r["version"], r["deleted"], r["display_name"]) for r in rows}


@contextlib.asynccontextmanager
async def fleet_of(envs: list[dict[str, str]], tmp_path: Path) -> AsyncIterator[list[Server]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                serving(env, tmp_path, env["REPOGATE_LISTEN"], "--no-migrate")
            )
            for env in envs
        ]
        yield servers


def fleet_env(tmp_path: Path, database_url: str, **settings: str) -> list[dict[str, str]]:
    """Each process's environment: the README's fleet settings (one page-token secret for
    all, the default sidecar-sized pools) and an address of its own."""
    secret = uuid.uuid4().hex * 2
    envs = []
    for _ in range(PROCESSES):
        env = cli_env(
            tmp_path,
            database_url=database_url,
            page_token_secret=secret,
            access_log="false",
            **settings,
        )
        port = free_port()
        env["REPOGATE_LISTEN"] = f"127.0.0.1:{port}"
        env["REPOGATE_ADVERTISE_ADDRESS"] = f"127.0.0.1:{port}"
        envs.append(env)
    return envs


def check(ledger: Ledger, rows: dict[str, tuple[int, bool, str]], logs: list[str]) -> None:
    assert ledger.faults == [], ledger.codes
    # Every call of a transaction reached it, whichever process it landed on.
    assert {code for code in ledger.codes if code.startswith("create-in-transaction:")} == {
        "create-in-transaction:OK"
    }, ledger.codes
    assert ledger.stale(STALENESS_BOUND) == []
    # Every acknowledged write is there, at least as new as acknowledged.
    for user_id, writes in ledger.writes.items():
        assert user_id in rows, f"acknowledged user {user_id} is missing"
        assert rows[user_id][0] >= writes[-1][1], user_id
    for user_id in ledger.deleted:
        assert rows[user_id][1], f"acknowledged delete of {user_id} is missing"
    # Transactions: all of their creates or none.
    by_tag = Counter(name for _, _, name in rows.values() if name.startswith("tx"))
    for tag, outcome in ledger.transactions.items():
        count = by_tag.get(tag, 0)
        if outcome == "COMMITTED":
            assert count == CREATES_PER_TRANSACTION, (tag, count)
        elif outcome == "ROLLED_BACK":
            assert count == 0, (tag, count)
        else:
            assert count in (0, CREATES_PER_TRANSACTION), (tag, count)
    for log in logs:
        assert "prepared statement" not in log
        assert "Traceback" not in log
    # The traffic was what the test claims (not a vacuous pass).
    assert ledger.codes["update:OK"] >= 50, ledger.codes
    assert ledger.codes["get:OK"] >= 200, ledger.codes
    assert list(ledger.transactions.values()).count("COMMITTED") >= 5, ledger.codes
    hits_after_writes = [s for s in ledger.reads if len(ledger.writes.get(s.user, [])) > 1]
    assert len(hits_after_writes) >= 100


async def run_fleet(envs: list[dict[str, str]], tmp_path: Path, database_url: str) -> None:
    code, _, err = await run_async(["migrate"], envs[0], tmp_path)
    assert code == 0, err
    tenant = f"t-{uuid.uuid4().hex[:16]}"
    async with fleet_of(envs, tmp_path) as servers:
        fleet = Fleet(servers, tenant)
        try:
            await drive(fleet, DURATION)
        finally:
            await fleet.close()
        logs = [server.output() for server in servers]
    check(fleet.ledger, await database_rows(database_url, tenant), logs)


async def test_a_fleet_on_postgresql_with_caches_in_each_process(
    postgresql_url: str, tmp_path: Path
) -> None:
    await run_fleet(fleet_env(tmp_path, postgresql_url), tmp_path, postgresql_url)


async def test_a_fleet_through_pgbouncer_sharing_a_redis(
    postgresql_url: str, tmp_path: Path
) -> None:
    await require_redis()
    with pgbouncer.running(postgresql_url) as bouncer:
        envs = fleet_env(
            tmp_path,
            bouncer.url(postgresql_url),
            db_pgbouncer="true",
            database_session_url=postgresql_url,
            redis_url=REDIS_URL,
        )
        await run_fleet(envs, tmp_path, postgresql_url)

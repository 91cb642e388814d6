"""Calls of a transaction that land on a process other than its owner, through real
servers on one database: forwarded and answered as the owner answers, forged ids
refused before anything is dialled, and an owner that cannot be reached kept from
committing what it did get."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select, text

from repogate.v1 import transaction_pb2 as pb
from repogate.v1 import transaction_pb2_grpc, user_pb2, user_pb2_grpc
from repositories.database import Database, create_engine
from repositories.tables import transaction_outcomes
from repositories.transaction_ids import TransactionIds
from tests.e2e.support import Dedicated, StartRepogate, all_users, eventually, fails
from tests.e2e.test_cli import free_port
from tests.pki import Authority
from tests.proxy import Proxy
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

TxStub = transaction_pb2_grpc.TransactionServiceStub
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
SECRET = "a-secret-every-process-of-the-fleet-shares"
CREATE = "/repogate.v1.UserService/CreateUser"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(database_url))
    yield database
    await database.dispose()


async def fleet(start: StartRepogate, database_url: str, **settings: Any) -> list[Dedicated]:
    """Two servers on one database, sharing the key that signs transaction ids."""
    shared = {"database_url": database_url, "db_pool_size": 4, "purge_interval": 0}
    shared |= {"page_token_secret": SECRET, **settings}
    return [await start(**shared), await start(**shared)]


def postgresql_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's write lock keeps a peer from recording a live owner's abort")


async def begin(app: Dedicated, tenant: str, **metadata: str) -> pb.Transaction:
    return await TxStub(app.channel).BeginTransaction(
        pb.BeginTransactionRequest(), metadata=md(tenant, **metadata), timeout=10
    )


async def create_in(
    app: Dedicated, tenant: str, tx: pb.Transaction | str, name: str, **metadata: str
) -> user_pb2.User:
    id_ = tx if isinstance(tx, str) else tx.id
    user = user_pb2.User(email=f"{name}@example.com", username=name)
    return await app.users.CreateUser(
        user_pb2.CreateUserRequest(user=user),
        metadata=md(tenant, x_transaction_id=id_, **metadata),
        timeout=10,
    )


async def commit(app: Dedicated, tenant: str, tx: pb.Transaction | str) -> pb.CommitResponse:
    id_ = tx if isinstance(tx, str) else tx.id
    return await TxStub(app.channel).Commit(
        pb.CommitRequest(transaction_id=id_), metadata=md(tenant), timeout=10
    )


async def rollback(app: Dedicated, tenant: str, tx: pb.Transaction | str) -> None:
    id_ = tx if isinstance(tx, str) else tx.id
    await TxStub(app.channel).Rollback(
        pb.RollbackRequest(transaction_id=id_), metadata=md(tenant), timeout=10
    )


async def outcome(db: Database, tx: pb.Transaction | str) -> str | None:
    id_ = tx if isinstance(tx, str) else tx.id
    async with db.engine.connect() as conn:
        column = transaction_outcomes.c.outcome
        found = await conn.scalar(select(column).where(transaction_outcomes.c.id == id_))
    return None if found is None else str(found)


def calls_of(app: Dedicated, method: str) -> int:
    stats = app.app.calls.snapshot()
    return sum(s.count for s in stats if s.method == method)


# ------------------------------------------------------------------ answers


async def test_the_owners_errors_arrive_as_the_owner_gave_them(
    start_repogate: StartRepogate, database_url: str, tenant: str
) -> None:
    owner, peer = await fleet(start_repogate, database_url)
    tx = await begin(owner, tenant)
    await create_in(owner, tenant, tx, "ann")

    answers = []
    for app in (owner, peer):
        taken = await fails(create_in(app, tenant, tx, "ann", x_request_id="same-request"))
        with pytest.raises(aio.AioRpcError) as invalid:
            await app.users.CreateUser(
                user_pb2.CreateUserRequest(user=user_pb2.User(email="not an email", username="x")),
                metadata=md(tenant, x_transaction_id=tx.id, x_request_id="same-request"),
            )
        answers.append((taken, details(invalid.value), invalid.value.details()))
    await commit(peer, tenant, tx)

    assert answers[0] == answers[1]
    taken, invalid, _ = answers[1]
    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "RESOURCE_ALREADY_EXISTS")
    assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "user.email" in invalid.violations
    assert [u.username for u in await all_users(owner.users, tenant)] == ["ann"]


async def test_one_process_serves_a_method_for_its_own_calls_and_forwards_it_for_others(
    start_repogate: StartRepogate, database_url: str, tenant: str
) -> None:
    owner, peer = await fleet(start_repogate, database_url)
    await owner.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="ann@example.com", username="ann")),
        metadata=md(tenant),
    )
    tx = await TxStub(owner.channel).BeginTransaction(
        pb.BeginTransactionRequest(options=pb.TransactionOptions(read_only=True)),
        metadata=md(tenant),
    )
    request = user_pb2.ListUsersRequest()

    listed = [
        await peer.users.ListUsers(request, metadata=md(tenant, x_transaction_id=tx.id)),
        await peer.users.ListUsers(request, metadata=md(tenant)),  # its own
        await peer.users.ListUsers(request, metadata=md(tenant, x_transaction_id=tx.id)),
    ]
    await rollback(peer, tenant, tx)

    assert [[u.username for u in page.users] for page in listed] == [["ann"]] * 3
    assert calls_of(owner, "repogate.v1.UserService/ListUsers") == 2


# ------------------------------------------------------------------ ids


class Listener:
    """A TCP listener that counts connections and closes each at once."""

    def __init__(self) -> None:
        self.connections = 0
        self.address = ""
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


def with_address(id_: str, address: str) -> str:
    """`id_` with the owner's address swapped for `address`, its MAC kept."""
    tag, _, rest = id_.partition(".")
    other = TransactionIds(SECRET, tag=tag, address=address).mint("anyone")
    return ".".join([tag, other.split(".")[1], *rest.split(".")[1:]])


async def test_a_forged_or_edited_id_is_not_found_and_dials_no_one(
    start_repogate: StartRepogate, database_url: str, tenant: str
) -> None:
    owner, peer = await fleet(start_repogate, database_url)
    tx = await begin(owner, tenant)
    await create_in(owner, tenant, tx, "ann")

    async with Listener() as listener:
        forged = {
            "signed with another key": TransactionIds(
                "not-the-fleet-secret-at-all", address=listener.address
            ).mint(tenant),
            "address edited": with_address(tx.id, listener.address),
            "old format": f"{tx.id.partition('.')[0]}.{uuid.uuid4().hex}",
            # Signed, but under the tag of the process it lands on: its own, not found there.
            "its own tag": TransactionIds(
                SECRET, tag=peer.app.units.transactions.owner, address=listener.address
            ).mint(tenant),
        }
        answers = {}
        for why, id_ in forged.items():
            on_call = await fails(create_in(peer, tenant, id_, "bob"))
            on_commit = await fails(commit(peer, tenant, id_))
            await rollback(peer, tenant, id_)  # OK, as for any unknown id
            answers[why] = {(e.code, e.reason) for e in (on_call, on_commit)}
        other = await fails(create_in(peer, f"{tenant}-other", tx, "bob"))
        dialled_for_forgeries = listener.connections
        # The control: an id the fleet's key signed, naming the listener, is dialled.
        signed = TransactionIds(SECRET, address=listener.address).mint(tenant)
        unreachable = await fails(create_in(peer, tenant, signed, "bob"))
        dialled_for_signed = listener.connections
    await commit(peer, tenant, tx)

    not_found = (grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND")
    assert answers == {why: {not_found} for why in forged}
    assert (other.code, other.reason) == not_found
    assert dialled_for_forgeries == 0
    assert (unreachable.code, unreachable.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "TRANSACTION_OWNER_UNAVAILABLE",
    )
    assert unreachable.metadata["owner"] == listener.address
    assert dialled_for_signed > 0
    assert [u.username for u in await all_users(owner.users, tenant)] == ["ann"]


async def test_an_owner_that_restarted_at_its_address_is_gone(
    start_repogate: StartRepogate, database_url: str, db: Database, tenant: str
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    shared = {"database_url": database_url, "db_pool_size": 4, "page_token_secret": SECRET}
    first = await start_repogate(**shared, listen=listen)
    peer = await start_repogate(**shared)
    tx = await begin(first, tenant)
    await create_in(peer, tenant, tx, "ann")
    await first.app.stop(0)
    again = await start_repogate(**shared, listen=listen)

    gone = await fails(create_in(peer, tenant, tx, "bob"))
    aborted = await fails(commit(again, tenant, tx))

    assert (gone.code, gone.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "TRANSACTION_OWNER_UNAVAILABLE",
    )
    assert gone.metadata["owner"] == listen
    assert (aborted.code, aborted.reason) == (grpc.StatusCode.ABORTED, "TRANSACTION_ABORTED")
    assert await outcome(db, tx) == "ABORTED"
    assert await all_users(peer.users, tenant) == []


async def test_a_call_forwarded_once_is_never_forwarded_again(
    start_repogate: StartRepogate, database_url: str, db: Database, tenant: str
) -> None:
    owner, peer = await fleet(start_repogate, database_url)
    # Read-only: on SQLite, a writing one would hold the lock the peer's record needs.
    tx = await TxStub(owner.channel).BeginTransaction(
        pb.BeginTransactionRequest(options=pb.TransactionOptions(read_only=True)),
        metadata=md(tenant),
    )

    # As a forwarded call that reached the wrong process would arrive.
    again = await fails(create_in(peer, tenant, tx, "ann", x_repogate_forwarded=peer.app.address))

    assert (again.code, again.reason) == (UNAVAILABLE, "TRANSACTION_OWNER_UNAVAILABLE")
    assert calls_of(owner, CREATE[1:]) == 0
    assert await outcome(db, tx) == "ABORTED"


# ------------------------------------------------------------------ an owner out of reach


@pytest.fixture
async def cut_off_owner(
    start_repogate: StartRepogate, database_url: str
) -> AsyncIterator[tuple[Dedicated, Dedicated, Proxy]]:
    """An owner its peer reaches only through a proxy the test can close; the owner
    itself stays up and reachable to the test."""
    postgresql_only(database_url)
    port = free_port()
    proxy = Proxy("127.0.0.1", port)
    await proxy.open()
    shared = {"database_url": database_url, "db_pool_size": 8, "page_token_secret": SECRET}
    try:
        owner = await start_repogate(
            **shared, listen=f"127.0.0.1:{port}", advertise_address=f"127.0.0.1:{proxy.port}"
        )
        peer = await start_repogate(**shared)
        yield owner, peer, proxy
    finally:
        await proxy.close()


async def test_an_owner_out_of_reach_cannot_commit_what_reached_it(
    cut_off_owner: tuple[Dedicated, Dedicated, Proxy], db: Database, tenant: str
) -> None:
    owner, peer, proxy = cut_off_owner
    tx = await begin(owner, tenant)
    await create_in(owner, tenant, tx, "ann")
    await create_in(peer, tenant, tx, "bob")  # forwarded through the proxy
    await proxy.close()

    cut = await fails(create_in(peer, tenant, tx, "cy"))
    aborted = await fails(commit(owner, tenant, tx))

    assert (cut.code, cut.reason) == (grpc.StatusCode.UNAVAILABLE, "TRANSACTION_OWNER_UNAVAILABLE")
    assert cut.metadata["owner"] == f"127.0.0.1:{proxy.port}"
    assert (aborted.code, aborted.reason) == (grpc.StatusCode.ABORTED, "TRANSACTION_ABORTED")
    assert "failed to reach its owner" in aborted.message
    assert await outcome(db, tx) == "ABORTED"
    assert await all_users(owner.users, tenant) == []


async def test_commit_and_rollback_through_a_peer_that_cannot_reach_the_owner(
    cut_off_owner: tuple[Dedicated, Dedicated, Proxy], db: Database, tenant: str
) -> None:
    owner, peer, proxy = cut_off_owner
    done, open_, dropped = [await begin(owner, tenant) for _ in range(3)]
    await create_in(owner, tenant, done, "ann")
    await create_in(owner, tenant, open_, "bob")
    await create_in(owner, tenant, dropped, "cy")
    await commit(owner, tenant, done)
    retried_at_owner = await fails(commit(owner, tenant, done))
    await proxy.close()

    retried_at_peer = await fails(commit(peer, tenant, done))
    aborted_at_peer = await fails(commit(peer, tenant, open_))
    await rollback(peer, tenant, dropped)  # OK: it can no longer commit
    at_owner = [await fails(commit(owner, tenant, tx)) for tx in (open_, dropped)]

    def answer(e: Any) -> tuple[Any, ...]:
        return e.code, e.reason, e.message, {**e.metadata, "request_id": ""}

    assert answer(retried_at_peer) == answer(retried_at_owner)
    assert retried_at_peer.metadata["state"] == "COMMITTED"
    assert (aborted_at_peer.code, aborted_at_peer.reason) == (
        grpc.StatusCode.ABORTED,
        "TRANSACTION_ABORTED",
    )
    assert {(e.code, e.reason) for e in at_owner} == {
        (grpc.StatusCode.ABORTED, "TRANSACTION_ABORTED")
    }
    assert [await outcome(db, tx) for tx in (done, open_, dropped)] == [
        "COMMITTED",
        "ABORTED",
        "ABORTED",
    ]
    assert [u.username for u in await all_users(owner.users, tenant)] == ["ann"]


# ------------------------------------------------------------------ cancellation


async def blocked_by(db: Database, pid: int) -> int:
    """How many backends wait on a lock that backend `pid` holds."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    async with db.engine.connect() as conn:
        return int((await conn.execute(query, {"pid": pid})).scalar_one())


async def test_a_forwarded_call_its_client_cancels_is_cancelled_at_the_owner(
    start_repogate: StartRepogate, database_url: str, db: Database, tenant: str
) -> None:
    postgresql_only(database_url)
    owner, peer = await fleet(start_repogate, database_url)
    ann = await owner.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="ann@example.com", username="ann")),
        metadata=md(tenant),
    )
    tx = await begin(owner, tenant)
    update = user_pb2.UpdateUserRequest(user=user_pb2.User(id=ann.id, display_name="Ann"))
    async with db.engine.connect() as holder:
        await holder.execute(
            text("SELECT 1 FROM users WHERE tenant_id = :t AND id = :id FOR UPDATE"),
            {"t": tenant, "id": uuid.UUID(ann.id)},
        )
        pid = int((await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        call = peer.users.UpdateUser(update, metadata=md(tenant, x_transaction_id=tx.id))
        await eventually_async(lambda: blocked_by(db, pid), 1, "the owner's update to wait")
        call.cancel()
        await eventually_async(lambda: blocked_by(db, pid), 0, "the owner's update to stop")
        await holder.rollback()
    ended = await fails(commit(owner, tenant, tx))

    assert (ended.code, ended.metadata["state"]) == (grpc.StatusCode.NOT_FOUND, "ABORTED")
    assert await outcome(db, tx) is None  # cancelled by its caller: no peer gave up on it


async def eventually_async(probe: Any, wanted: int, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await probe()) != wanted:
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ credentials


async def test_a_forwarded_call_is_authenticated_at_the_edge_and_again_at_the_owner(
    start_repogate: StartRepogate, database_url: str, tmp_path: Path, tenant: str
) -> None:
    keys = {name: f"rg_{name}_{uuid.uuid4().hex}" for name in ("own", "roaming")}

    def keys_file(name: str, roaming_tenants: str) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(
            "".join(
                f'[keys.{key}]\nsha256 = "{hashlib.sha256(value.encode()).hexdigest()}"\n'
                f"tenants = {tenants}\n"
                for key, value, tenants in (
                    ("own", keys["own"], f'["{tenant}"]'),
                    ("roaming", keys["roaming"], roaming_tenants),
                )
            )
        )
        return path

    shared = {"database_url": database_url, "db_pool_size": 4, "page_token_secret": SECRET}
    # The peer lets the roaming key act for every tenant; the owner for another one only.
    owner = await start_repogate(
        **shared, auth_mode="keys", api_keys_file=keys_file("owner", '["elsewhere"]')
    )
    peer = await start_repogate(**shared, auth_mode="keys", api_keys_file=keys_file("peer", '"*"'))
    own = f"ApiKey {keys['own']}"
    tx = await begin(owner, tenant, authorization=own)
    before = calls_of(owner, "repogate.v1.UserService/CreateUser")

    unauthenticated = await fails(create_in(peer, tenant, tx, "ann"))
    reached_owner = calls_of(owner, "repogate.v1.UserService/CreateUser") - before
    roaming = f"ApiKey {keys['roaming']}"
    refusals = [
        await fails(create_in(app, tenant, tx, "ann", authorization=roaming, x_request_id="r1"))
        for app in (owner, peer)
    ]
    await create_in(peer, tenant, tx, "ann", authorization=own)
    await TxStub(peer.channel).Commit(
        pb.CommitRequest(transaction_id=tx.id), metadata=md(tenant, authorization=own)
    )

    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED
    assert reached_owner == 0
    assert refusals[0] == refusals[1]
    assert refusals[1].code == grpc.StatusCode.PERMISSION_DENIED
    users = await peer.users.ListUsers(
        user_pb2.ListUsersRequest(), metadata=md(tenant, authorization=own)
    )
    assert [u.username for u in users.users] == ["ann"]


async def test_peers_forward_to_each_other_over_mutual_tls(
    start_repogate: StartRepogate, database_url: str, tmp_path: Path, tenant: str
) -> None:
    ca = Authority(tmp_path, "ca")
    issued = ca.peer()
    client = ca.client()
    owner, peer = await fleet(
        start_repogate,
        database_url,
        tls_cert_file=issued.cert_file,
        tls_key_file=issued.key_file,
        tls_client_ca_file=ca.cert_file,
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem, private_key=client.key_pem, certificate_chain=client.cert_pem
    )
    async with (
        aio.secure_channel(owner.app.address, credentials) as to_owner,
        aio.secure_channel(peer.app.address, credentials) as to_peer,
    ):
        on_owner, on_peer = over_tls(owner, to_owner), over_tls(peer, to_peer)
        tx = await begin(on_owner, tenant)
        await create_in(on_peer, tenant, tx, "ann")
        await commit(on_peer, tenant, tx)
        found = await all_users(on_owner.users, tenant)

    assert [u.username for u in found] == ["ann"]
    assert owner.app.units is not None
    assert owner.app.units.transactions.stats().outcomes["COMMITTED"] == 1


async def test_peers_dial_with_the_certificate_and_ca_loaded_on_reload(
    start_repogate: StartRepogate, database_url: str, tmp_path: Path, tenant: str
) -> None:
    old_ca, new_ca = Authority(tmp_path, "old-ca"), Authority(tmp_path, "new-ca")
    cert_file, key_file, ca_file = (tmp_path / name for name in ("tls.crt", "tls.key", "ca.crt"))

    def install(ca: Authority, name: str) -> None:
        issued = ca.peer(name)
        cert_file.write_bytes(issued.cert_pem)
        key_file.write_bytes(issued.key_pem)
        ca_file.write_bytes(ca.cert_pem)

    install(old_ca, "old-peer")
    owner, peer = await fleet(
        start_repogate,
        database_url,
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        tls_client_ca_file=ca_file,
        reload_interval=0,
    )
    # Every certificate and the CA change: a peer still dialling with the old ones would
    # neither trust the owner's certificate nor be trusted by it.
    install(new_ca, "new-peer")
    assert owner.app.reload()
    assert peer.app.reload()
    client = new_ca.client()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=new_ca.cert_pem,
        private_key=client.key_pem,
        certificate_chain=client.cert_pem,
    )
    async with (
        aio.secure_channel(owner.app.address, credentials) as to_owner,
        aio.secure_channel(peer.app.address, credentials) as to_peer,
    ):
        on_owner, on_peer = over_tls(owner, to_owner), over_tls(peer, to_peer)
        tx = await begin(on_owner, tenant)
        await create_in(on_peer, tenant, tx, "ann")  # forwarded to the owner
        await commit(on_peer, tenant, tx)
        found = await all_users(on_owner.users, tenant)

    assert [u.username for u in found] == ["ann"]


async def test_peers_trust_the_peer_ca_file_for_server_only_tls(
    start_repogate: StartRepogate, database_url: str, tmp_path: Path, tenant: str
) -> None:
    ca = Authority(tmp_path, "ca")
    issued = ca.server()
    tls = {"tls_cert_file": issued.cert_file, "tls_key_file": issued.key_file}
    owner, trusting = await fleet(
        start_repogate, database_url, **tls, tls_peer_ca_file=ca.cert_file
    )
    # No peer CA and no client CA: the system's roots, which do not know this CA.
    untrusting = await start_repogate(
        database_url=database_url, db_pool_size=4, page_token_secret=SECRET, **tls
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
    async with contextlib.AsyncExitStack() as stack:
        on_owner, on_trusting, on_untrusting = [
            over_tls(
                app,
                await stack.enter_async_context(aio.secure_channel(app.app.address, credentials)),
            )
            for app in (owner, trusting, untrusting)
        ]
        tx = await begin(on_owner, tenant)
        await create_in(on_trusting, tenant, tx, "ann")
        refused = await fails(create_in(on_untrusting, tenant, tx, "bob"))

    assert (refused.code, refused.reason) == (UNAVAILABLE, "TRANSACTION_OWNER_UNAVAILABLE")
    assert refused.metadata["owner"] == owner.app.address


def over_tls(app: Dedicated, channel: aio.Channel) -> Dedicated:
    return Dedicated(app.app, channel, user_pb2_grpc.UserServiceStub(channel))


@pytest.mark.parametrize("isolation", ["REPEATABLE_READ", "SERIALIZABLE"])
async def test_a_snapshot_transaction_whose_call_could_not_reach_its_owner_is_aborted_too(
    cut_off_owner: tuple[Dedicated, Dedicated, Proxy], db: Database, tenant: str, isolation: str
) -> None:
    owner, peer, proxy = cut_off_owner
    options = pb.TransactionOptions(isolation_level=getattr(pb, f"ISOLATION_LEVEL_{isolation}"))
    tx = await TxStub(owner.channel).BeginTransaction(
        pb.BeginTransactionRequest(options=options), metadata=md(tenant)
    )
    await create_in(owner, tenant, tx, "ann")  # its snapshot is taken here
    await proxy.close()

    await fails(create_in(peer, tenant, tx, "bob"))
    aborted = await fails(commit(owner, tenant, tx))

    assert (aborted.code, aborted.reason) == (grpc.StatusCode.ABORTED, "TRANSACTION_ABORTED")
    assert await outcome(db, tx) == "ABORTED"
    assert await all_users(owner.users, tenant) == []


async def test_the_first_transaction_id_of_a_call_decides_where_it_runs(
    start_repogate: StartRepogate, database_url: str, tenant: str
) -> None:
    postgresql_only(database_url)  # two writing transactions at once
    owner, peer = await fleet(start_repogate, database_url)
    elsewhere, here = await begin(owner, tenant), await begin(peer, tenant)

    for name, first, second in (("ann", here, elsewhere), ("bob", elsewhere, here)):
        user = user_pb2.User(email=f"{name}@example.com", username=name)
        await peer.users.CreateUser(
            user_pb2.CreateUserRequest(user=user),
            metadata=(
                ("x-tenant-id", tenant),
                ("x-transaction-id", first.id),
                ("x-transaction-id", second.id),
            ),
        )
    await commit(peer, tenant, here)
    committed_here = [u.username for u in await all_users(peer.users, tenant)]
    await commit(peer, tenant, elsewhere)

    assert committed_here == ["ann"]
    assert sorted(u.username for u in await all_users(peer.users, tenant)) == ["ann", "bob"]


# ------------------------------------------------------------------ observed like any other


async def test_a_forwarded_call_is_traced_and_counted_on_both_processes(
    start_repogate: StartRepogate, database_url: str, tenant: str
) -> None:
    trace_id, caller = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    owner_spans, peer_spans = InMemorySpanExporter(), InMemorySpanExporter()
    shared = {"database_url": database_url, "db_pool_size": 4, "page_token_secret": SECRET}
    owner = await start_repogate(**shared, span_exporter=owner_spans)
    peer = await start_repogate(**shared, span_exporter=peer_spans)
    tx = await begin(owner, tenant)

    await create_in(peer, tenant, tx, "ann", traceparent=f"00-{trace_id}-{caller}-01")
    await rollback(owner, tenant, tx)

    def server_span(spans: InMemorySpanExporter) -> ReadableSpan:
        (span,) = [s for s in spans.get_finished_spans() if s.name == CREATE[1:]]
        return span

    await eventually(lambda: bool(owner_spans.get_finished_spans()), "the owner's spans")
    at_peer, at_owner = server_span(peer_spans), server_span(owner_spans)
    assert at_peer.context.trace_id == at_owner.context.trace_id == int(trace_id, 16)
    assert at_peer.parent is not None
    assert at_peer.parent.span_id == int(caller, 16)
    assert at_owner.parent is not None
    assert at_owner.parent.span_id == at_peer.context.span_id  # the hop, as a child
    assert calls_of(peer, CREATE[1:]) == calls_of(owner, CREATE[1:]) == 1

"""`repogate serve --workers N` as real processes: one port, several workers, one
shutdown. A transaction lives in the worker that began it; its calls that reach
another worker are forwarded to it over the owner's private socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import signal
import socket
from pathlib import Path

import pytest
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from repogate.v1 import transaction_pb2 as pb
from repogate.v1 import transaction_pb2_grpc, user_pb2, user_pb2_grpc
from tests.cache_support import REDIS_URL, require_redis
from tests.e2e.test_cli import RPC_TIMEOUT, cli_env, free_port, run, serving
from tests.e2e.test_metrics import fetch
from tests.polling import eventually
from tests.rpc import md

pytestmark = pytest.mark.e2e

WORKERS = 2


def workers_env(tmp_path: Path, database_url: str, **settings: str) -> tuple[dict[str, str], str]:
    """`serve --workers` on PostgreSQL and the shared Redis, on a port of its own: the
    environment and the address."""
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(
        tmp_path,
        database_url=database_url,
        redis_url=REDIS_URL,
        cache_timeout="5",
        workers=str(WORKERS),
        listen=address,
        **settings,
    )
    return env, address


async def _workers_of(
    address: str, tenant: str, within: float = 20.0, credential: tuple[tuple[str, str], ...] = ()
) -> dict[str, aio.Channel]:
    """A channel to each worker: new connections until a transaction has begun on each
    (workers start one after another, so the first may answer alone for a while)."""
    found: dict[str, aio.Channel] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        # Channels to one target share connections unless told otherwise.
        channel = aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = transaction_pb2_grpc.TransactionServiceStub(channel)
        tx = await stub.BeginTransaction(
            pb.BeginTransactionRequest(options=pb.TransactionOptions(read_only=True)),
            metadata=(*md(tenant), *credential),
            timeout=RPC_TIMEOUT,
        )
        await stub.Rollback(
            pb.RollbackRequest(transaction_id=tx.id),
            metadata=(*md(tenant), *credential),
            timeout=RPC_TIMEOUT,
        )
        owner = tx.id.partition(".")[0]
        if owner in found:
            await channel.close()
        else:
            found[owner] = channel
        if len(found) == WORKERS:
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"connections for {within}s reached only workers {sorted(found)}")


async def test_workers_share_one_port_and_stop_together(
    postgresql_url: str, tmp_path: Path, tenant: str
) -> None:
    await require_redis()
    env, address = workers_env(tmp_path, postgresql_url)
    port = int(address.rsplit(":", 1)[1])
    async with serving(env, tmp_path, address) as server:
        channels = await _workers_of(server.address, tenant)
        (first, a), (_, b) = channels.items()
        try:
            begun = await transaction_pb2_grpc.TransactionServiceStub(a).BeginTransaction(
                pb.BeginTransactionRequest(), metadata=md(tenant), timeout=RPC_TIMEOUT
            )
            users_a, users_b = user_pb2_grpc.UserServiceStub(a), user_pb2_grpc.UserServiceStub(b)
            for name in ("ann", "bob", "cy"):
                await users_b.CreateUser(
                    user_pb2.CreateUserRequest(
                        user=user_pb2.User(email=f"{name}@example.com", username=name)
                    ),
                    metadata=md(tenant),
                    timeout=RPC_TIMEOUT,
                )
            # Begun on the first worker, listed through the second.
            elsewhere = await users_b.ListUsers(
                user_pb2.ListUsersRequest(),
                metadata=md(tenant, x_transaction_id=begun.id),
                timeout=RPC_TIMEOUT,
            )
            # A page token from one worker is good on the other: they share its key.
            page = await users_b.ListUsers(
                user_pb2.ListUsersRequest(page_size=2), metadata=md(tenant), timeout=RPC_TIMEOUT
            )
            rest = await users_a.ListUsers(
                user_pb2.ListUsersRequest(page_size=2, page_token=page.next_page_token),
                metadata=md(tenant),
                timeout=RPC_TIMEOUT,
            )
        finally:
            for channel in channels.values():
                await channel.close()
        code = await server.stop()

    assert begun.id.startswith(f"{first}.")
    assert [u.username for u in elsewhere.users] == ["ann", "bob", "cy"]
    assert [u.username for u in page.users] + [u.username for u in rest.users] == [
        "ann",
        "bob",
        "cy",
    ]
    assert code == 0
    assert server.output().count("stopped") == WORKERS
    await _port_is_free(port)


async def test_a_transaction_spread_over_two_workers_commits_whole(
    postgresql_url: str, tmp_path: Path, tenant: str
) -> None:
    await require_redis()
    env, address = workers_env(tmp_path, postgresql_url)
    async with serving(env, tmp_path, address) as server:
        channels = list((await _workers_of(server.address, tenant)).values())
        try:
            txs = transaction_pb2_grpc.TransactionServiceStub(channels[0])
            tx = await txs.BeginTransaction(
                pb.BeginTransactionRequest(), metadata=md(tenant), timeout=RPC_TIMEOUT
            )
            for i in range(8):
                # Alternately on the owner and on the other worker.
                await user_pb2_grpc.UserServiceStub(channels[i % 2]).CreateUser(
                    user_pb2.CreateUserRequest(
                        user=user_pb2.User(email=f"u{i}@example.com", username=f"u{i}")
                    ),
                    metadata=md(tenant, x_transaction_id=tx.id),
                    timeout=RPC_TIMEOUT,
                )
            await transaction_pb2_grpc.TransactionServiceStub(channels[1]).Commit(
                pb.CommitRequest(transaction_id=tx.id), metadata=md(tenant), timeout=RPC_TIMEOUT
            )
            listed = await user_pb2_grpc.UserServiceStub(channels[1]).ListUsers(
                user_pb2.ListUsersRequest(), metadata=md(tenant), timeout=RPC_TIMEOUT
            )
        finally:
            for channel in channels:
                await channel.close()
        assert await server.stop() == 0

    assert sorted(u.username for u in listed.users) == [f"u{i}" for i in range(8)]
    # The owner is reached at its private socket (the id's second part, base64url).
    address = base64.urlsafe_b64decode(tx.id.split(".")[1] + "==").decode()
    assert re.fullmatch(r"unix:/.+/worker-[01]\.sock", address), address


async def _port_is_free(port: int) -> None:
    """Every worker has let go of the port: a plain listener can take it."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"workers": "2"}, "REPOGATE_REDIS_URL"),
        ({"workers": "2", "redis_url": REDIS_URL, "listen": "unix:/tmp/x.sock"}, "TCP"),
        ({"workers": "2", "redis_url": REDIS_URL, "listen": "127.0.0.1:0"}, "TCP"),
    ],
)
def test_workers_need_a_shared_port_and_a_shared_cache(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    result = run(["serve"], cli_env(tmp_path, **settings), tmp_path)

    assert result.returncode == 2, result.stderr
    assert named in result.stderr


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))  # without SO_REUSEPORT: no worker can share it
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        env = cli_env(tmp_path, workers="2", redis_url=REDIS_URL, listen=taken)

        result = run(["serve"], env, tmp_path)

    assert result.returncode == 1, result.stderr
    assert "could not start" in result.stderr


async def test_one_metrics_endpoint_serves_every_worker_labelled(
    postgresql_url: str, tmp_path: Path, tenant: str
) -> None:
    await require_redis()
    metrics_port = free_port()
    env, address = workers_env(tmp_path, postgresql_url, metrics_listen=f"127.0.0.1:{metrics_port}")
    async with serving(env, tmp_path, address) as server:
        channels = await _workers_of(server.address, tenant)
        try:
            for name, channel in zip(("ann", "bob"), channels.values(), strict=True):
                await user_pb2_grpc.UserServiceStub(channel).CreateUser(
                    user_pb2.CreateUserRequest(
                        user=user_pb2.User(email=f"{name}@example.com", username=name)
                    ),
                    metadata=md(tenant),
                    timeout=RPC_TIMEOUT,
                )
            status, body = await asyncio.to_thread(
                fetch, f"http://127.0.0.1:{metrics_port}/metrics"
            )
        finally:
            for channel in channels.values():
                await channel.close()
        code = await server.stop()

    assert status == 200
    samples = [
        sample for family in text_string_to_metric_families(body) for sample in family.samples
    ]
    workers = [str(i) for i in range(WORKERS)]

    def by_worker(name: str, **labels: str) -> dict[str, float]:
        return {
            s.labels["worker"]: s.value
            for s in samples
            if s.name == name and labels.items() <= s.labels.items()
        }

    # One CreateUser reached each worker: counters stay per worker, never summed.
    created = {"grpc_service": "repogate.v1.UserService", "grpc_method": "CreateUser"}
    assert by_worker("grpc_server_handled_total", **created, grpc_code="OK") == dict.fromkeys(
        workers, 1
    )
    # So do the series derived at scrape time from the counters.
    assert by_worker("grpc_server_msg_sent_total", **created) == dict.fromkeys(workers, 1)
    assert by_worker("repogate_grpc_server_in_flight", **created) == dict.fromkeys(workers, 0)
    # What each worker reads at scrape time comes through too.
    assert set(by_worker("repogate_db_pool_size")) == set(workers)
    closed = by_worker("repogate_breaker_state", breaker="database", state="CLOSED")
    assert closed == dict.fromkeys(workers, 1)
    assert by_worker("repogate_worker_up") == dict.fromkeys(workers, 1)
    assert [s.name for s in samples if "worker" not in s.labels] == []
    assert code == 0


async def test_sighup_reloads_every_worker_and_a_secret_file_reaches_them(
    postgresql_url: str, tmp_path: Path, tenant: str
) -> None:
    await require_redis()
    old_key, new_key = f"rg_{secrets.token_urlsafe(16)}", f"rg_{secrets.token_urlsafe(16)}"
    keys_file = tmp_path / "keys.json"

    def publish(key: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        document = {"keys": {"app": {"sha256": digest, "tenants": [tenant]}}}
        (tmp_path / "keys.new").write_text(json.dumps(document))
        (tmp_path / "keys.new").replace(keys_file)

    publish(old_key)
    (tmp_path / "page-secret").write_text(secrets.token_urlsafe(24) + "\n")
    env, address = workers_env(
        tmp_path,
        postgresql_url,
        auth_mode="keys",
        api_keys_file=str(keys_file),
        # The supervisor gives its workers the secret itself, never it and its _FILE both.
        page_token_secret_file=str(tmp_path / "page-secret"),
        reload_interval="0",
    )
    async with serving(env, tmp_path, address) as server:
        old = (("authorization", f"ApiKey {old_key}"),)
        workers = await _workers_of(address, tenant, credential=old)
        publish(new_key)
        server.proc.send_signal(signal.SIGHUP)

        async def accepted(channel: aio.Channel) -> bool:
            try:
                await user_pb2_grpc.UserServiceStub(channel).ListUsers(
                    user_pb2.ListUsersRequest(),
                    metadata=(*md(tenant), ("authorization", f"ApiKey {new_key}")),
                    timeout=RPC_TIMEOUT,
                )
            except aio.AioRpcError:
                return False
            return True

        try:
            for owner, channel in workers.items():
                await eventually(lambda c=channel: accepted(c), f"worker {owner} reloading")
        finally:
            for channel in workers.values():
                await channel.close()
        assert server.proc.returncode is None
        # Stopped, not killed on the way out: a supervisor killed outright leaves its
        # workers running.
        assert await server.stop() == 0

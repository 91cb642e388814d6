"""Shutdown answers every call it received: a call either finishes or is refused with
UNAVAILABLE `SHUTTING_DOWN` (which clients retry), never CANCELLED, never left to
its deadline; and the database holds exactly the writes answered OK.

A burst of CreateUser calls sent over the last few milliseconds before SIGTERM, to
`repogate serve` and to a supervisor of two workers; and a call that outlives the
grace, through Repogate.stop().
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from pathlib import Path

import asyncpg
import pytest
from grpc import aio

from repogate.v1 import user_pb2, user_pb2_grpc
from tests.cache_support import REDIS_URL, require_redis
from tests.conftest import _plain_dsn
from tests.e2e.support import StartRepogate, create, update
from tests.e2e.test_cli import (
    EXIT_TIMEOUT,
    REPOGATE,
    RPC_TIMEOUT,
    START_TIMEOUT,
    Server,
    _kill,
    cli_env,
    free_port,
    serving,
)
from tests.polling import eventually
from tests.row_locks import user_locked
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

CALLS = 40
# The calls go out over the last SPREAD seconds before the signal.
SPREAD = 0.018
RUNS = 3


async def outcome(call: aio.UnaryUnaryCall) -> str:
    """OK, or the status code and ErrorInfo reason the call failed with."""
    try:
        await call
    except aio.AioRpcError as exc:
        raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
        reason = details(exc).reason if raw is not None else f"no ErrorInfo: {exc.details()}"
        return f"{exc.code().name} {reason}"
    return "OK"


async def burst_through_sigterm(server: Server, tenant: str) -> list[tuple[str, str]]:
    """CALLS CreateUser sent at random over SPREAD seconds, the last as SIGTERM goes out;
    returns each call's username and outcome once the server has exited 0."""
    async with aio.insecure_channel(server.address) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        await create(users, tenant, username="first")  # the connection is up

        async def call(name: str, delay: float) -> tuple[str, str]:
            await asyncio.sleep(delay)
            request = user_pb2.CreateUserRequest(
                user=user_pb2.User(email=f"{name}@example.com", username=name)
            )
            return name, await outcome(
                users.CreateUser(request, metadata=md(tenant), timeout=RPC_TIMEOUT)
            )

        calls = [
            asyncio.create_task(call(f"u{i}", random.uniform(0, SPREAD))) for i in range(CALLS)
        ]
        await asyncio.sleep(SPREAD)
        code = await server.stop(signal.SIGTERM)
        answered = await asyncio.gather(*calls)
    assert code == 0, server.output()
    return answered


async def usernames(postgresql_url: str, tenant: str) -> set[str]:
    conn = await asyncpg.connect(_plain_dsn(postgresql_url))
    try:
        rows = await conn.fetch("SELECT username FROM users WHERE tenant_id = $1", tenant)
    finally:
        await conn.close()
    return {row["username"] for row in rows}


async def check_bursts(env: dict[str, str], tmp_path: Path, postgresql_url: str) -> None:
    for _ in range(RUNS):
        tenant = f"t-{uuid.uuid4().hex[:16]}"
        async with serving(env, tmp_path, env["REPOGATE_LISTEN"]) as server:
            answered = await burst_through_sigterm(server, tenant)

        outcomes = {result for _, result in answered}
        assert outcomes <= {"OK", "UNAVAILABLE SHUTTING_DOWN"}, answered
        written = {name for name, result in answered if result == "OK"}
        assert await usernames(postgresql_url, tenant) == written | {"first"}


async def test_a_burst_before_sigterm_is_answered_ok_or_unavailable(
    tmp_path: Path, postgresql_url: str
) -> None:
    env = cli_env(tmp_path, database_url=postgresql_url, db_pool_size="3", db_max_overflow="2")

    await check_bursts(env, tmp_path, postgresql_url)


async def test_a_burst_before_sigterm_to_the_supervisor_is_answered_ok_or_unavailable(
    tmp_path: Path, postgresql_url: str
) -> None:
    await require_redis()
    env = cli_env(
        tmp_path,
        database_url=postgresql_url,
        redis_url=REDIS_URL,
        cache_timeout="5",
        workers="2",
        db_pool_size="3",
        db_max_overflow="2",
    )
    env["REPOGATE_LISTEN"] = f"127.0.0.1:{free_port()}"

    await check_bursts(env, tmp_path, postgresql_url)


async def test_sigterm_while_the_workers_start_stops_the_supervisor_with_exit_0(
    tmp_path: Path, postgresql_url: str
) -> None:
    """Workers still starting die of the SIGTERM they cannot catch yet, or are told to
    stop as they are started: either way they stopped as asked, having served nothing."""
    await require_redis()
    env = cli_env(tmp_path, database_url=postgresql_url, redis_url=REDIS_URL, workers="2")
    env["REPOGATE_LISTEN"] = f"127.0.0.1:{free_port()}"
    log = tmp_path / "supervisor.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(REPOGATE), "serve", env=env, cwd=tmp_path, stdout=out, stderr=out
        )
    try:
        await eventually(
            lambda: "supervising" in log.read_text(), "the supervisor to start", START_TIMEOUT
        )
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT)
    finally:
        await _kill(proc)

    assert code == 0, log.read_text()


async def test_a_call_that_outlives_the_grace_is_unavailable_and_undone(
    start_repogate: StartRepogate, postgresql_url: str, tenant: str
) -> None:
    """A row lock holds the server's UPDATE past the grace: the drain cancels it, its
    client hears UNAVAILABLE (not CANCELLED), and the row stays as it was."""
    running = await start_repogate(database_url=postgresql_url, db_pool_size=3)
    ann = await create(running.users, tenant, username="ann")
    async with user_locked(postgresql_url, tenant, ann.id) as lock:
        renamed = user_pb2.User(id=ann.id, display_name="late")
        in_flight = asyncio.ensure_future(outcome(update(running.users, tenant, renamed)))

        async def waiting() -> bool:
            return await lock.blocked() > 0

        async def gone() -> bool:
            return await lock.blocked() == 0

        await eventually(waiting, "the UPDATE to wait for the row lock")

        await running.app.stop(grace=0.5)
        answer = await asyncio.wait_for(in_flight, EXIT_TIMEOUT)
        await eventually(gone, "the cancelled UPDATE to stop waiting")
        await lock.release()
        stored = await lock.display_name()

    assert answer == "UNAVAILABLE SHUTTING_DOWN"
    assert stored == ""

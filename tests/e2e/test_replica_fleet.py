"""Two `repogate serve` processes on one primary, its streaming standby and one Redis:
a consistency token from one is honoured by the other, and the shared read-through
cache never answers a token read with an entry older than its write."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from repogate.v1 import user_pb2, user_pb2_grpc
from server.consistency import KEY
from tests.cache_support import REDIS_URL, require_redis
from tests.e2e.test_cli import cli_env, free_port, serving
from tests.e2e.test_metrics import fetch
from tests.polling import eventually
from tests.replica import Pair, running_pair
from tests.rpc import md

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with running_pair() as started:
        yield started


@pytest.fixture
async def fleet(pair: Pair, tmp_path: Path) -> AsyncIterator[list[tuple[str, str]]]:
    """Two serve processes sharing the secret, the cache and the databases: each one's
    address and metrics address."""
    await require_redis()
    secret = secrets.token_urlsafe(32)
    started: list[tuple[str, str]] = []
    async with contextlib.AsyncExitStack() as stack:
        for n in range(2):
            address, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            env = cli_env(
                tmp_path,
                database_url=pair.primary_url,
                database_replica_urls=pair.replica_url,
                redis_url=REDIS_URL,
                page_token_secret=secret,
                cache_timeout="5",
                listen=address,
                metrics_listen=metrics,
            )
            cwd = tmp_path / f"process{n}"
            cwd.mkdir()
            await stack.enter_async_context(serving(env, cwd, address))
            started.append((address, metrics))
        try:
            yield started
        finally:
            await pair.resume_replay()


def _usable(metrics: str) -> bool:
    status, body = fetch(f"http://{metrics}/metrics")
    assert status == 200
    return any(
        sample.value == 1
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "repogate_replica_usable"
    )


async def test_a_token_from_one_process_is_honoured_by_another_through_the_cache(
    fleet: list[tuple[str, str]], pair: Pair
) -> None:
    (a, _), (b, b_metrics) = fleet
    tenant = f"fleet-{secrets.token_hex(4)}"
    async with aio.insecure_channel(a) as to_a, aio.insecure_channel(b) as to_b:
        users_a, users_b = user_pb2_grpc.UserServiceStub(to_a), user_pb2_grpc.UserServiceStub(to_b)
        user = await users_a.CreateUser(
            user_pb2.CreateUserRequest(
                user=user_pb2.User(username="eve", email="eve@example.com", display_name="old")
            ),
            metadata=md(tenant),
        )
        await eventually(
            lambda: asyncio.to_thread(_usable, b_metrics), "B's standby in use", within=30
        )

        async def name(token: str | None = None) -> str:
            extra = {} if token is None else {"x_consistency_token": token}
            got = await users_b.GetUser(
                user_pb2.GetUserRequest(id=user.id), metadata=md(tenant, **extra)
            )
            return got.display_name

        # B reads the row from its standby and caches it in the shared Redis.
        async def named(expected: str) -> bool:
            try:
                return await name() == expected
            except aio.AioRpcError as exc:
                # Created within the lag bound: the standby may not have it yet.
                if exc.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
                return False

        await eventually(lambda: named("old"), "the standby to replay the create")
        await pair.pause_replay()
        user.display_name = "new"
        call = users_a.UpdateUser(user_pb2.UpdateUserRequest(user=user), metadata=md(tenant))
        await call
        token = dict(await call.trailing_metadata() or ()).get(KEY)
        assert isinstance(token, str)

        # Without a token, B may answer from its paused standby (within the lag bound);
        # A's tombstone keeps that older row out of the shared cache.
        assert await name() == "old"
        # With A's token, B reads neither the paused standby nor an older cached row.
        assert await name(token) == "new"
        assert await name() == "new"  # the primary's row, cached by the token read

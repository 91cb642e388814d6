"""The pipelined Redis connection (server/cache/lane.py) against the real Redis, and
through a proxy that cuts, stalls and restores it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.cache import redis as redis_backend
from server.cache.errors import CacheUnavailable
from server.cache.lane import Lane
from server.cache.redis import RedisBackend
from tests.cache_support import CLOSED_REDIS_URL, REDIS_URL, require_redis
from tests.pki import Authority
from tests.polling import eventually
from tests.proxy import Proxy

pytestmark = pytest.mark.integration

TIMEOUT = 2.0


@pytest.fixture
def prefix() -> str:
    return f"rgtest:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def lane() -> AsyncIterator[Lane]:
    await require_redis()
    lane = Lane(REDIS_URL, TIMEOUT)
    yield lane
    await lane.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    await require_redis()
    parts = urlsplit(REDIS_URL)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.open()
    yield proxy
    await proxy.close()


def through(proxy: Proxy) -> str:
    """REDIS_URL with the proxy's address."""
    parts = urlsplit(REDIS_URL)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))


async def test_concurrent_commands_each_get_their_own_reply(lane: Lane, prefix: str) -> None:
    keys = [f"{prefix}{i}" for i in range(300)]
    await asyncio.gather(*(lane.execute("SET", key, b"v%d" % i) for i, key in enumerate(keys)))
    # GETs of present and absent keys, integer and status replies, all in flight at once.
    calls = []
    for key in keys:
        calls.append(lane.execute("GET", key))
        calls.append(lane.execute("GET", key + ":absent"))
        calls.append(lane.execute("STRLEN", key))
        calls.append(lane.execute("PING"))
    replies = await asyncio.gather(*calls)
    expected = []
    for i in range(len(keys)):
        value = b"v%d" % i
        expected += [value, None, len(value), b"PONG"]
    assert replies == expected
    await lane.execute("DEL", *keys)


async def test_values_larger_than_one_read_arrive_whole(lane: Lane, prefix: str) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, with \r\n inside it
    await lane.execute("SET", prefix, big)
    assert await asyncio.gather(*(lane.execute("GET", prefix) for _ in range(3))) == [big] * 3
    await lane.execute("DEL", prefix)


async def test_an_error_reply_fails_its_command_alone(lane: Lane, prefix: str) -> None:
    await lane.execute("SET", prefix, b"v")
    await lane.execute("HSET", prefix + ":hash", "f", "v")
    before, wrong, after = await asyncio.gather(
        lane.execute("GET", prefix),
        lane.execute("GET", prefix + ":hash"),  # WRONGTYPE
        lane.execute("GET", prefix),
        return_exceptions=True,
    )
    assert before == after == b"v"
    assert isinstance(wrong, ResponseError)
    assert "WRONGTYPE" in str(wrong)
    await lane.execute("DEL", prefix, prefix + ":hash")


async def test_a_cancelled_command_leaves_the_others_in_step(proxy: Proxy, prefix: str) -> None:
    lane = Lane(through(proxy), TIMEOUT)
    try:
        await lane.execute("SET", prefix, b"v")
        proxy.reply_delay = 0.2
        cancelled = asyncio.ensure_future(lane.execute("GET", prefix + ":absent"))
        following = asyncio.ensure_future(lane.execute("GET", prefix))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        assert await following == b"v"
        proxy.reply_delay = 0
        assert await lane.execute("GET", prefix + ":absent") is None
        await lane.execute("DEL", prefix)
    finally:
        await lane.close()


async def test_a_dropped_connection_fails_what_is_in_flight_then_reconnects(
    proxy: Proxy, prefix: str
) -> None:
    lane = Lane(through(proxy), TIMEOUT)
    try:
        assert await lane.execute("PING") == b"PONG"
        proxy.reply_delay = 0.3
        in_flight = [asyncio.ensure_future(lane.execute("GET", prefix)) for _ in range(5)]
        await asyncio.sleep(0.1)
        await proxy.close()
        for call in in_flight:
            with pytest.raises(RedisConnectionError):
                await call
        with pytest.raises((RedisConnectionError, RedisTimeoutError, OSError)):
            await lane.execute("PING")  # nothing listens: refused
        proxy.reply_delay = 0
        await proxy.open()
        assert await lane.execute("PING") == b"PONG"
    finally:
        await lane.close()


async def test_a_silent_redis_times_out_every_command_behind_it_then_reconnects(
    proxy: Proxy, prefix: str
) -> None:
    lane = Lane(through(proxy), 0.2)
    try:
        assert await lane.execute("PING") == b"PONG"
        proxy.blackhole()
        first = asyncio.ensure_future(lane.execute("GET", prefix))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(lane.execute("GET", prefix))
        for call in (first, second):
            with pytest.raises(RedisTimeoutError):
                await call
        # Both failed together, when the first had waited its timeout.
        assert first.exception() is second.exception()
        proxy.restore()
        assert await lane.execute("PING") == b"PONG"
    finally:
        await lane.close()


async def test_an_unreachable_redis_fails_each_command() -> None:
    lane = Lane(CLOSED_REDIS_URL, TIMEOUT)
    for _ in range(2):
        with pytest.raises((RedisConnectionError, OSError)):
            await lane.execute("PING")
    await lane.close()


async def test_callers_arriving_while_it_connects_share_one_connection(
    proxy: Proxy, prefix: str
) -> None:
    lane = Lane(through(proxy), TIMEOUT)
    try:
        replies = await asyncio.gather(*(lane.execute("PING") for _ in range(20)))
        assert replies == [b"PONG"] * 20
        assert len(proxy._writers) == 2  # one client connection, one to Redis
    finally:
        await lane.close()


async def test_the_backend_turns_lane_failures_into_misses_it_counts(prefix: str) -> None:
    await require_redis()
    redis = RedisBackend(REDIS_URL, timeout=TIMEOUT)
    try:
        await redis._redis.hset(prefix, "f", "v")
        with pytest.raises(CacheUnavailable):
            await redis.get(prefix)  # WRONGTYPE
        assert redis.stats.errors == 1
        assert await redis.get(prefix + ":absent") is None
        assert redis.stats.misses == 1
    finally:
        await redis.delete([prefix])
        await redis.close()


async def test_set_if_newer_loads_its_script_when_redis_does_not_know_it(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await require_redis()
    # A digest Redis has never seen: as after a restart or SCRIPT FLUSH.
    monkeypatch.setattr(redis_backend, "_SET_IF_NEWER_SHA", "0" * 40)
    redis = RedisBackend(REDIS_URL, timeout=TIMEOUT)
    try:
        assert await redis.set_if_newer(prefix, b"%020dV" % 3, 10)
        assert not await redis.set_if_newer(prefix, b"%020dV" % 2, 10)
        assert await redis.get(prefix) == b"%020dV" % 3
        assert redis.stats.errors == 0
    finally:
        await redis.delete([prefix])
        await redis.close()


@pytest.fixture
async def tls_redis(tmp_path: Path) -> AsyncIterator[str]:
    """A Redis of this test's own that takes only TLS and a password: its URL (db 3)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    authority = Authority(tmp_path)
    issued = authority.server()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    argv += ["--tls-cert-file", str(issued.cert_file), "--tls-key-file", str(issued.key_file)]
    argv += ["--tls-ca-cert-file", str(authority.cert_file), "--tls-auth-clients", "no"]
    argv += ["--requirepass", "s3cret", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(tmp_path)]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"rediss://:s3cret@127.0.0.1:{port}/3?ssl_ca_certs={authority.cert_file}"
    try:
        client = aioredis.from_url(url)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except (RedisError, OSError):
                return False

        await eventually(answers, "the TLS Redis to answer")
        await client.aclose()
        yield url
    finally:
        process.terminate()
        await process.wait()


async def test_tls_password_and_database_come_from_the_url(tls_redis: str, prefix: str) -> None:
    redis = RedisBackend(tls_redis, timeout=TIMEOUT)
    plain = aioredis.from_url(tls_redis.replace("/3?", "/0?"))
    try:
        assert await redis.set_if_newer(prefix, b"%020dV" % 1, 10)
        assert await redis.get(prefix) == b"%020dV" % 1
        assert await redis._redis.get(prefix) == b"%020dV" % 1  # db 3, through redis-py
        assert await plain.get(prefix) is None  # not db 0
        assert redis.stats.errors == 0
    finally:
        await plain.aclose()
        await redis.close()
    wrong = RedisBackend(tls_redis.replace("s3cret", "wrong"), timeout=TIMEOUT)
    with pytest.raises(CacheUnavailable):
        await wrong.get(prefix)
    await wrong.close()

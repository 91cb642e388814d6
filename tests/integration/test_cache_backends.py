"""Both cache backends, the same tests: Redis (real, at REPOGATE_TEST_REDIS_URL) and
the in-memory LRU. Keys live under a prefix of the test's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.cache.backend import INT64_MAX, INT64_MIN, CacheBackend
from server.cache.errors import CacheUnavailable, NotInteger
from server.cache.glob import compile_glob, escape
from server.cache.memory import MemoryBackend
from server.cache.redis import RedisBackend
from tests.cache_support import (
    CACHE_BACKENDS,
    CLOSED_REDIS_URL,
    REDIS_URL,
    require_redis,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

# Generous: these tests are about behaviour, and a loaded machine is slow.
TIMEOUT = 2.0
# Keys and patterns built from every glob metacharacter, `:`, a space and a
# two-byte character.
TRICKY_KEYS = [
    "a", "b", "ab", "abc", "a:b", ":", "a:", ":a", "*", "?", "[", "]", "\\", "^", "-",
    "[a]", "a*b", "a?b", "a\\b", "x y", "é", "aé", "é:é", "]a[", "\\*", "a-z", "ba",
]  # fmt: skip
TRICKY_PATTERNS = [
    "*", "?", "??", "?*", "*?", "a*", "*a", "*a*", "a?b", "[a-z]*", "[^a]*", "[]*", "[*",
    "[", "[^", "[a-", "[a-]", "[\\]]*", "[]a]", "\\*", "\\?", "\\[*", "\\\\*", "*\\", "a\\",
    "\\", "*:*", ":*", "*:", "[:]*", "[a-c-e]", "[z-a]", "[\\-]", "é*", "?:?", "**a**", "[^]",
]  # fmt: skip


@pytest.fixture
def prefix() -> str:
    return f"rgtest:{uuid.uuid4().hex[:12]}:"


async def _open(kind: str) -> CacheBackend:
    if kind == "memory":
        return MemoryBackend()
    await require_redis()
    # "redis": GET and set_if_newer pipelined on one connection; "redis-pooled": all
    # through redis-py's pool.
    return RedisBackend(REDIS_URL, timeout=TIMEOUT, pipelined=kind == "redis")


@pytest.fixture(params=[*CACHE_BACKENDS, "redis-pooled"])
async def cache(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[CacheBackend]:
    backend = await _open(request.param)
    yield backend
    await backend.delete_matching(escape(prefix) + "*")
    await backend.close()


@pytest.fixture
async def both(prefix: str) -> AsyncIterator[tuple[CacheBackend, CacheBackend]]:
    memory, redis = await _open("memory"), await _open("redis")
    yield memory, redis
    await redis.delete_matching(escape(prefix) + "*")
    await redis.close()


async def scan_all(cache: CacheBackend, pattern: str, count: int = 1000) -> list[str]:
    found, cursor = [], ""
    while True:
        batch, cursor = await cache.scan(pattern, cursor, count)
        found += batch
        if not cursor:
            return found


async def test_get_set_and_stats(cache: CacheBackend, prefix: str) -> None:
    assert await cache.get(prefix + "k") is None
    await cache.set(prefix + "k", b"\x00\xffvalue", 60)
    assert await cache.get(prefix + "k") == b"\x00\xffvalue"
    await cache.set(prefix + "k", b"", 60)
    assert await cache.get(prefix + "k") == b""
    await cache.ping()
    assert (cache.stats.hits, cache.stats.misses) == (2, 1)
    assert cache.stats.hit_rate == pytest.approx(2 / 3)
    assert cache.stats.errors == 0


async def test_get_many_and_set_many(cache: CacheBackend, prefix: str) -> None:
    items = [(prefix + key, key.encode()) for key in TRICKY_KEYS]
    await cache.set_many(items, 60)
    await cache.set_many([(prefix + "no-ttl", b"x")])
    asked = [prefix + "absent", *(k for k, _ in items), prefix + "no-ttl"]
    assert await cache.get_many(asked) == [None, *(v for _, v in items), b"x"]
    assert await cache.get_many([]) == []
    assert (cache.stats.hits, cache.stats.misses) == (len(items) + 1, 1)


async def test_delete_counts_the_keys_that_existed(cache: CacheBackend, prefix: str) -> None:
    await cache.set_many([(prefix + "a", b"1"), (prefix + "b", b"2")], 60)
    assert await cache.delete([prefix + "a", prefix + "b", prefix + "c"]) == 2
    assert await cache.delete([prefix + "a"]) == 0
    assert await cache.delete([]) == 0
    assert await cache.get(prefix + "a") is None


async def test_keys_expire(cache: CacheBackend, prefix: str) -> None:
    await cache.set(prefix + "set", b"v", 1)
    await cache.set_many([(prefix + "many", b"v")], 1)
    await cache.set(prefix + "expire", b"v")
    assert await cache.expire(prefix + "expire", 1)
    await cache.set(prefix + "stays", b"v", 60)
    gone = [prefix + "set", prefix + "many", prefix + "expire"]
    await eventually(lambda: _all_absent(cache, gone))
    assert await cache.get(prefix + "stays") == b"v"
    assert await scan_all(cache, escape(prefix) + "*") == [prefix + "stays"]


async def _all_absent(cache: CacheBackend, keys: list[str]) -> bool:
    return await cache.get_many(keys) == [None] * len(keys)


async def test_expire_says_whether_the_key_existed(cache: CacheBackend, prefix: str) -> None:
    assert not await cache.expire(prefix + "absent", 60)
    await cache.set(prefix + "k", b"v", 1)
    assert await cache.expire(prefix + "k", 60)
    assert await cache.get(prefix + "k") == b"v"
    assert await cache.expire(prefix + "k", 0)
    assert await cache.get(prefix + "k") is None
    assert not await cache.expire(prefix + "k", 60)


async def test_incr(cache: CacheBackend, prefix: str) -> None:
    assert await cache.incr(prefix + "n", 5, 60) == 5
    assert await cache.incr(prefix + "n", -7, 60) == -2
    assert await cache.incr(prefix + "n", 0) == -2
    assert await cache.get(prefix + "n") == b"-2"
    await cache.set(prefix + "s", b"41", 60)
    assert await cache.incr(prefix + "s", 1) == 42
    assert await cache.get(prefix + "s") == b"42"


@pytest.mark.parametrize(
    "value",
    [b"x", b"", b"1.0", b"01", b"+1", b" 1", b"1 ", b"-0", b"-", b"1e3", b"\xff", b"\xd9\xa1"],
)
async def test_incr_refuses_what_is_not_a_decimal_int64(
    cache: CacheBackend, prefix: str, value: bytes
) -> None:
    await cache.set(prefix + "k", value, 60)
    with pytest.raises(NotInteger):
        await cache.incr(prefix + "k", 1, 60)
    assert await cache.get(prefix + "k") == value


@pytest.mark.parametrize(("start", "amount"), [(INT64_MAX, 1), (INT64_MIN, -1), (-1, INT64_MIN)])
async def test_incr_refuses_to_leave_int64(
    cache: CacheBackend, prefix: str, start: int, amount: int
) -> None:
    await cache.set(prefix + "k", str(start).encode(), 60)
    with pytest.raises(NotInteger):
        await cache.incr(prefix + "k", amount)
    assert await cache.get(prefix + "k") == str(start).encode()
    assert await cache.incr(prefix + "k", 0) == start


async def test_incr_keeps_a_ttl_and_gives_a_new_key_one(cache: CacheBackend, prefix: str) -> None:
    await cache.set(prefix + "old", b"1", 1)
    assert await cache.incr(prefix + "old", 1, 3600) == 2
    assert await cache.incr(prefix + "new", 1, 1) == 1
    assert await cache.incr(prefix + "new", 1, 3600) == 2
    keys = [prefix + "old", prefix + "new"]
    await eventually(lambda: _all_absent(cache, keys))


async def test_fifty_concurrent_increments_are_atomic(cache: CacheBackend, prefix: str) -> None:
    results = await asyncio.gather(*(cache.incr(prefix + "n", 1, 60) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await cache.get(prefix + "n") == b"50"


async def test_scan_walks_every_key_in_small_batches(cache: CacheBackend, prefix: str) -> None:
    await cache.set_many([(f"{prefix}k{i}", b"v") for i in range(30)], 60)
    await cache.set(prefix + "other", b"v", 60)
    found = await scan_all(cache, escape(prefix) + "k*", count=7)
    assert set(found) == {f"{prefix}k{i}" for i in range(30)}
    if isinstance(cache, MemoryBackend):
        assert len(found) == 30


async def test_delete_matching_deletes_only_what_matches(cache: CacheBackend, prefix: str) -> None:
    await cache.set_many([(f"{prefix}k{i}", b"v") for i in range(2500)], 60)
    await cache.set_many([(prefix + "keep", b"v"), (prefix + "k", b"v")], 60)
    assert await cache.delete_matching(escape(prefix) + "k[0-9]*") == 2500
    assert sorted(await scan_all(cache, escape(prefix) + "*")) == [prefix + "k", prefix + "keep"]
    assert await cache.delete_matching(escape(prefix) + "nothing*") == 0


async def test_tricky_keys_round_trip(cache: CacheBackend, prefix: str) -> None:
    for key in TRICKY_KEYS:
        await cache.set(prefix + key, key.encode(), 60)
    for key in TRICKY_KEYS:
        assert await cache.get(prefix + key) == key.encode()
        assert await scan_all(cache, escape(prefix + key)) == [prefix + key]


async def test_both_backends_match_the_same_keys(
    both: tuple[CacheBackend, CacheBackend], prefix: str
) -> None:
    items = [(prefix + key, b"v") for key in TRICKY_KEYS]
    for backend in both:
        await backend.set_many(items, 60)
    memory, redis = both
    for pattern in TRICKY_PATTERNS:
        full = escape(prefix) + pattern
        assert sorted(await scan_all(memory, full)) == sorted(await scan_all(redis, full)), pattern
        assert await memory.delete_matching(full) == await redis.delete_matching(full), pattern
        await memory.set_many(items, 60)
        await redis.set_many(items, 60)


GLOB_ALPHABET = ["a", "b", "z", "*", "?", "[", "]", "^", "-", "\\", ":", "é", " "]


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pattern=st.lists(st.sampled_from(GLOB_ALPHABET), max_size=8).map("".join))
async def test_the_translator_agrees_with_redis_scan(
    both: tuple[CacheBackend, CacheBackend], prefix: str, pattern: str
) -> None:
    _, redis = both
    keys = [prefix + key for key in TRICKY_KEYS]
    if await redis.get(keys[0]) is None:
        await redis.set_many([(key, b"v") for key in keys], 600)
    full = escape(prefix) + pattern
    glob = compile_glob(full)
    assert sorted(await scan_all(redis, full)) == sorted(k for k in keys if glob.matches(k))


async def test_lru_evicts_the_least_recently_used_and_counts_it() -> None:
    memory = MemoryBackend(max_entries=3)
    for key in "abc":
        await memory.set(key, b"v", 60)
    await memory.get("a")
    await memory.set("d", b"v", 60)
    assert await memory.get_many(["a", "b", "c", "d"]) == [b"v", None, b"v", b"v"]
    assert memory.stats.evictions == 1
    await memory.incr("e", 1)
    await memory.set("f", b"v", 60)
    assert await memory.get_many(["a", "c", "d", "e", "f"]) == [None, None, b"v", b"1", b"v"]
    assert memory.stats.evictions == 3
    assert len(memory) == 3


async def test_an_expired_entry_is_not_counted_as_evicted() -> None:
    memory = MemoryBackend(max_entries=2)
    await memory.set("short", b"v", 0.01)
    await memory.set("a", b"v", 60)
    await asyncio.sleep(0.05)
    await memory.set("b", b"v", 60)  # the least recent, "short", has expired: no eviction
    assert memory.stats.evictions == 0
    assert await memory.get_many(["a", "b"]) == [b"v", b"v"]


async def test_an_unreachable_redis_is_cache_unavailable_every_time(prefix: str) -> None:
    redis = RedisBackend(CLOSED_REDIS_URL, timeout=TIMEOUT)
    calls = [
        redis.set_if_newer(prefix, b"v", 60),
        redis.get(prefix),
        redis.get_many([prefix]),
        redis.set(prefix, b"v", 60),
        redis.set_many([(prefix, b"v")], 60),
        redis.set_many([(prefix, b"v")]),
        redis.delete([prefix]),
        redis.scan("*", "", 10),
        redis.delete_matching("*"),
        redis.incr(prefix, 1, 60),
        redis.incr(prefix, 1),
        redis.expire(prefix, 60),
        redis.ping(),
    ]
    for call in calls:
        with pytest.raises(CacheUnavailable) as err:
            await call
        assert err.value.reason == "CACHE_UNAVAILABLE"
    assert redis.stats.errors == len(calls)
    await redis.close()


async def test_a_burst_beyond_the_pool_waits_for_a_connection(prefix: str) -> None:
    await require_redis()
    redis = RedisBackend(REDIS_URL, timeout=TIMEOUT, max_connections=2)
    try:
        await redis.set(prefix, b"v", 60)
        values = await asyncio.gather(*(redis.get_many([prefix]) for _ in range(50)))
        assert values == [[b"v"]] * 50
        assert redis.stats.errors == 0
        assert sum(count for count, _ in redis._redis.connection_pool.get_connection_count()) <= 2
    finally:
        await redis.delete([prefix])
        await redis.close()


async def test_a_wait_for_a_connection_is_bounded_by_the_timeout(prefix: str) -> None:
    await require_redis()
    redis = RedisBackend(REDIS_URL, timeout=0.1, max_connections=1)
    try:
        async with redis._command:  # holds the only connection
            with pytest.raises(CacheUnavailable):
                await redis.get_many([prefix])
        assert redis.stats.errors == 1
        assert await redis.get_many([prefix]) == [None]
    finally:
        await redis.close()


async def test_set_if_newer_writes_only_over_lower_versions(
    cache: CacheBackend, prefix: str
) -> None:
    key = f"{prefix}versioned"

    def at(version: int, kind: bytes, payload: bytes = b"") -> bytes:
        return b"%020d" % version + kind + payload

    wrote = [
        await cache.set_if_newer(key, at(5, b"T"), 10),
        await cache.set_if_newer(key, at(5, b"V", b"five"), 10),  # same version, higher kind
        await cache.set_if_newer(key, at(3, b"V", b"three"), 10),  # older: refused
        await cache.set_if_newer(key, at(5, b"V", b"again"), 10),  # the same: refused
        await cache.set_if_newer(key, at(5, b"T"), 10),  # lower kind: refused
        await cache.set_if_newer(key, at(12, b"T"), 10),  # 12 > 5 as a number, too
    ]

    assert wrote == [True, True, False, False, False, True]
    assert await cache.get(key) == at(12, b"T")
    await cache.expire(key, 0)
    assert await cache.set_if_newer(key, at(1, b"V"), 10)  # absent again: written

"""CacheService through a real server and the generated stub, on both backends:
the in-memory cache (the shared `server`) and Redis (a server of the test's own)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from repogate.v1 import cache_pb2 as pb
from repogate.v1 import cache_pb2_grpc
from server.cache import keys
from server.cache.glob import escape
from server.cache.redis import RedisBackend
from tests.cache_support import (
    CACHE_BACKENDS,
    CLOSED_REDIS_URL,
    REDIS_URL,
    require_redis,
)
from tests.conftest import Running
from tests.e2e.support import StartRepogate, create, fails, get
from tests.polling import eventually
from tests.rpc import md

pytestmark = pytest.mark.e2e

Stub = cache_pb2_grpc.CacheServiceStub
CACHE_SERVICE = "repogate.v1.CacheService"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
# Keys with every glob metacharacter and `:` in them.
TRICKY_KEYS = ["plain", "a:b", "::", "*", "?", "[", "]", "\\", "[a]", "x*y", "é:1", "a b"]
ADVERSARIAL_PATTERNS = ["*", "?*", "[a-z]*", "\\*", "*:*", "*\\*", "[^x]*", "**", "?", "[*]", ":*"]


@pytest.fixture(params=CACHE_BACKENDS)
async def cache(
    request: pytest.FixtureRequest, server: Running, start_repogate: StartRepogate, tenant: str
) -> AsyncIterator[Stub]:
    if request.param == "memory":
        yield Stub(server.channel)
        return
    await require_redis()
    # Beside the shared server's database (already migrated), so each id names what runs.
    database_url = server.app.settings.database_url
    running = await start_repogate(migrate=False, database_url=database_url, redis_url=REDIS_URL)
    yield Stub(running.channel)
    await forget(tenant)


async def forget(tenant: str) -> None:
    """Deletes from Redis the keys of `tenant` and of tenants whose ids start with it."""
    redis = RedisBackend(REDIS_URL, timeout=5)
    await redis.delete_matching(escape(keys.client_prefix(tenant)[:-1]) + "*")
    await redis.close()


def ttl(seconds: float) -> Duration:
    return Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))


async def put(stub: Stub, tenant: str, key: str, value: bytes = b"v", **fields: Any) -> None:
    await stub.Set(pb.SetRequest(key=key, value=value, **fields), metadata=md(tenant))


async def value_of(stub: Stub, tenant: str, key: str) -> bytes | None:
    reply = await stub.Get(pb.GetRequest(key=key), metadata=md(tenant))
    return reply.value if reply.found else None


async def list_keys(stub: Stub, tenant: str, pattern: str = "", page_size: int = 0) -> list[str]:
    """Every key matching `pattern`, walking all pages."""
    keys: list[str] = []
    token = ""
    for _ in range(1000):
        request = pb.ListKeysRequest(pattern=pattern, page_size=page_size, page_token=token)
        page = await stub.ListKeys(request, metadata=md(tenant))
        assert len(page.keys) <= (page_size or 50)
        keys += page.keys
        token = page.next_page_token
        if not token:
            return keys
    raise AssertionError("the walk does not end")


async def test_set_get_delete(cache: Stub, tenant: str) -> None:
    assert await value_of(cache, tenant, "k") is None
    await put(cache, tenant, "k", b"\x00bytes\xff")
    assert await value_of(cache, tenant, "k") == b"\x00bytes\xff"
    await put(cache, tenant, "empty", b"")
    assert await value_of(cache, tenant, "empty") == b""
    reply = await cache.Delete(pb.DeleteRequest(keys=["k", "empty", "absent"]), metadata=md(tenant))
    assert reply.deleted_count == 2
    assert await value_of(cache, tenant, "k") is None


async def test_get_many_and_set_many(cache: Stub, tenant: str) -> None:
    entries = [pb.CacheEntry(key=key, value=key.encode()) for key in TRICKY_KEYS]
    await cache.SetMany(pb.SetManyRequest(entries=entries, ttl=ttl(60)), metadata=md(tenant))
    asked = ["absent", *reversed(TRICKY_KEYS), "also-absent"]
    reply = await cache.GetMany(pb.GetManyRequest(keys=asked), metadata=md(tenant))
    assert [(e.key, e.value) for e in reply.entries] == [
        (key, key.encode()) for key in reversed(TRICKY_KEYS)
    ]


async def test_keys_expire(cache: Stub, tenant: str) -> None:
    await put(cache, tenant, "set", ttl=ttl(1))
    entries = [pb.CacheEntry(key="many", value=b"v")]
    await cache.SetMany(pb.SetManyRequest(entries=entries, ttl=ttl(0.5)), metadata=md(tenant))
    await put(cache, tenant, "stays")

    async def gone() -> bool:
        reply = await cache.GetMany(pb.GetManyRequest(keys=["set", "many"]), metadata=md(tenant))
        return not reply.entries

    await eventually(gone)
    assert await value_of(cache, tenant, "stays") == b"v"


async def test_expire(cache: Stub, tenant: str) -> None:
    def expire(key: str, seconds: float) -> Awaitable[pb.ExpireResponse]:
        return cache.Expire(pb.ExpireRequest(key=key, ttl=ttl(seconds)), metadata=md(tenant))

    assert not (await expire("absent", 60)).existed
    await put(cache, tenant, "soon")
    await put(cache, tenant, "now")
    assert (await expire("soon", 1)).existed
    assert (await expire("now", 0)).existed
    assert await value_of(cache, tenant, "now") is None
    await eventually(lambda: _absent(cache, tenant, "soon"))


async def _absent(stub: Stub, tenant: str, key: str) -> bool:
    return await value_of(stub, tenant, key) is None


async def test_increment(cache: Stub, tenant: str) -> None:
    def increment(key: str, amount: int) -> Awaitable[pb.IncrementResponse]:
        return cache.Increment(pb.IncrementRequest(key=key, amount=amount), metadata=md(tenant))

    assert (await increment("n", 5)).value == 5
    assert (await increment("n", -8)).value == -3
    assert await value_of(cache, tenant, "n") == b"-3"
    await put(cache, tenant, "big", b"9223372036854775807")
    await put(cache, tenant, "text", b"12 apples")
    for key in ("big", "text"):
        error = await fails(increment(key, 1))
        assert (error.code, error.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "CACHE_VALUE_NOT_INTEGER",
        )
    replies = await asyncio.gather(*(increment("many", 1) for _ in range(50)))
    assert sorted(reply.value for reply in replies) == list(range(1, 51))


async def test_a_counter_increment_creates_expires(cache: Stub, tenant: str) -> None:
    request = pb.IncrementRequest(key="counter", amount=1, ttl=ttl(1))
    assert (await cache.Increment(request, metadata=md(tenant))).value == 1
    await eventually(lambda: _absent(cache, tenant, "counter"))


async def test_list_keys_walks_every_page(cache: Stub, tenant: str) -> None:
    keys = [f"k{i:02}" for i in range(25)]
    entries = [pb.CacheEntry(key=key, value=b"v") for key in [*keys, "other"]]
    await cache.SetMany(pb.SetManyRequest(entries=entries), metadata=md(tenant))
    for size in (1, 7, 0, 5000):
        assert sorted(set(await list_keys(cache, tenant, "k*", size))) == keys
    assert sorted(await list_keys(cache, tenant)) == sorted([*keys, "other"])
    assert sorted(await list_keys(cache, tenant, "k0[0-2]")) == ["k00", "k01", "k02"]


async def test_a_page_token_is_only_good_for_its_tenant_and_pattern(
    cache: Stub, tenant: str
) -> None:
    entries = [pb.CacheEntry(key=f"k{i}", value=b"v") for i in range(5)]
    await cache.SetMany(pb.SetManyRequest(entries=entries), metadata=md(tenant))
    page = await cache.ListKeys(pb.ListKeysRequest(pattern="k*", page_size=2), metadata=md(tenant))
    assert page.next_page_token
    for request, who in [
        (pb.ListKeysRequest(pattern="*", page_token=page.next_page_token), tenant),
        (pb.ListKeysRequest(pattern="k*", page_token=page.next_page_token), tenant + "x"),
        (pb.ListKeysRequest(pattern="k*", page_token="not-a-token"), tenant),
    ]:
        error = await fails(cache.ListKeys(request, metadata=md(who)))
        assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_TOKEN")
        assert "page_token" in error.violations


async def test_invalidate_pattern(cache: Stub, tenant: str) -> None:
    for key in ["user:1", "user:2", "user:1:posts", "team:1", "user"]:
        await put(cache, tenant, key)
    request = pb.InvalidatePatternRequest(pattern="user:?")
    assert (await cache.InvalidatePattern(request, metadata=md(tenant))).deleted_count == 2
    assert sorted(await list_keys(cache, tenant)) == ["team:1", "user", "user:1:posts"]
    request = pb.InvalidatePatternRequest(pattern="*")
    assert (await cache.InvalidatePattern(request, metadata=md(tenant))).deleted_count == 3
    assert await list_keys(cache, tenant) == []


@pytest.mark.parametrize("theirs_first", [True, False])
async def test_no_rpc_reaches_another_tenants_keys(
    cache: Stub, tenant: str, theirs_first: bool
) -> None:
    # One tenant id is a prefix of the other; each takes a turn as the victim.
    victim, intruder = (tenant, tenant + "x") if theirs_first else (tenant + "x", tenant)
    await cache.SetMany(
        pb.SetManyRequest(entries=[pb.CacheEntry(key=k, value=b"secret") for k in TRICKY_KEYS]),
        metadata=md(victim),
    )
    await put(cache, intruder, "mine", b"intruder's")
    as_intruder = md(intruder)

    for key in TRICKY_KEYS:
        assert await value_of(cache, intruder, key) is None
    reply = await cache.GetMany(pb.GetManyRequest(keys=TRICKY_KEYS), metadata=as_intruder)
    assert not reply.entries
    for pattern in ADVERSARIAL_PATTERNS:
        assert set(await list_keys(cache, intruder, pattern)) <= {"mine"}, pattern
    for pattern in ADVERSARIAL_PATTERNS:
        request = pb.InvalidatePatternRequest(pattern=pattern)
        await cache.InvalidatePattern(request, metadata=as_intruder)
    assert (
        await cache.Delete(pb.DeleteRequest(keys=TRICKY_KEYS), metadata=as_intruder)
    ).deleted_count == 0
    for key in TRICKY_KEYS:
        expire = pb.ExpireRequest(key=key, ttl=ttl(0))
        assert not (await cache.Expire(expire, metadata=as_intruder)).existed
        increment = pb.IncrementRequest(key=key, amount=7)
        assert (await cache.Increment(increment, metadata=as_intruder)).value == 7

    reply = await cache.GetMany(pb.GetManyRequest(keys=TRICKY_KEYS), metadata=md(victim))
    assert [(e.key, e.value) for e in reply.entries] == [(k, b"secret") for k in TRICKY_KEYS]
    assert sorted(await list_keys(cache, victim)) == sorted(TRICKY_KEYS)


def _too_many(n: int) -> list[str]:
    return [f"k{i}" for i in range(n)]


BIG = b"x" * (1024 * 1024 + 1)

# (RPC, request, BadRequest field) for requests CacheService must refuse.
REFUSED: list[tuple[str, Any, str]] = [
    ("Get", pb.GetRequest(), "key"),
    ("Get", pb.GetRequest(key="k" * 513), "key"),
    ("Get", pb.GetRequest(key="é" * 257), "key"),
    ("Get", pb.GetRequest(key="a\nb"), "key"),
    ("Get", pb.GetRequest(key="a\x00b"), "key"),
    ("Set", pb.SetRequest(key="k", value=BIG), "value"),
    ("Set", pb.SetRequest(key="k", ttl=Duration(seconds=-1)), "ttl"),
    ("Set", pb.SetRequest(key="k", ttl=Duration(seconds=86_401)), "ttl"),
    ("Set", pb.SetRequest(key="k", ttl=Duration(nanos=-5)), "ttl"),
    ("Delete", pb.DeleteRequest(), "keys"),
    ("Delete", pb.DeleteRequest(keys=_too_many(1001)), "keys"),
    ("Delete", pb.DeleteRequest(keys=["a", "b", "\t"]), "keys[2]"),
    ("GetMany", pb.GetManyRequest(keys=["a", "b", "a"]), "keys[2]"),
    ("GetMany", pb.GetManyRequest(keys=_too_many(1001)), "keys"),
    (
        "SetMany",
        pb.SetManyRequest(entries=[pb.CacheEntry(key=k) for k in ["a", "b", "c", ""]]),
        "entries[3].key",
    ),
    (
        "SetMany",
        pb.SetManyRequest(entries=[pb.CacheEntry(key="a"), pb.CacheEntry(key="b", value=BIG)]),
        "entries[1].value",
    ),
    (
        "SetMany",
        pb.SetManyRequest(entries=[pb.CacheEntry(key="a"), pb.CacheEntry(key="a")]),
        "entries[1].key",
    ),
    ("SetMany", pb.SetManyRequest(), "entries"),
    (
        "SetMany",
        pb.SetManyRequest(entries=[pb.CacheEntry(key="a")], ttl=Duration(seconds=-1)),
        "ttl",
    ),
    ("InvalidatePattern", pb.InvalidatePatternRequest(), "pattern"),
    ("InvalidatePattern", pb.InvalidatePatternRequest(pattern="a\\"), "pattern"),
    ("InvalidatePattern", pb.InvalidatePatternRequest(pattern="[a-z"), "pattern"),
    ("InvalidatePattern", pb.InvalidatePatternRequest(pattern="*" * 1025), "pattern"),
    ("ListKeys", pb.ListKeysRequest(pattern="x\\"), "pattern"),
    ("ListKeys", pb.ListKeysRequest(pattern="[é]"), "pattern"),
    ("ListKeys", pb.ListKeysRequest(page_size=-1), "page_size"),
    ("Increment", pb.IncrementRequest(amount=1), "key"),
    ("Increment", pb.IncrementRequest(key="k", ttl=Duration(seconds=-1)), "ttl"),
    ("Expire", pb.ExpireRequest(key="k"), "ttl"),
    ("Expire", pb.ExpireRequest(key="k", ttl=Duration(seconds=86_401)), "ttl"),
    ("Expire", pb.ExpireRequest(ttl=Duration(seconds=1)), "key"),
]


@pytest.mark.parametrize(
    ("rpc", "request_", "field"),
    REFUSED,
    ids=[f"{r}-{f}-{i}" for i, (r, _, f) in enumerate(REFUSED)],
)
async def test_limits_are_invalid_argument_naming_the_field(
    cache: Stub, tenant: str, rpc: str, request_: Any, field: str
) -> None:
    error = await fails(getattr(cache, rpc)(request_, metadata=md(tenant)))
    assert (error.code, error.reason) == (INVALID, "INVALID_ARGUMENT")
    assert list(error.violations) == [field]


async def test_a_value_of_the_largest_size_is_stored(cache: Stub, tenant: str) -> None:
    await put(cache, tenant, "big", BIG[:-1])
    assert await value_of(cache, tenant, "big") == BIG[:-1]


def _one_call_per_rpc(stub: Stub) -> dict[str, Callable[[Any], Awaitable[Any]]]:
    entries = [pb.CacheEntry(key="k", value=b"v")]
    return {
        "Get": lambda m: stub.Get(pb.GetRequest(key="k"), metadata=m, timeout=10),
        "Set": lambda m: stub.Set(pb.SetRequest(key="k"), metadata=m, timeout=10),
        "Delete": lambda m: stub.Delete(pb.DeleteRequest(keys=["k"]), metadata=m, timeout=10),
        "GetMany": lambda m: stub.GetMany(pb.GetManyRequest(keys=["k"]), metadata=m, timeout=10),
        "SetMany": lambda m: stub.SetMany(
            pb.SetManyRequest(entries=entries), metadata=m, timeout=10
        ),
        "InvalidatePattern": lambda m: stub.InvalidatePattern(
            pb.InvalidatePatternRequest(pattern="*"), metadata=m, timeout=10
        ),
        "ListKeys": lambda m: stub.ListKeys(pb.ListKeysRequest(), metadata=m, timeout=10),
        "Increment": lambda m: stub.Increment(
            pb.IncrementRequest(key="n", amount=1), metadata=m, timeout=10
        ),
        "Expire": lambda m: stub.Expire(
            pb.ExpireRequest(key="k", ttl=ttl(1)), metadata=m, timeout=10
        ),
    }


async def test_every_rpc_needs_a_tenant(cache: Stub) -> None:
    for name, call in _one_call_per_rpc(cache).items():
        error = await fails(call(md(None)))
        assert (error.code, error.reason) == (INVALID, "INVALID_TENANT"), name
        error = await fails(call(md("a:b")))
        assert (error.code, error.reason) == (INVALID, "INVALID_TENANT"), name


async def test_an_unreachable_redis_is_unavailable_and_the_rest_still_serves(
    start_repogate: StartRepogate, tenant: str
) -> None:
    # The deadline on each call bounds "at once": a hanging cache would be DEADLINE_EXCEEDED.
    # Every RPC maps the failure itself: keep the breaker (tests/e2e/test_outage.py) shut.
    running = await start_repogate(redis_url=CLOSED_REDIS_URL, breaker_trip_after=100)
    stub = Stub(running.channel)
    for name, call in _one_call_per_rpc(stub).items():
        error = await fails(call(md(tenant)))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "CACHE_UNAVAILABLE"), (
            name
        )
        assert error.metadata["request_id"]
    user = await create(running.users, tenant, username="ann")
    assert (await get(running.users, tenant, user.id)).username == "ann"
    health = health_pb2_grpc.HealthStub(running.channel)
    check = health_pb2.HealthCheckRequest(service=CACHE_SERVICE)
    assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_cache_service(server: Running) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    call = stub.ServerReflectionInfo(iter([request]), timeout=5)
    (response,) = [response async for response in call]
    assert CACHE_SERVICE in {s.name for s in response.list_services_response.service}


async def test_separate_servers_on_one_redis_share_a_tenants_keys(
    start_repogate: StartRepogate,
) -> None:
    await require_redis()
    tenant = f"t-{uuid.uuid4().hex[:16]}"
    first = Stub((await start_repogate(redis_url=REDIS_URL)).channel)
    second = Stub((await start_repogate(redis_url=REDIS_URL)).channel)
    await put(first, tenant, "shared", b"from the first")
    assert await value_of(second, tenant, "shared") == b"from the first"
    await forget(tenant)

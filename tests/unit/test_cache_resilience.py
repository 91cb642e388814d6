"""The resilient wrapper: a failing backend costs misses, and after repeated failures
its breaker keeps calls away until a probe finds it back (server/breaker.py)."""

from __future__ import annotations

import pytest

from server.breaker import Breaker, BreakerPolicy
from server.cache.resilient import ResilientCache
from tests.cache_support import Flaky

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend() -> Flaky:
    return Flaky()


@pytest.fixture
def cache(backend: Flaky, clock: Clock) -> ResilientCache:
    breaker = Breaker("cache", BreakerPolicy(trip_after=3, open_for=10.0), clock=clock)
    return ResilientCache(backend, breaker)


async def test_reads_and_writes_pass_through_while_the_backend_works(
    cache: ResilientCache, backend: Flaky
) -> None:
    assert await cache.set("k", b"v", 60)
    assert await cache.get("k") == b"v"
    assert await cache.get_many(["k", "absent"]) == [b"v", None]
    assert await cache.delete(["k"])
    assert await cache.get("k") is None
    assert cache.stats.hits == 2
    assert cache.stats.misses == 2


async def test_failures_are_misses_then_the_backend_is_skipped(
    cache: ResilientCache, backend: Flaky
) -> None:
    await backend.set("k", b"v")
    backend.calls = 0
    backend.down = True
    assert await cache.get("k") is None
    assert await cache.get_many(["k", "j"]) == [None, None]
    assert not await cache.set("k", b"w", 60)
    assert backend.calls == 3
    assert cache.stats.errors == 3

    # Open: no call reaches the backend.
    assert await cache.get("k") is None
    assert not await cache.delete(["k"])
    assert not await cache.delete_matching("*")
    assert backend.calls == 3
    assert cache.stats.skipped == 3


async def test_after_the_cool_down_a_probe_finds_the_backend_back(
    cache: ResilientCache, backend: Flaky, clock: Clock
) -> None:
    await backend.set("k", b"v")
    backend.calls = 0
    backend.down = True
    for _ in range(3):
        await cache.get("k")
    clock.now += 10
    backend.down = False
    assert await cache.get("k") == b"v"
    assert await cache.get("k") == b"v"
    assert backend.calls == 5
    assert cache.stats.skipped == 0


async def test_a_failed_probe_skips_the_backend_again(
    cache: ResilientCache, backend: Flaky, clock: Clock
) -> None:
    backend.down = True
    for _ in range(3):
        await cache.get("k")
    clock.now += 10
    assert await cache.get("k") is None  # the probe, failing
    assert await cache.get("k") is None  # skipped
    assert backend.calls == 4
    assert cache.stats.skipped == 1

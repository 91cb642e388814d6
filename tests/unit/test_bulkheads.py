"""Per-tenant bulkheads: each tenant's slots, the short queue for them, refusals and
their counts. Waits are bounded by the bulkhead's own `wait`, never asserted."""

from __future__ import annotations

import asyncio

import pytest

from repositories.bulkheads import (
    MIN_RETRY_AFTER,
    OTHER,
    TRACKED,
    Bulkheads,
    Slot,
    TooManyConcurrentCalls,
)
from repositories.errors import Overloaded
from server.settings import Settings

pytestmark = pytest.mark.unit

LONG = 30.0  # a wait no test reaches: a slot is handed over long before


async def take_all(b: Bulkheads, tenant: str) -> list[Slot]:
    assert b.limit is not None
    return [await b.take(tenant) for _ in range(b.limit)]


async def test_a_tenant_at_its_limit_is_refused_and_told_when_to_retry() -> None:
    b = Bulkheads(2)
    await take_all(b, "a")

    with pytest.raises(TooManyConcurrentCalls) as refused:
        await b.take("a")

    error = refused.value
    assert isinstance(error, Overloaded)
    assert error.reason == "TOO_MANY_CONCURRENT_CALLS"
    assert error.metadata["limit"] == "2"
    low = round(MIN_RETRY_AFTER * 1000)
    assert low <= error.pushback_ms <= 2 * low
    assert error.metadata["retry_after_ms"] == str(error.pushback_ms)
    assert b.held("a") == 2
    assert b.refused == {"a": 1}


async def test_other_tenants_keep_their_own_slots() -> None:
    b = Bulkheads(2)
    await take_all(b, "a")

    theirs = await take_all(b, "b")

    assert (b.held("a"), b.held("b")) == (2, 2)
    for slot in theirs:
        slot.release()
    assert b.held("b") == 0


async def test_a_released_slot_goes_to_the_first_in_line() -> None:
    b = Bulkheads(1, wait=LONG)
    (held,) = await take_all(b, "a")
    first = asyncio.create_task(b.take("a"))
    await asyncio.sleep(0)
    second = asyncio.create_task(b.take("a"))
    await asyncio.sleep(0)

    held.release()
    got = await first

    assert not second.done()
    got.release()
    (await second).release()
    assert b.held("a") == 0


async def test_a_caller_queued_past_the_wait_is_refused_and_leaves_the_queue() -> None:
    b = Bulkheads(1, wait=0.01)
    (held,) = await take_all(b, "a")

    with pytest.raises(TooManyConcurrentCalls) as refused:
        await b.take("a")
    held.release()

    low = round(MIN_RETRY_AFTER * 1000)  # the wait is shorter: told the least
    assert low <= refused.value.pushback_ms <= 2 * low

    # The refused caller left no place in line: the slot is free for the next one.
    again = await b.take("a")
    assert b.held("a") == 1
    again.release()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_line_waits_as_long_as_it_moves_and_no_longer() -> None:
    # `wait` is the real time between looks at the clock, which the test turns.
    clock = Clock()
    b = Bulkheads(1, wait=0.01, clock=clock)
    (held,) = await take_all(b, "a")
    first, second, third = (asyncio.create_task(b.take("a")) for _ in range(3))
    await asyncio.sleep(0)  # all three in line

    clock.now += 0.009
    held.release()  # the line moves: `first` is served
    (await first).release()
    clock.now += 0.009
    second_slot = await second
    # `third` has waited 18 ms, longer than `wait`, but the line last moved 9 ms ago.
    await asyncio.sleep(0.05)  # many looks at the clock
    assert not third.done()
    second_slot.release()
    third_slot = await third
    fourth = asyncio.create_task(b.take("a"))
    await asyncio.sleep(0.05)
    assert not fourth.done()
    clock.now += 0.011  # no progress for longer than `wait`

    with pytest.raises(TooManyConcurrentCalls):
        await fourth
    third_slot.release()
    assert b.held("a") == 0


async def test_a_caller_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    b = Bulkheads(1, wait=LONG)
    (held,) = await take_all(b, "a")
    cancelled = asyncio.create_task(b.take("a"))
    await asyncio.sleep(0)
    next_in_line = asyncio.create_task(b.take("a"))
    await asyncio.sleep(0)

    held.release()  # hands the slot to `cancelled`, which has not run yet
    cancelled.cancel()

    with pytest.raises(asyncio.CancelledError):
        await cancelled
    (await next_in_line).release()
    assert b.held("a") == 0


async def test_releasing_twice_frees_one_slot() -> None:
    b = Bulkheads(2)
    first, second = await take_all(b, "a")

    first.release()
    first.release()

    assert b.held("a") == 1
    second.release()
    assert b.held("a") == 0


async def test_without_a_limit_nothing_is_counted_or_refused() -> None:
    b = Bulkheads(None)

    slots = [await b.take("a") for _ in range(1000)]

    assert b.held("a") == 0
    for slot in slots:
        slot.release()
    assert not b.refused


async def test_refusals_are_counted_by_tenant_up_to_a_bound() -> None:
    b = Bulkheads(1)
    for i in range(TRACKED + 5):
        await b.take(f"t{i}")
        with pytest.raises(TooManyConcurrentCalls):
            await b.take(f"t{i}")

    assert len(b.refused) == TRACKED + 1
    assert b.refused["t0"] == 1
    assert b.refused[OTHER] == 5


def test_by_default_a_tenant_may_hold_half_the_pool_and_zero_lifts_the_cap() -> None:
    def limit(**fields: int) -> int | None:
        return Settings(**fields).bulkheads().limit  # type: ignore[arg-type]

    assert limit(db_pool_size=20, db_max_overflow=10) == 15
    assert limit(db_pool_size=5, db_max_overflow=0) == 2
    assert limit(db_pool_size=1, db_max_overflow=0) == 1
    assert limit(db_pool_size=5, db_max_overflow=0, tenant_max_concurrency=5) == 5
    assert limit(tenant_max_concurrency=0) is None

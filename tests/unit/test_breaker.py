"""The breaker state machine, on a clock the test turns."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from repositories.bulkheads import TooManyConcurrentCalls
from repositories.errors import NotFound, PoolExhausted, TransactionAborted, Unavailable
from server.breaker import Breaker, BreakerPolicy, CircuitOpen, State

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **policy: float) -> Breaker:
    values = {"trip_after": 3, "open_for": 10.0, "probes": 2, **policy}
    return Breaker("database", BreakerPolicy(**values), clock=clock)  # type: ignore[arg-type]


async def run(b: Breaker, outcome: BaseException | None = None) -> None:
    """One guarded call that ends with `outcome` (None: success)."""
    with pytest.raises(type(outcome)) if outcome else contextlib.nullcontext():
        async with b.guard():
            if outcome:
                raise outcome


def fault() -> Unavailable:
    return Unavailable("down")


async def test_trips_after_n_faults_in_a_row() -> None:
    clock = Clock()
    b = breaker(clock)

    await run(b, fault())
    await run(b, fault())
    await run(b)  # a success resets the count
    await run(b, fault())
    await run(b, fault())
    assert b.state is State.CLOSED
    await run(b, fault())

    assert b.state is State.OPEN


async def test_client_faults_never_trip_it() -> None:
    b = breaker(Clock())

    for _ in range(10):
        await run(b, NotFound("user", "x"))

    assert b.state is State.CLOSED


async def test_open_fails_fast_and_says_when_to_retry() -> None:
    clock = Clock()
    b = breaker(clock, trip_after=1)
    await run(b, fault())
    clock.now += 4

    with pytest.raises(CircuitOpen) as refused:
        async with b.guard():
            raise AssertionError("an open breaker must not run the call")

    assert refused.value.pushback_ms == 6000
    assert refused.value.metadata == {"dependency": "database", "retry_after_ms": "6000"}
    assert refused.value.reason == "CIRCUIT_OPEN"


async def test_half_open_lets_probes_through_and_closes_after_as_many_successes() -> None:
    clock = Clock()
    b = breaker(clock, trip_after=1, probes=2)
    await run(b, fault())
    clock.now += 10

    assert b.state is State.HALF_OPEN
    assert b.allow()
    assert b.allow()
    assert not b.allow()  # only two probes at a time
    b.success()
    assert b.state is State.HALF_OPEN
    b.success()

    assert b.state is State.CLOSED


async def test_a_failed_probe_opens_it_again_for_a_full_period() -> None:
    clock = Clock()
    b = breaker(clock, trip_after=1)
    await run(b, fault())
    clock.now += 10

    await run(b, fault())

    assert b.state is State.OPEN
    assert b.retry_after() == 10


async def test_a_cancelled_probe_frees_its_place() -> None:
    clock = Clock()
    b = breaker(clock, trip_after=1, probes=1)
    await run(b, fault())
    clock.now += 10

    await run(b, asyncio.CancelledError())
    await run(b)

    assert b.state is State.CLOSED


async def test_listeners_hear_every_change() -> None:
    clock = Clock()
    b = breaker(clock, trip_after=1, probes=1)
    heard: list[State] = []
    b.listeners.append(heard.append)

    await run(b, fault())
    clock.now += 10
    await run(b)

    assert heard == [State.OPEN, State.HALF_OPEN, State.CLOSED]


async def test_a_transaction_aborted_by_a_lost_connection_counts_as_a_fault() -> None:
    # A pooler's or driver's failure inside a transaction reaches the caller as ABORTED.
    b = breaker(Clock(), trip_after=2)
    lost = TransactionAborted("tx", "its database connection was lost")
    lost.__cause__ = fault()

    await run(b, lost)
    await run(b, TransactionAborted("tx", "it conflicted with a concurrent transaction"))
    assert b.state is State.CLOSED  # a conflict is an answer: it reset the count
    await run(b, lost)
    await run(b, lost)

    assert b.state is State.OPEN


async def test_calls_turned_away_before_the_dependency_count_for_nothing() -> None:
    clock = Clock()
    b = breaker(clock, trip_after=2, probes=1)
    turned_away = [PoolExhausted("busy"), TooManyConcurrentCalls(3, 0.1)]

    await run(b, fault())
    for error in turned_away * 3:
        await run(b, error)
    assert b.state is State.CLOSED  # nor did they reset the count of faults in a row:
    await run(b, fault())
    assert b.state is State.OPEN

    clock.now += 10
    for error in turned_away:
        await run(b, error)  # no verdict: the probe's place is freed, not counted
    assert b.state is State.HALF_OPEN
    await run(b)
    assert b.state is State.CLOSED


async def test_suspicion_asks_for_probes_until_one_succeeds() -> None:
    clock = Clock()
    b = breaker(clock, trip_after=3)
    assert not b.wants_probe

    b.suspect()
    assert b.wants_probe
    await run(b, fault())  # a probe unanswered: still suspect, one fault nearer
    assert b.wants_probe
    await run(b)

    assert not b.wants_probe
    assert b.state is State.CLOSED


async def test_probes_that_go_unanswered_open_it_and_half_open_asks_for_more() -> None:
    clock = Clock()
    b = breaker(clock, trip_after=2, probes=1)
    b.suspect()

    await run(b, fault())
    await run(b, fault())
    assert b.state is State.OPEN
    assert not b.wants_probe  # open: nothing to ask until its period ends

    clock.now += 10
    assert b.wants_probe
    await run(b)
    assert b.state is State.CLOSED
    assert not b.wants_probe

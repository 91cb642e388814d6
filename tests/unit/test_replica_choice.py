"""Which server a read goes to: the least busy of the primary and the usable replicas,
a replica on a tie; never a stale, failed or non-standby one; with a token, first
those known to have replayed it."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from server.breaker import Breaker, BreakerPolicy
from server.replicas import Replica, Replicas

pytestmark = pytest.mark.unit

MAX_LAG = 5.0


def replicas(count: int) -> tuple[Replicas, list[Replica]]:
    # Choosing touches no database: none is given.
    nothing: Any = None
    made = [
        Replica(nothing, Breaker(f"replica {n}", BreakerPolicy(trip_after=1)), f"r{n}")
        for n in range(count)
    ]
    for replica in made:
        replica.caught_up_at = time.monotonic()
    return Replicas(nothing, made, MAX_LAG), made


def test_an_idle_read_goes_to_a_replica_and_ties_are_taken_in_turn() -> None:
    chooser, made = replicas(2)

    assert {chooser.pick(None) for _ in range(4)} == set(made)


def test_reads_go_where_the_fewest_are_in_flight() -> None:
    chooser, [one] = replicas(1)
    one.busy = 2
    chooser.primary_busy = 1

    assert chooser.pick(None) is None  # the primary
    chooser.primary_busy = 2
    assert chooser.pick(None) is one


@pytest.mark.parametrize("out", ["stale", "never seen", "breaker open", "not a standby"])
def test_a_replica_out_of_service_is_never_chosen(out: str) -> None:
    chooser, [one] = replicas(1)
    chooser.primary_busy = 100
    if out == "stale":
        one.caught_up_at = time.monotonic() - MAX_LAG - 0.1
    elif out == "never seen":
        one.caught_up_at = -math.inf
    elif out == "breaker open":
        one.breaker.failure()
    else:
        one.standby = False

    assert chooser.pick(None) is None


def test_a_token_read_prefers_a_replica_known_to_have_replayed_it() -> None:
    chooser, [behind, ahead] = replicas(2)
    behind.replayed, ahead.replayed = 100, 200
    chooser.primary_busy = 5

    assert [chooser.pick(150) for _ in range(3)] == [ahead] * 3
    assert chooser.pick(250) in (behind, ahead)  # neither known: one is asked
    chooser.primary_busy = 0
    assert chooser.pick(250) is None  # idle, the primary answers without asking
    assert chooser.pick(200) is ahead

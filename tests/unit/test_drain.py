"""The drain's bookkeeping, with real tasks: who is let in, what close() waits for,
and which calls it cancels."""

from __future__ import annotations

import asyncio

import pytest

from server.drain import Drain, ShuttingDown

pytestmark = pytest.mark.unit


async def call(drain: Drain, release: asyncio.Event, seen: list[str]) -> None:
    """A call as the request interceptor runs one: admitted, working, then leaving."""
    drain.admit()
    try:
        await release.wait()
        seen.append("finished")
    except asyncio.CancelledError:
        seen.append("cut" if drain.cut() else "cancelled")
        raise
    finally:
        drain.leave()


async def test_an_open_drain_admits_and_a_closed_one_refuses() -> None:
    drain = Drain()
    drain.admit()
    drain.leave()

    await drain.close(0)

    assert drain.closed
    with pytest.raises(ShuttingDown) as refused:
        drain.admit()
    assert refused.value.reason == "SHUTTING_DOWN"


async def test_close_waits_for_the_calls_in_flight() -> None:
    drain, release, seen = Drain(), asyncio.Event(), []
    running = asyncio.create_task(call(drain, release, seen))
    await asyncio.sleep(0)  # it is admitted

    closing = asyncio.create_task(drain.close(grace=60))
    await asyncio.sleep(0.05)
    assert not closing.done()
    release.set()
    await closing
    await running

    assert seen == ["finished"]


async def test_a_call_that_outlives_the_grace_is_cut_and_says_so() -> None:
    drain, seen = Drain(), []
    running = asyncio.create_task(call(drain, asyncio.Event(), seen))
    await asyncio.sleep(0)

    await drain.close(grace=0.01)

    assert running.cancelled()
    assert seen == ["cut"]


async def test_a_call_cancelled_by_its_client_is_not_taken_for_cut() -> None:
    drain, seen = Drain(), []
    running = asyncio.create_task(call(drain, asyncio.Event(), seen))
    await asyncio.sleep(0)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await drain.close(grace=60)

    assert seen == ["cancelled"]


async def test_refused_calls_do_not_keep_close_waiting_for_ever() -> None:
    """However often calls keep coming, close() returns within its grace."""
    drain = Drain()
    closing = asyncio.create_task(drain.close(grace=60))
    refused = 0
    while not closing.done():
        await asyncio.sleep(0.005)
        with pytest.raises(ShuttingDown):
            drain.admit()
        refused += 1

    await closing
    assert refused > 1

"""A unit's statement timeout: it cancels the task running the unit, and tells its own
cancellation from anyone else's, as asyncio.timeout does."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from server.units import Timer

pytestmark = pytest.mark.unit


async def test_an_expired_timer_cancels_its_task_and_takes_the_cancellation_back() -> None:
    timer = Timer(0.01)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(10)
    assert timer.expired()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_a_cancellation_from_elsewhere_is_not_the_timers() -> None:
    async def unit() -> bool:
        timer = Timer(10)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return timer.expired()
        finally:
            timer.close()
        return True

    task = asyncio.create_task(unit())
    await asyncio.sleep(0)
    task.cancel()
    assert await task is False


async def test_a_stopped_timer_lets_the_work_run_on() -> None:
    timer = Timer(0.01)
    timer.stop()
    await asyncio.sleep(0.05)
    assert not timer.expired()


async def test_a_swallowed_expiry_is_taken_back_on_close() -> None:
    timer = Timer(0.01)
    with contextlib.suppress(asyncio.CancelledError):  # work that swallows its cancellation
        await asyncio.sleep(10)
    timer.close()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0

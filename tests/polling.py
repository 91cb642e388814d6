"""Waiting in tests for something that happens in the background."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest


async def eventually(
    probe: Callable[[], bool | Awaitable[bool]], what: str = "the condition", within: float = 10.0
) -> None:
    """Polls `probe` (plain or async) until it holds; fails the test naming `what` once
    `within` seconds have passed. A bound on waiting, never a claim about speed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        held = probe()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)

"""When to stop calling a failing cache backend for a while.

`Breaker` is the seam: the resilient wrapper only asks `allow()` before a call
and reports `success()` or `failure()` after it, so a fuller circuit breaker
(shared with the interceptors) can replace `CoolDown` without touching it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Breaker(Protocol):
    def allow(self) -> bool:
        """Whether to make the next call."""
        ...

    def success(self) -> None: ...

    def failure(self) -> None: ...


class CoolDown:
    """Opens after `threshold` failures in a row and stays open for `cool_down` seconds;
    then lets one call through as a probe. The probe's success closes it; its failure
    opens it for another cool-down."""

    def __init__(
        self,
        threshold: int = 5,
        cool_down: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or cool_down < 0:
            raise ValueError("threshold must be at least 1 and cool_down not negative")
        self.threshold = threshold
        self.cool_down = cool_down
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._failures >= self.threshold

    def allow(self) -> bool:
        if not self.is_open:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        # One probe per cool-down: the calls after it wait for its outcome.
        self._open_until = now + self.cool_down
        return True

    def success(self) -> None:
        self._failures = 0

    def failure(self) -> None:
        self._failures += 1
        if self.is_open:
            self._open_until = self._clock() + self.cool_down

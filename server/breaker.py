"""Circuit breakers, one per dependency, with Dapr's (and gobreaker's) semantics.

Closed: calls pass; `trip_after` server faults in a row open it. Open: calls
fail fast for `open_for` seconds. Half-open: `probes` calls pass; as many
successes close it, one fault opens it again. Only faults of the dependency
count (connection refused or lost, a probe unanswered); a NOT_FOUND proves
the database answers and counts as a success. A call the server turned away
before it reached the dependency (an exhausted pool, a tenant over its share)
counts for nothing either way.

Some outcomes give no verdict but cast doubt: a call that waited out its
deadline, or the pool, may have met a slow statement or a dependency that
answers nothing. They make the breaker `suspect`, and its watcher probes the
dependency (with a timeout of its own) until a probe answers or the faults
open it: a database that stops answering opens it, a slow statement does not.

pybreaker's asyncio support runs through Tornado, and a state machine this
size reads better than an adapter around it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from repositories.errors import Overloaded, Unavailable

log = logging.getLogger(__name__)


class State(enum.Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True)
class BreakerPolicy:
    trip_after: int = 5  # faults in a row
    open_for: float = 10.0  # seconds
    probes: int = 1  # calls let through while half-open


class CircuitOpen(Unavailable):
    """A dependency's breaker is open: fail fast, and say when to try again."""

    reason = "CIRCUIT_OPEN"

    def __init__(self, dependency: str, retry_after: float) -> None:
        ms = max(1, math.ceil(retry_after * 1000))
        super().__init__(
            f"the {dependency} is failing; calls that need it are refused for {ms} ms",
            metadata={"dependency": dependency, "retry_after_ms": str(ms)},
        )
        self.pushback_ms = ms


def database_fault(exc: BaseException) -> bool:
    """The database (or the pooler or driver in front of it) failed: Unavailable, or an
    error raised because of one (a transaction aborted when its connection was lost)."""
    return isinstance(exc, Unavailable) or isinstance(exc.__cause__, Unavailable)


class Breaker:
    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        is_fault: Callable[[BaseException], bool] = database_fault,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._policy = policy
        self._is_fault = is_fault
        self._clock = clock
        self._state = State.CLOSED
        self._faults = 0  # in a row, while closed
        self._opened_at = 0.0
        self._probing = 0  # probes in flight, while half-open
        self._passed = 0  # probes that succeeded, while half-open
        self._suspect = False  # doubt cast since the last success, while closed
        # Called with the new state on every change (health, logs, metrics).
        self.listeners: list[Callable[[State], None]] = []

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self.retry_after() == 0:
            self._become(State.HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when not open."""
        if self._state is not State.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._policy.open_for - self._clock())

    @property
    def wants_probe(self) -> bool:
        """Whether the dependency should be probed: half-open, or closed under suspicion."""
        state = self.state
        return state is State.HALF_OPEN or (state is State.CLOSED and self._suspect)

    def suspect(self) -> None:
        """A call's outcome gave no verdict but casts doubt (it ran out of time): the
        dependency should be probed until it answers."""
        self._suspect = True

    def allow(self) -> bool:
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and self._probing + self._passed < self._policy.probes:
            self._probing += 1
            return True
        return False

    def success(self) -> None:
        if self._state is State.HALF_OPEN:
            self._probing = max(0, self._probing - 1)
            self._passed += 1
            if self._passed >= self._policy.probes:
                self._become(State.CLOSED)
        self._faults = 0
        self._suspect = False

    def failure(self) -> None:
        if self._state is State.HALF_OPEN:
            self._become(State.OPEN)
            return
        self._faults += 1
        if self._state is State.CLOSED and self._faults >= self._policy.trip_after:
            self._become(State.OPEN)

    def release(self) -> None:
        """A call let through ended without telling (cancelled): free its probe."""
        if self._state is State.HALF_OPEN:
            self._probing = max(0, self._probing - 1)

    def admit(self) -> None:
        """Lets a call through, or raises CircuitOpen; `ended` must follow."""
        if not self.allow():
            raise CircuitOpen(self.name, self.retry_after() or self._policy.open_for)

    def ended(self, error: BaseException | None) -> None:
        """Counts how an admitted call ended: `error` None, it succeeded."""
        if error is None:
            self.success()
        elif isinstance(error, Overloaded):
            self.release()  # turned away before it reached the dependency
        elif isinstance(error, Exception):
            self.failure() if self._is_fault(error) else self.success()
        else:
            self.release()

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Runs the block if the breaker allows, and counts how it ended."""
        self.admit()
        try:
            yield
        except BaseException as exc:
            self.ended(exc)
            raise
        self.ended(None)

    def _become(self, state: State) -> None:
        self._state = state
        self._faults = self._probing = self._passed = 0
        self._suspect = False
        if state is State.OPEN:
            self._opened_at = self._clock()
        log.log(
            logging.INFO if state is State.CLOSED else logging.WARNING,
            "%s breaker %s",
            self.name,
            state.value,
        )
        for listener in self.listeners:
            listener(state)

"""Per-tenant bulkheads: how many database connections one tenant's work may hold at once.

Without them, one tenant whose calls pile up (on a locked row, a slow query) takes
every connection of the pool and then the pool's queue, and every other tenant's
calls wait behind it. With them, a tenant holds at most `limit` connections: a unit
of work holds a slot while it has, or waits for, its connection; a transaction across
calls holds one from begin to end, since it keeps its connection between its calls
(calls inside it use that connection and take none).

A call beyond the limit waits in its own tenant's line, never in the pool's queue where
it would make other tenants wait. The line is patient while it moves and quick to give
up when it does not: a burst of quick calls is served, each call waiting its turn, but
a call is refused with TooManyConcurrentCalls (RESOURCE_EXHAUSTED, and a time to retry
after) once `wait` seconds pass with none of its tenant's calls finishing, as when
they all wait on one locked row. Slots are per process, like the pool they share out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable

from repositories.errors import Overloaded, ResourceExhausted

# Refused callers are told to come back after once to twice the line's `wait` (at least
# this many seconds), drawn at random so that a crowd refused together does not return
# together.
MIN_RETRY_AFTER = 0.1
# Tenants whose refusals are counted by name; the rest are counted together under OTHER,
# so that a flood of tenant names cannot grow the statistics (or the metric's series).
TRACKED = 100
OTHER = "(other)"  # not a valid tenant name, so it never collides with one


class TooManyConcurrentCalls(ResourceExhausted, Overloaded):
    """The tenant already holds as many database connections as one tenant may
    (REPOGATE_TENANT_MAX_CONCURRENCY): its own calls must finish first."""

    reason = "TOO_MANY_CONCURRENT_CALLS"

    def __init__(self, limit: int, retry_after: float) -> None:
        ms = max(1, round(retry_after * 1000))
        super().__init__(
            f"this tenant has {limit} database calls or transactions running, the most one "
            f"tenant may; retry in {ms} ms",
            metadata={"limit": str(limit), "retry_after_ms": str(ms)},
        )
        # The gRPC retry policy's pushback (server/errors.py sends it as a trailer).
        self.pushback_ms = ms


class _Compartment:
    """One tenant's slots: how many it holds, the calls waiting for one (first come,
    first served: asyncio.Semaphore's discipline, without building one for each tenant
    that calls, which made taking and releasing a slot cost 5 µs rather than 1), and
    when it last handed one on to a waiting call."""

    __slots__ = ("handed", "held", "waiters")

    def __init__(self) -> None:
        self.held = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.handed = 0.0


class Slot:
    """One of a tenant's slots, held until released (releasing twice is harmless)."""

    __slots__ = ("_owner", "_tenant")

    def __init__(self, owner: Bulkheads | None, tenant: str) -> None:
        self._owner = owner
        self._tenant = tenant

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release(self._tenant)


class Bulkheads:
    """The slots of every tenant; `limit` None takes none (no cap)."""

    def __init__(
        self,
        limit: int | None = None,
        wait: float = 0.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.wait = wait
        self._clock = clock
        # Tenants holding or waiting for a slot; the others are forgotten.
        self._tenants: dict[str, _Compartment] = {}
        # Calls refused, by tenant (the first TRACKED tenants refused; then OTHER).
        self.refused: Counter[str] = Counter()

    async def take(self, tenant: str) -> Slot:
        """A slot of `tenant`'s. Beyond the limit, waits in line while the tenant's calls
        keep finishing; TooManyConcurrentCalls once none has for `wait` seconds."""
        if self.limit is None:
            return Slot(None, tenant)
        compartment = self._tenants.get(tenant)
        if compartment is None:
            compartment = self._tenants[tenant] = _Compartment()
        if compartment.held < self.limit and not compartment.waiters:
            compartment.held += 1
            return Slot(self, tenant)
        if self.wait <= 0:
            raise self._refuse(tenant, self.limit)
        await self._queue(tenant, compartment, self.limit)
        return Slot(self, tenant)

    async def _queue(self, tenant: str, compartment: _Compartment, limit: int) -> None:
        """Waits for a slot, which a release hands straight to the first in line. The
        line may take longer than `wait` to move up, as long as it moves: a tenant with
        many quick calls is served, one whose calls are stuck (on a lock, a dead
        query) is refused `wait` seconds after it last made progress."""
        given = asyncio.get_running_loop().create_future()
        compartment.waiters.append(given)
        since = self._clock()
        try:
            while not given.done():
                left = max(since, compartment.handed) + self.wait - self._clock()
                if left <= 0:
                    raise self._refuse(tenant, limit)
                await asyncio.wait((given,), timeout=left)
        except BaseException:
            if given.done() and not given.cancelled():
                self._release(tenant)  # handed one just as it gave up: pass it on
            else:
                given.cancel()
                with contextlib.suppress(ValueError):
                    compartment.waiters.remove(given)
            raise

    def held(self, tenant: str) -> int:
        """Slots `tenant` holds now."""
        compartment = self._tenants.get(tenant)
        return 0 if compartment is None else compartment.held

    def _release(self, tenant: str) -> None:
        compartment = self._tenants[tenant]
        while compartment.waiters:
            waiter = compartment.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                compartment.handed = self._clock()
                return
        compartment.held -= 1
        if compartment.held == 0:
            del self._tenants[tenant]

    def _refuse(self, tenant: str, limit: int) -> TooManyConcurrentCalls:
        if tenant in self.refused or len(self.refused) < TRACKED:
            self.refused[tenant] += 1
        else:
            self.refused[OTHER] += 1
        return TooManyConcurrentCalls(
            limit, max(self.wait, MIN_RETRY_AFTER) * random.uniform(1.0, 2.0)
        )


# For a database whose tenants share its pool without a cap.
NO_CAP = Bulkheads()

"""Where a call's database work runs.

With `x-transaction-id`, inside that transaction (never retried: a conflict
there ends the transaction, and only its client can retry all of it).
Without, in a short transaction of its own (a read, or work of one write, runs
in autocommit on PostgreSQL) that is retried on conflicts (serialization
failure, deadlock, SQLite busy) with exponential backoff and full jitter, within
the call's deadline. What it changed is forgotten by caches once committed, and
also when the call failed after its changes may have landed.

Either way the work passes the database's circuit breaker, and is cancelled
(its statement with it) when the caller's deadline passes, gRPC cancelling
the call, or, when the caller set none, after the server's statement timeout.
Work that runs out of time, or waits out the pool, proves nothing about the
database, but makes its breaker suspect it: the server then probes the database
to tell a slow statement (it answers the probe) from a database that answers
nothing (the probe times out, a fault).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from repositories.bulkheads import Bulkheads
from repositories.changes import Changes
from repositories.database import Database, RepositorySource
from repositories.errors import Conflict, DeadlineExceeded, PoolExhausted
from repositories.transactions import OnCommit, TransactionRegistry, tell
from server import context
from server.breaker import Breaker, BreakerPolicy
from server.query_shapes import QueryShapes

T = TypeVar("T")
Work = Callable[[RepositorySource], Awaitable[T]]
# Seconds before its deadline at which a cancelled call counts as cut off by it (gRPC
# cancels the call when the deadline passes, by its own clock).
DEADLINE_SLACK = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    """How single calls are retried on conflicts."""

    attempts: int = 5
    initial_backoff: float = 0.01  # seconds; the first wait is up to twice this
    max_backoff: float = 1.0
    # Seconds a call without a deadline may spend on the database; None: unbounded.
    statement_timeout: float | None = 30.0


class Units:
    """Runs each call's work in the call's transaction or in one of its own."""

    def __init__(
        self,
        db: Database,
        transactions: TransactionRegistry,
        retry: RetryPolicy,
        on_commit: OnCommit | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self._db = db
        self.transactions = transactions
        self._retry = retry
        self._on_commit = on_commit
        self.breaker = breaker or Breaker("database", BreakerPolicy())
        # Retries done since start, for statistics.
        self.retried = 0
        # The shapes of the List, Count, Aggregate and Rank queries run, for index recommendations.
        self.shapes = QueryShapes()

    @property
    def bulkheads(self) -> Bulkheads:
        """Each tenant's share of the database's connections."""
        return self._db.bulkheads

    async def read(self, work: Work[T]) -> T:
        return await self._run(work, write=False)

    async def write(self, work: Work[T], *, one_write: bool = False) -> T:
        """Runs `work` and commits it (or keeps it, inside the call's transaction).
        `one_write`: the work runs at most one write statement, so outside a transaction
        it may run in autocommit (see Database.unit_of_work)."""
        return await self._run(work, write=True, one_write=one_write)

    async def _run(self, work: Work[T], *, write: bool, one_write: bool = False) -> T:
        return await self.guarded(
            lambda timer: self._routed(work, write=write, one_write=one_write, timer=timer)
        )

    async def guarded(self, work: Callable[[asyncio.Timeout], Awaitable[T]]) -> T:
        """Runs a call's database work through the database's breaker, within the call's
        deadline or, when it set none, the statement timeout; `work` is handed the timer
        (a committed write turns it off)."""
        # With a deadline, gRPC cancels the call when it passes; without, this does.
        deadline = context.current().deadline
        limit = None if deadline is not None else self._retry.statement_timeout
        try:
            async with asyncio.timeout(limit) as timer, self.breaker.guard():
                return await work(timer)
        except TimeoutError:
            self.breaker.suspect()
            raise DeadlineExceeded(
                f"the call's database work took longer than {limit:g}s and was cancelled"
            ) from None
        except PoolExhausted:
            self.breaker.suspect()
            raise
        except asyncio.CancelledError:
            if deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK:
                self.breaker.suspect()
            raise

    async def _routed(
        self, work: Work[T], *, write: bool, one_write: bool, timer: asyncio.Timeout
    ) -> T:
        tenant = context.tenant()
        actor = context.actor() if write else None
        transaction_id = context.transaction_id()
        if transaction_id is not None:
            async with self.transactions.call(
                transaction_id, tenant, actor=actor, write=write
            ) as repositories:
                return await work(repositories)

        async def once() -> tuple[T, Changes]:
            uow = self._db.unit_of_work(
                tenant, actor=actor, read_only=not write, one_write=one_write
            )
            try:
                async with uow:
                    result = await work(uow)
                    if write:
                        await uow.commit()
                        # Committed: the statement timeout, which answers that the work
                        # was undone, no longer applies (caches are told next).
                        timer.reschedule(None)
            except BaseException:
                # Failed, but perhaps after its changes landed (autocommit, or a COMMIT
                # whose answer was cut off): caches forget them all the same.
                await tell(self._on_commit, uow.written())
                raise
            return result, uow.written()

        result, changes = await self.retrying(once)
        # Outside the retries: a committed write is never run again.
        await tell(self._on_commit, changes)
        return result

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Runs `attempt` again while it fails on a conflict, within the call's deadline
        and the policy's attempts; the last conflict is raised."""
        started = time.monotonic()
        try:
            # Most calls never conflict: their one attempt skips tenacity, whose
            # set-up costs about 20 µs a call.
            return await attempt()
        except Conflict as exc:
            conflict = exc
        if self._retry.attempts <= 1:
            raise conflict
        first = time.monotonic() - started
        # The wait after the first attempt, drawn as tenacity draws the later ones.
        wait = random.uniform(0, min(self._retry.initial_backoff, self._retry.max_backoff))
        stop: stop_base = stop_after_attempt(self._retry.attempts - 1)
        deadline = context.current().deadline
        if deadline is not None:
            if time.monotonic() + wait + 1.5 * first >= deadline:
                raise conflict
            stop = stop | _before_deadline(deadline, first)
        self.retried += 1
        await asyncio.sleep(wait)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Conflict),
            stop=stop,
            wait=wait_random_exponential(
                multiplier=self._retry.initial_backoff * 2, max=self._retry.max_backoff
            ),
            before_sleep=self._count,
            reraise=True,
        )

        async def once() -> T:
            # tenacity awaits only what a coroutine function returns; `attempt` may
            # be a lambda returning an awaitable.
            return await attempt()

        return await retrying(once)

    def _count(self, state: RetryCallState) -> None:
        self.retried += 1


class _before_deadline(stop_base):  # noqa: N801 (named like tenacity's own stops)
    """Stops when another wait and attempt would not end before `deadline`, so the
    caller hears the conflict (ABORTED) rather than DEADLINE_EXCEEDED. `first`: how
    long the attempt made before tenacity took over took."""

    def __init__(self, deadline: float, first: float) -> None:
        self._deadline = deadline
        self._first = first

    def __call__(self, state: RetryCallState) -> bool:
        working = self._first + (state.seconds_since_start or 0.0) - state.idle_for
        # Half again the average attempt: the next one may be slower.
        attempt = 1.5 * working / (state.attempt_number + 1)
        return time.monotonic() + state.upcoming_sleep + attempt >= self._deadline

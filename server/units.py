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
from typing import Any, TypeVar

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
from server import consistency, context
from server.breaker import Breaker, BreakerPolicy
from server.query_shapes import QueryShapes
from server.replicas import Replicas

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
        replicas: Replicas | None = None,
    ) -> None:
        self._db = db
        # Where reads outside a transaction go first (server/replicas.py); with them,
        # writes read their commit's WAL position, for the call's consistency token.
        self.replicas = replicas
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

    def read(self, work: Work[T], *, primary: bool = False) -> Awaitable[T]:
        """Runs `work`, which writes nothing; outside a transaction on a replica when
        one can serve it. `primary`: on the primary, which has every committed write (a
        read that decides what to write next)."""
        return self._guard(self._routed, work, False, False, primary)

    def write(self, work: Work[T], *, one_write: bool = False) -> Awaitable[T]:
        """Runs `work` and commits it (or keeps it, inside the call's transaction).
        `one_write`: the work runs at most one write statement, so outside a transaction
        it may run in autocommit (see Database.unit_of_work)."""
        return self._guard(self._routed, work, True, one_write, True)

    def guarded(self, work: Callable[[Timer], Awaitable[T]]) -> Awaitable[T]:
        """Runs a call's database work through the database's breaker, within the call's
        deadline or, when it set none, the statement timeout; `work` is handed the timer
        (a committed write turns it off)."""
        return self._guard(work)

    async def _guard(self, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        # With a deadline, gRPC cancels the call when it passes; without, the timer does.
        # One call_at handle and plain try blocks, not asyncio.timeout and the breaker's
        # context manager: 24 µs less a call (python -m bench.layers).
        deadline = context.current().deadline
        limit = None if deadline is not None else self._retry.statement_timeout
        breaker = self.breaker
        timer = Timer(limit)
        session = consistency.current()  # None without replicas
        if session is not None:
            session.on_replica = False
        try:
            breaker.admit()
            try:
                result = await work(timer, *args)
            except BaseException as exc:
                _ended(breaker, session, exc)
                raise
            _ended(breaker, session, None)
            return result
        except asyncio.CancelledError:
            if timer.expired():
                breaker.suspect()
                raise _timed_out(limit) from None
            if deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK:
                breaker.suspect()
            raise
        except TimeoutError:
            breaker.suspect()
            raise _timed_out(limit) from None
        except PoolExhausted:
            breaker.suspect()
            raise
        finally:
            timer.close()

    async def _routed(
        self, timer: Timer, work: Work[T], write: bool, one_write: bool, primary: bool
    ) -> T:
        rc = context.current()
        tenant = rc.require_tenant()
        actor = context.validate_actor(rc.actor) if write else None
        transaction_id = context.validate_transaction_id(rc.transaction_id)
        if transaction_id is not None:
            async with self.transactions.call(
                transaction_id, tenant, actor=actor, write=write
            ) as repositories:
                return await work(repositories)
        outcome: tuple[T, Changes] = await self.retrying(
            self._once, work, tenant, actor, write, one_write, timer, primary
        )
        result, changes = outcome
        # Outside the retries: a committed write is never run again.
        await tell(self._on_commit, changes)
        return result

    async def _once(
        self,
        work: Work[T],
        tenant: str,
        actor: str | None,
        write: bool,
        one_write: bool,
        timer: Timer,
        primary: bool,
    ) -> tuple[T, Changes]:
        replicas = self.replicas
        if replicas is not None and not primary:

            async def on_primary() -> T:
                return (await self._once(work, tenant, None, False, False, timer, True))[0]

            read = await replicas.read(work, tenant, consistency.current(), on_primary)
            return read, Changes()
        uow = self._db.unit_of_work(
            tenant,
            actor=actor,
            read_only=not write,
            one_write=one_write,
            positioned=write and replicas is not None,
        )
        try:
            async with uow:
                result = await work(uow)
                if write:
                    await uow.commit()
                    # Committed: the statement timeout, which answers that the work
                    # was undone, no longer applies (caches are told next).
                    timer.stop()
                    if uow.position is not None:
                        consistency.wrote(uow.position)
        except BaseException:
            # Failed, but perhaps after its changes landed (autocommit, or a COMMIT
            # whose answer was cut off): caches forget them all the same.
            await tell(self._on_commit, uow.written())
            raise
        return result, uow.written()

    async def retrying(self, attempt: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Runs `attempt(*args)` again while it fails on a conflict, within the call's
        deadline and the policy's attempts; the last conflict is raised."""
        started = time.monotonic()
        try:
            # Most calls never conflict: their one attempt skips tenacity, whose
            # set-up costs about 20 µs a call.
            return await attempt(*args)
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
            return await attempt(*args)

        return await retrying(once)

    def _count(self, state: RetryCallState) -> None:
        self.retried += 1


class Timer:
    """A unit's statement timeout: cancels the task running it once `limit` seconds have
    passed, as asyncio.timeout does, with one loop.call_at handle; None: no limit."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_task")

    def __init__(self, limit: float | None) -> None:
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None
        if limit is not None:
            task = asyncio.current_task()
            assert task is not None
            self._task = task
            self._cancelling = task.cancelling()
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(loop.time() + limit, self._expire)

    def _expire(self) -> None:
        self._handle = None
        self._expired = True
        self._task.cancel()

    def stop(self) -> None:
        """Turns the timer off; the work it was to cut short may run on."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """Turns the timer off, taking back a cancellation the work swallowed."""
        self.stop()
        self.expired()

    def expired(self) -> bool:
        """Whether the timer cancelled the task, and no one else did: its cancellation
        is taken back, to be answered as DeadlineExceeded."""
        if not self._expired:
            return False
        self._expired = False
        return self._task.uncancel() <= self._cancelling


def _ended(
    breaker: Breaker, session: consistency.Session | None, error: BaseException | None
) -> None:
    """Tells the primary's breaker how a call ended, unless a replica answered it: that
    says nothing of the primary (half-open, it would close a breaker still down)."""
    if session is not None and session.on_replica:
        breaker.release()
    else:
        breaker.ended(error)


def _timed_out(limit: float | None) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the call's database work took longer than {limit:g}s and was cancelled"
    )


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

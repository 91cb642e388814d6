"""Checking connections out of the pool for a call's work, and handing them from one
short unit of work to the next, past the pool.

`connect` checks a connection out for a unit of work or a transaction, timed for the
pool-wait histogram when `time_connections` asked for it.

A unit of work that runs in autocommit (PostgreSQL: a read, or a unit of one write)
checks a connection out of SQLAlchemy's pool and returns it: two greenlet hops, the
pool's fairy, its events, the Connection around it, about 35 µs of CPU in a loop of
its own (`python -m bench.layers`, "units: read with a unit of work") and far more
in a loaded server. Here a unit that ends leaves its connection, still checked out
and in autocommit, for the next autocommit unit, which takes it in a list pop: a
GetUser with the entity cache off went from 589 to 439 µs of server CPU (bench.ab,
8 paired rounds, 32 concurrent calls), 6 to 10 µs a unit where it was 52 in a loop
of 8 concurrent units.

What the pool's rules protect stays protected:
- At most KEEP connections wait here, each at most `idle` seconds (IDLE, or less when
  the pool pings connections idle longer: repositories/database.py): a timer returns
  them to the pool, which pings, recycles and counts them as it always does.
- Nobody waits, and the pool opens no connection, for want of one held here: one is
  held only while the pool could still hand out another within its size; a checkout
  through `connect` from a pool with none idle has the held ones returned first; and
  while anyone waits on the pool, connections go back to it instead.
- A connection is handed on for at most MAX_HELD seconds after it left the pool, so
  that pool_recycle and the pool's checks still come round under endless load.
- Only a connection in good order is held: not invalidated, no transaction open.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

from repositories import prepared

log = logging.getLogger(__name__)
# Connections waiting here at most: a server busy enough to overlap more units than
# this has them all running anyway.
KEEP = 4
# Seconds a connection may wait here before it goes back to the pool.
IDLE = 0.5
# Seconds a connection may be handed on before it goes back to the pool once.
MAX_HELD = 10.0

# The connections held between units of work, by pool (`hold`).
_held: weakref.WeakKeyDictionary[Any, HeldConnections] = weakref.WeakKeyDictionary()
# Told how long each connect() waited for its connection, by pool (the pool-wait
# histogram of server/db_metrics.py); a pool without one is not timed at all.
_wait_observers: weakref.WeakKeyDictionary[Any, Callable[[float], None]] = (
    weakref.WeakKeyDictionary()
)


def time_connections(engine: AsyncEngine, observe: Callable[[float], None]) -> None:
    """Tells `observe` the seconds each connect() of a call waits for a connection from
    `engine`'s pool (its engines with other options share it): the checkout, and the
    connecting or pinging it needed."""
    _wait_observers[engine.sync_engine.pool] = observe


async def connect(engine: AsyncEngine) -> AsyncConnection:
    """`engine.connect()`, timed when time_connections asked for it, after the pool got
    back the connections held between units if it needs them."""
    pool = engine.sync_engine.pool
    held = _held.get(pool)
    if held is not None:
        await held.make_room()
    observe = _wait_observers.get(pool)
    if observe is None:
        return await engine.connect()
    started = time.perf_counter()
    try:
        return await engine.connect()
    finally:
        observe(time.perf_counter() - started)


class PoolCounts(NamedTuple):
    size: int
    checked_in: int  # idle: in the pool, or held between units
    checked_out: int  # in use by calls and transactions
    overflow: int  # open beyond `size`


def pool_counts(engine: AsyncEngine) -> PoolCounts | None:
    """What `engine`'s pool holds, the connections held between units counted as idle
    (they are); None for a pool that keeps no count (in-memory SQLite's one connection)."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, QueuePool):
        return None
    held = _held.get(pool)
    idle = 0 if held is None else held.idle
    return PoolCounts(
        size=pool.size(),
        checked_in=pool.checkedin() + idle,
        checked_out=pool.checkedout() - idle,
        # QueuePool counts overflow from -size up (-size: nothing opened yet).
        overflow=max(0, pool.overflow()),
    )


def hold(engine: AsyncEngine, idle: float = IDLE) -> HeldConnections:
    """The connections held between the autocommit units of work on `engine`'s pool,
    which `connect` hands back to the pool when it needs them."""
    held = _held.get(engine.sync_engine.pool)
    if held is None:
        held = _held[engine.sync_engine.pool] = HeldConnections(engine, idle)
    return held


class HeldConnections:
    """The autocommit connections held between units of work on one engine."""

    def __init__(self, engine: AsyncEngine, idle: float = IDLE) -> None:
        self._pool: Any = engine.sync_engine.pool
        self._idle_for = idle
        # (connection, when it left the pool, when it was left here), latest last.
        self._idle: list[tuple[AsyncConnection, float, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._returning: set[asyncio.Task[None]] = set()
        # Units that took a held connection, for tests and statistics.
        self.reused = 0

    @property
    def idle(self) -> int:
        """Connections waiting here for the next unit."""
        return len(self._idle)

    async def take(self) -> tuple[AsyncConnection, float] | None:
        """A held connection in autocommit and when it left the pool, or None: the
        caller checks one out of the pool."""
        if not self._idle:
            return None
        started = time.perf_counter()
        if self._waited_on():
            # Those waiting on the pool come first.
            await self.release()
            return None
        if time.monotonic() - self._idle[-1][2] >= self._idle_for:
            # The latest is stale, so are the rest.
            await self.release()
            return None
        conn, since, _ = self._idle.pop()
        self.reused += 1
        observe = _wait_observers.get(self._pool)
        if observe is not None:
            # The pool-wait histogram counts every connection a call got, this one too.
            observe(time.perf_counter() - started)
        return conn, since

    async def give_back(self, conn: AsyncConnection, since: float) -> None:
        """`conn`, in autocommit, from a unit that ended: held for the next unit, or
        returned to the pool (out of autocommit). `since`: when it left the pool."""
        now = time.monotonic()
        if (
            len(self._idle) < KEEP
            and self._idle_for > 0  # 0: the pool tests every connection it hands out
            and not conn.invalidated
            and not conn.in_transaction()
            and now - since < MAX_HELD
            and self._spare()
            and not self._waited_on()
        ):
            self._idle.append((conn, since, now))
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._idle_for, self._sweep)
            return
        await _check_in(conn)

    async def release(self) -> None:
        """Returns every held connection to the pool (as the server stops, say)."""
        idle, self._idle = self._idle, []
        await _check_in_all([conn for conn, _, _ in idle])

    def _sweep(self) -> None:
        """Returns the connections idle `idle` seconds to the pool; comes back while
        any are left."""
        self._timer = None
        now = time.monotonic()
        stale = [entry for entry in self._idle if now - entry[2] >= self._idle_for]
        if stale:
            self._idle = [entry for entry in self._idle if now - entry[2] < self._idle_for]
            self._return([conn for conn, _, _ in stale])
        if self._idle:
            oldest = min(entry[2] for entry in self._idle)
            self._timer = asyncio.get_running_loop().call_later(
                max(0.0, oldest + self._idle_for - now), self._sweep
            )

    async def make_room(self) -> None:
        """Before a checkout from the pool: returns the held connections when the pool
        has none idle, so that it hands one of them out rather than open another."""
        if self._idle and not self._checked_in():
            await self.release()

    def _spare(self) -> bool:
        """Whether the pool can hand out a connection at once without going past its
        size: one is in it, or it has opened fewer than its size (QueuePool's overflow
        counts from -size up); on a pool that does not say, no."""
        try:
            return bool(self._checked_in() or self._pool.overflow() < 0)
        except AttributeError:
            return False

    def _checked_in(self) -> int:
        try:
            return int(self._pool.checkedin())
        except AttributeError:
            return 0

    def _return(self, conns: list[AsyncConnection]) -> None:
        task = asyncio.create_task(_check_in_all(conns))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    def _waited_on(self) -> bool:
        """Whether anyone waits on the pool for a connection (asyncio.Queue's getters,
        under SQLAlchemy's AsyncAdaptedQueue); on a pool that does not say, assume so."""
        queue = getattr(self._pool, "_pool", None)
        waiting = getattr(getattr(queue, "_queue", None), "_getters", None)
        return waiting is None or bool(waiting)

    async def close(self) -> None:
        """Returns every held connection and stops the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.release()
        if self._returning:
            await asyncio.gather(*self._returning, return_exceptions=True)


async def _check_in_all(conns: list[AsyncConnection]) -> None:
    """Each of `conns` back to the pool; one that fails to go back does not keep the
    rest out (the pool discards a connection that fails on its way in)."""
    for conn in conns:
        try:
            await _check_in(conn)
        except Exception:
            log.warning("returning an idle connection to the pool failed", exc_info=True)


async def _check_in(conn: AsyncConnection) -> None:
    """Back to the pool, out of autocommit (the pool's other users expect its default)."""
    try:
        if not conn.invalidated:
            prepared.connections(conn)[1].autocommit = False
    finally:
        await conn.close()

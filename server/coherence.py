"""Coherent caches across processes: every process reads every committed write.

On PostgreSQL the entity tables record each write in a change log, inside the
writing transaction (repositories/change_log.py). Each process follows the log on
a connection of its own, outside the pool (REPOGATE_DATABASE_SESSION_URL, default
the database URL), and turns each entry into the invalidation the writer's own
process made after its commit (ReadThrough.apply).

A bound, not a hope: every POLL_EVERY seconds the process reads the entries of
transactions that committed since its previous read, by PostgreSQL snapshots (the
previous read's snapshot against this one's). Once the read sent at time t has
been applied, every write committed before t has been forgotten: the read's
snapshot, taken after t, sees them all.

- Without Redis each process caches in its own memory, gated (ReadThrough
  `bound`): it is used only within BOUND seconds of the last read applied. When
  the connection is lost, or reads stop for RESYNC_AFTER seconds, the process
  starts again from a fresh snapshot and drops every entity entry, since it cannot
  know what it missed. A broken, slow or stuck feed costs misses, never an answer
  older than the bound.
- With Redis the cache is shared, and writers tombstone it after their commits.
  One process of the fleet, the holder of a session-level advisory lock taken on
  its feed connection (PostgreSQL releases it when that connection dies), follows
  the log and applies it to Redis: a backstop for a writer that died between its
  commit and its invalidation, whose Redis call failed, or a tool. On taking the
  role, and after Redis refused an entry, it drops every entity entry in Redis.

Whoever follows the log also trims it: entries of transactions that ended more
than KEEP_LOG seconds ago go, one process at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from repositories import change_log
from repositories.drivers import connect_arguments
from server.read_through import ReadThrough

log = logging.getLogger(__name__)

# Seconds between reads of the log.
POLL_EVERY = 0.1
# A gated cache is used only this long after the send time of the last read applied.
BOUND = 1.0
# No read for this long: entries may have been trimmed since; start again.
RESYNC_AFTER = 10.0
# Entries stay this long after their transactions ended, then one process trims them.
KEEP_LOG = 60.0
TRIM_EVERY = 10.0
# How long start() waits for the feed before serving with the cache gated shut.
START_WAIT = 2.0
# Seconds between attempts to take the backstop role (Redis).
ELECT_EVERY = 1.0
# Reconnection backoff, in seconds: from the first to the longest.
RETRY_FIRST, RETRY_MAX = 0.1, 5.0
# A read that takes longer than this ends the connection.
READ_TIMEOUT = 5.0
# The session-level advisory lock whose holder applies the log to Redis, and the
# transaction-level one that lets one process trim at a time.
BACKSTOP_LOCK_ID = 0x72672D6361636865  # "rg-cache"
TRIM_LOCK_ID = 0x72672D7472696D00  # "rg-trim"
APPLICATION_NAME = "repogate-changes"
# The backend notices a vanished client (and frees the lock) within about
# idle + interval x count seconds.
_KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# Keyword arguments SQLAlchemy's asyncpg dialect takes for itself, not asyncpg.connect's.
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


class _Stale(Exception):
    """The feed fell too far behind to go on from where it was."""


class Applier:
    """Applies what was read from the log to `read_through`'s cache. While the cache
    has not taken something, nothing is confirmed and each read tries a drop of
    every entity entry instead."""

    def __init__(self, read_through: ReadThrough) -> None:
        self._read_through = read_through
        self.dirty = False
        self.confirmed = asyncio.Event()  # set by the first confirmation
        self.applied = 0  # log entries applied

    async def resync(self, sent: float) -> None:
        """What committed before `sent` is in the database, and nothing of it may be
        in the cache: drop every entity entry."""
        self.dirty = True
        await self.apply([], sent)

    async def apply(self, payloads: Sequence[str], sent: float) -> None:
        """Applies the entries read by a read sent at `sent` (time.monotonic())."""
        for payload in payloads:
            try:
                changes = change_log.parse(payload)
            except ValueError:
                log.warning("unreadable change log entry; dropping every cached entity")
                self.dirty = True
                continue
            self.dirty |= not await self._read_through.apply(changes)
            self.applied += 1
        if self.dirty:
            # Missed or unapplied entries: only dropping everything makes up.
            self.dirty = not await self._read_through.drop()
        if not self.dirty:
            self._read_through.confirm(sent)
            self.confirmed.set()


class ChangeFeed:
    """Follows the change log on a connection of its own and has an Applier apply it
    to `read_through`'s cache.

    `shared`: the cache is Redis, which one process of the fleet keeps coherent;
    otherwise it is this process's memory, which this feed keeps and gates."""

    def __init__(self, url: str, read_through: ReadThrough, *, shared: bool) -> None:
        self._connect_args = connect_args(url)
        self._shared = shared
        self.applier = Applier(read_through)
        self._task: asyncio.Task[None] | None = None
        # (monotonic time, snapshot) now and then, to trim the log by.
        self._history: collections.deque[tuple[float, str]] = collections.deque()
        self.following = False
        self.backstop = False  # this process applies the log to the shared cache

    async def start(self) -> None:
        """Starts following; waits up to START_WAIT for this process's own gated cache
        to become usable (it serves meanwhile, reading around the cache)."""
        self._task = asyncio.create_task(self._follow_forever(), name="repogate-changes")
        if not self._shared:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_WAIT):
                    await self.applier.confirmed.wait()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel([self._task])
            self._task = None

    async def _follow_forever(self) -> None:
        wait, failing = RETRY_FIRST, False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(**self._connect_args)
                wait, failing = RETRY_FIRST, False
                await self._follow(conn)
            except Exception as exc:
                # Logged once per outage; unexpected errors with their traceback.
                if self.following or not failing:
                    log.warning(
                        "change log lost (%s: %s); %s until it is back",
                        type(exc).__name__,
                        exc,
                        self._without(),
                        exc_info=not isinstance(exc, (*_CONNECTION_ERRORS, _Stale)),
                    )
                failing = True
            finally:
                self.following = self.backstop = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(random.uniform(wait / 2, wait))
            wait = min(wait * 2, RETRY_MAX)

    def _without(self) -> str:
        """What is missing while the feed is down."""
        if not self._shared:
            return "reading around the cache"
        if self.backstop:
            return "the shared cache has no backstop"
        return "this process cannot take the backstop role"

    async def _follow(self, conn: asyncpg.Connection) -> None:
        if self._shared:
            await self._take_backstop(conn)
        sent = time.monotonic()
        snapshot: str = await conn.fetchval(change_log.SNAPSHOT, timeout=READ_TIMEOUT)
        await self.applier.resync(sent)
        self._history.clear()
        self.following = True
        log.info(
            "following the change log%s",
            "; applying it to the shared cache" if self._shared else "",
        )
        read = sent
        while True:
            await asyncio.sleep(POLL_EVERY)
            sent = time.monotonic()
            if sent - read > RESYNC_AFTER:
                raise _Stale(f"no read of the change log for {sent - read:.0f}s")
            row = await conn.fetchrow(change_log.SINCE, snapshot, timeout=READ_TIMEOUT)
            assert row is not None  # one row, always
            snapshot = row["taken"]
            await self.applier.apply(row["payloads"], sent)
            read = sent
            await self._trim(conn, sent, snapshot)

    async def _trim(self, conn: asyncpg.Connection, now: float, snapshot: str) -> None:
        """Every TRIM_EVERY seconds, removes entries of transactions that had ended
        KEEP_LOG seconds ago, unless another process is doing it."""
        if self._history and now - self._history[-1][0] < TRIM_EVERY:
            return
        self._history.append((now, snapshot))
        old = None
        while self._history and now - self._history[0][0] >= KEEP_LOG:
            old = self._history.popleft()[1]
        if old is None:
            return
        async with conn.transaction():
            if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", TRIM_LOCK_ID):
                await conn.execute(change_log.FORGET_BEFORE, old, timeout=READ_TIMEOUT)

    async def _take_backstop(self, conn: asyncpg.Connection) -> None:
        """Returns once this process holds the backstop role, which PostgreSQL takes
        from it when `conn` ends."""
        while True:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", BACKSTOP_LOCK_ID):
                self.backstop = True
                return
            await asyncio.sleep(ELECT_EVERY)


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancels `tasks` and waits for them to end. redis-py may swallow a cancellation
    that lands inside a command (the command then completes): such a task is
    cancelled again wherever it waits next."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def connect_args(url: str) -> dict[str, Any]:
    """asyncpg.connect's arguments for a SQLAlchemy PostgreSQL URL, as the engine's
    own connections get them (the query's parameters typed: repositories/drivers.py),
    plus the feed's name and keepalives."""
    target, typed = connect_arguments(url)
    parsed = target.set(drivername="postgresql+asyncpg")
    _, made = parsed.get_dialect()().create_connect_args(parsed)
    args = {**made, **typed}
    for key in _DIALECT_ONLY:
        args.pop(key, None)
    settings = dict(args.pop("server_settings", None) or {})
    settings |= _KEEPALIVES | {"application_name": f"{APPLICATION_NAME}-{os.getpid()}"}
    return {**args, "server_settings": settings, "timeout": READ_TIMEOUT}

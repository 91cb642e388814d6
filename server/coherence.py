"""Coherent caches across processes: every process hears of every committed write.

On PostgreSQL the entity tables announce each committed write on a channel
(repositories/notify.py). Each process keeps one connection of its own, outside
the pool (LISTEN needs a session: REPOGATE_DATABASE_LISTEN_URL may point past a
pooler), and turns each announcement into the invalidation the writer's own
process made after its commit (ReadThrough.forget).

A bound, not a hope: every BEAT_EVERY seconds the listener sends itself a
notification on a channel of its own. PostgreSQL delivers notifications in commit
order, so once the beat sent at time t has come back, and everything queued
before it has been applied, every write committed before t has been forgotten.

- Without Redis each process caches in its own memory, gated (ReadThrough
  `bound`): it is used only within BOUND seconds of the last beat that came
  back, and when the listener reconnects the process drops every entity entry
  (writes may have gone unheard meanwhile) before using its cache again.
- With Redis the cache is shared, and writers tombstone it after their commits.
  One process of the fleet, the holder of a session-level advisory lock taken on
  its listener connection (PostgreSQL releases it when that connection dies),
  also applies every announcement to Redis: a backstop for a writer that died
  between its commit and its invalidation, or whose Redis call failed. On taking
  the role, and after an announcement Redis did not take, it drops every entity
  entry in Redis, since it cannot know what went unapplied meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from repositories import notify
from repositories.changes import Changes
from server.read_through import ReadThrough

log = logging.getLogger(__name__)

# Seconds between beats.
BEAT_EVERY = 0.25
# A gated cache is used only this long after the send time of the last beat back.
BOUND = 1.0
# No beat back for this long: the connection is given up and made again.
DEAD_AFTER = 5.0
# How long start() waits for the channel before serving with the cache gated shut.
START_WAIT = 2.0
# Seconds between attempts to take the backstop role (Redis).
ELECT_EVERY = 1.0
# Reconnection backoff, in seconds: from the first to the longest.
RETRY_FIRST, RETRY_MAX = 0.1, 5.0
# Announcements waiting to be applied at most; beyond, they give way to one drop.
MAX_BACKLOG = 10_000
# The session-level advisory lock whose holder applies announcements to Redis.
BACKSTOP_LOCK_ID = 0x72672D6361636865  # "rg-cache"
APPLICATION_NAME = "repogate-listener"
# The listener's backend notices a vanished client (and frees the lock) within
# about idle + interval x count seconds.
_KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# Keyword arguments SQLAlchemy's asyncpg dialect takes for itself, not asyncpg.connect's.
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


@dataclass(frozen=True)
class _Beat:
    sent: float  # time.monotonic() when it was sent


@dataclass(frozen=True)
class _Drop:
    """Every entity entry must go: announcements may have been missed."""


_Item = Changes | _Beat | _Drop


class Applier:
    """Applies what the channel delivers to `read_through`'s cache, one item at a time
    in the order it was delivered: announced changes, beats (which confirm every
    change delivered before them, once applied), and drops (after announcements may
    have been missed). While the cache did not take something, beats confirm nothing
    and each one tries a drop instead."""

    def __init__(self, read_through: ReadThrough) -> None:
        self._read_through = read_through
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.dirty = False
        self.confirmed = asyncio.Event()  # set by the first confirmation
        self.applied = 0  # announcements applied

    def changed(self, payload: str) -> None:
        try:
            changes: _Item = notify.parse(payload)
        except ValueError:
            log.warning("unreadable change notification; dropping every cached entity")
            changes = _Drop()
        self._put(changes)

    def beat(self, sent: float) -> None:
        self._put(_Beat(sent))

    def missed(self) -> None:
        self._put(_Drop())

    async def settled(self) -> None:
        """Returns once everything delivered so far has been applied."""
        await self._queue.join()

    async def run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._apply(item)
            finally:
                self._queue.task_done()

    async def _apply(self, item: _Item) -> None:
        if isinstance(item, Changes):
            self.dirty |= not await self._read_through.apply(item)
            self.applied += 1
            return
        if isinstance(item, _Drop) or self.dirty:
            # Missed or unapplied announcements: only dropping everything makes up.
            self.dirty = not await self._read_through.drop()
        if isinstance(item, _Beat) and not self.dirty:
            self._read_through.confirm(item.sent)
            self.confirmed.set()

    def _put(self, item: _Item) -> None:
        if self._queue.qsize() >= MAX_BACKLOG:
            log.warning("change notifications pile up; dropping every cached entity instead")
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()
            item = _Drop()
        self._queue.put_nowait(item)


class ChangeListener:
    """Listens for announced writes on a connection of its own and has an Applier
    apply them to `read_through`'s cache.

    `shared`: the cache is Redis, which one process of the fleet keeps coherent;
    otherwise it is this process's memory, which this listener keeps and gates."""

    def __init__(self, url: str, read_through: ReadThrough, *, shared: bool) -> None:
        self._connect_args = connect_args(url)
        self._shared = shared
        self._beats = f"repogate_beat_{os.getpid()}_{secrets.token_hex(4)}"
        self.applier = Applier(read_through)
        self._tasks: list[asyncio.Task[None]] = []
        self._heard = 0.0  # monotonic time the last beat came back on the connection
        self.listening = False
        self.backstop = False  # this process applies announcements to the shared cache

    async def start(self) -> None:
        """Starts listening; waits up to START_WAIT for this process's own gated cache
        to become usable (it serves meanwhile, reading around the cache)."""
        self._tasks = [
            asyncio.create_task(self.applier.run(), name="repogate-changes-apply"),
            asyncio.create_task(self._listen_forever(), name="repogate-changes-listen"),
        ]
        if not self._shared:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_WAIT):
                    await self.applier.confirmed.wait()

    async def stop(self) -> None:
        await cancel(self._tasks)
        self._tasks = []

    async def _listen_forever(self) -> None:
        wait, failing = RETRY_FIRST, False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(**self._connect_args)
                wait, failing = RETRY_FIRST, False
                await self._session(conn)
            except Exception as exc:
                # Logged once per outage; unexpected errors with their traceback.
                if self.listening or not failing:
                    log.warning(
                        "change notifications lost (%s); %s until they are back",
                        type(exc).__name__,
                        "the shared cache has no backstop"
                        if self._shared
                        else "reading around the cache",
                        exc_info=not isinstance(exc, _CONNECTION_ERRORS),
                    )
                failing = True
            finally:
                self.listening = self.backstop = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(random.uniform(wait / 2, wait))
            wait = min(wait * 2, RETRY_MAX)

    async def _session(self, conn: asyncpg.Connection) -> None:
        if self._shared:
            await self._take_backstop(conn)
        await conn.add_listener(notify.CHANNEL, self._on_change)
        await conn.add_listener(self._beats, self._on_beat)
        # Listening now: whatever committed before is read from the database after this.
        self.applier.missed()
        self.listening = True
        log.info(
            "listening for committed writes%s",
            "; applying them to the shared cache" if self._shared else "",
        )
        self._heard = time.monotonic()
        while True:
            sent = time.monotonic()
            if sent - self._heard > DEAD_AFTER:
                raise TimeoutError(f"no heartbeat came back for {DEAD_AFTER:g}s")
            # Simple query protocol: nothing is prepared on the connection.
            await conn.execute(f"NOTIFY {self._beats}, '{sent!r}'", timeout=DEAD_AFTER)
            await asyncio.sleep(BEAT_EVERY)

    async def _take_backstop(self, conn: asyncpg.Connection) -> None:
        """Returns once this process holds the backstop role, which PostgreSQL takes
        from it when `conn` ends."""
        while True:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", BACKSTOP_LOCK_ID):
                self.backstop = True
                return
            await asyncio.sleep(ELECT_EVERY)

    # asyncpg calls these, in the order the notifications arrived.

    def _on_change(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.applier.changed(str(payload))

    def _on_beat(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._heard = time.monotonic()
        self.applier.beat(float(str(payload)))


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
    own connections get them, plus this listener's name and keepalives."""
    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    _, args = parsed.get_dialect()().create_connect_args(parsed)
    for key in _DIALECT_ONLY:
        args.pop(key, None)
    settings = dict(args.pop("server_settings", None) or {})
    settings |= _KEEPALIVES | {"application_name": f"{APPLICATION_NAME}-{os.getpid()}"}
    return {**args, "server_settings": settings, "timeout": DEAD_AFTER}

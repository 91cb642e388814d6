"""Engine construction and the unit of work.

SQLite is set up for concurrent async use: WAL so readers never block the
writer, foreign keys on, a busy timeout, and explicit BEGIN (IMMEDIATE for
writes) so a write transaction takes its lock up front instead of failing
on a lock upgrade halfway through.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from repositories import wal
from repositories.bulkheads import NO_CAP, Bulkheads
from repositories.changes import Changes
from repositories.drivers import connect_arguments
from repositories.errors import Unavailable, translate_db_errors
from repositories.held import IDLE, hold
from repositories.scoped_table import ScopedTable
from repositories.unit_of_work import UnitOfWork

_WRITE = "repogate_write"
_RETURNED = "repogate_returned"
log = logging.getLogger(__name__)
R = TypeVar("R", bound=ScopedTable)


@dataclass(frozen=True)
class EngineOptions:
    pool_size: int = 10
    max_overflow: int = 0
    pool_pre_ping: bool = True
    # Only a connection idle in the pool this many seconds is pinged before use.
    pre_ping_after: float = 1.0
    pool_recycle: int = 3600
    pool_timeout: float = 30.0
    sqlite_busy_timeout_ms: int = 5000
    # PostgreSQL is reached through PgBouncer in transaction pooling mode (see drivers.py).
    pgbouncer: bool = False


# What each engine create_engine made connects with (statement_cache_size=0 behind
# PgBouncer, say), for connections opened beside its pool (Database.probe).
_connect_args: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


# How long a connection of each engine's pool may sit idle before the pool pings it.
_idle_limits: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def create_engine(url: str, options: EngineOptions | None = None) -> AsyncEngine:
    """The engine for `url`; ValueError when its query says what the driver cannot take."""
    options = options or EngineOptions()
    target, connect_args = connect_arguments(url, pgbouncer=options.pgbouncer)
    kwargs: dict[str, Any] = {"pool_recycle": options.pool_recycle, "connect_args": connect_args}
    if ":memory:" not in url and "mode=memory" not in url:
        kwargs |= {
            "pool_size": options.pool_size,
            "max_overflow": options.max_overflow,
            "pool_timeout": options.pool_timeout,
        }
    engine = create_async_engine(target, **kwargs)
    _connect_args[engine.sync_engine] = connect_args
    if options.pool_pre_ping:
        _ping_when_idle(engine, options.pre_ping_after)
        _idle_limits[engine.sync_engine] = options.pre_ping_after
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, options.sqlite_busy_timeout_ms)
    return engine


def _ping_when_idle(engine: AsyncEngine, after: float) -> None:
    """SQLAlchemy's pool_pre_ping, for connections that sat idle `after` seconds or more.

    A connection in steady use has just proven itself, and its ping costs three round
    trips on asyncpg (BEGIN, ping, ROLLBACK); the ones a restart, a firewall or an
    idle timeout killed sat unused. Raising DisconnectionError makes the pool drop the
    connection and hand out another, as pool_pre_ping does.
    """
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED)  # None: connected just now
        if returned is None or time.monotonic() - returned < after:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("pooled connection failed its ping") from exc


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver; the begin hook below issues BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            f"busy_timeout={busy_timeout_ms}",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """The engine plus the factory for units of work, and the tenants' bulkheads, which
    every connection opened for a tenant's work passes (units of work and transactions)."""

    def __init__(self, engine: AsyncEngine, bulkheads: Bulkheads | None = None) -> None:
        self.engine = engine
        self.bulkheads = bulkheads or NO_CAP
        self._prober: AsyncEngine | None = None  # see probe()
        # The same pool, with options set on the engine: a connection checked out from
        # it needs no execution_options() round through SQLAlchemy's greenlet, about
        # 20 µs a call. `writes`: for connections that will write (BEGIN IMMEDIATE on
        # SQLite). On PostgreSQL, reads and units of one write run in autocommit: no
        # BEGIN/COMMIT round trips. Behind PgBouncer too: each statement then goes as one
        # Parse/Bind/Execute/Sync group, which PgBouncer keeps on one server connection.
        self.writes = engine.execution_options(**{_WRITE: True})
        self._autocommit = engine.dialect.name == "postgresql"
        # Autocommit connections handed from one unit to the next (repositories/held.py),
        # never left idle long enough to need the pool's ping.
        limit = _idle_limits.get(engine.sync_engine)
        idle = IDLE if limit is None else min(IDLE, limit)
        self.held = hold(engine, idle) if self._autocommit else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def unit_of_work(
        self,
        tenant: str,
        *,
        actor: str | None = None,
        read_only: bool = False,
        one_write: bool = False,
        positioned: bool = False,
    ) -> UnitOfWork:
        """A transaction for `tenant`; `actor` is recorded in created_by/updated_by.

        `read_only` units run no writes; `one_write` units at most one write. Either
        runs in autocommit on PostgreSQL: one statement is atomic on its own, and the
        BEGIN and COMMIT round trips are saved. A `positioned` unit (PostgreSQL) reads
        the WAL position once it commits (UnitOfWork.position)."""
        writes = 0 if read_only else 1 if one_write else None
        autocommit = writes is not None and self._autocommit
        engine = self.engine if read_only or autocommit else self.writes
        return UnitOfWork(
            engine,
            tenant,
            actor=actor,
            writes=writes,
            held=self.held if autocommit else None,
            bulkheads=self.bulkheads,
            positioned=positioned,
        )

    async def position(self, sql: str) -> int | None:
        """A WAL position (repositories/wal.py) read on a connection of the pool."""
        with translate_db_errors():
            async with self.engine.connect() as conn:
                return await wal.read(conn, sql)

    async def ping(self) -> None:
        """One round trip to the database; Unavailable when it does not answer."""
        with translate_db_errors():
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")

    def prober(self) -> AsyncEngine:
        """The engine probes connect with: no pool, and the pool's connect arguments (no
        named statements behind PgBouncer, say)."""
        if self._prober is None:
            self._prober = create_async_engine(
                self.engine.url,
                poolclass=NullPool,
                connect_args=_connect_args.get(self.engine.sync_engine, {}),
            )
        return self._prober

    async def probe(self, within: float) -> None:
        """SELECT 1 on a connection of its own, outside the pool (whose connections may all
        be taken, or stuck on a database that answers nothing): Unavailable when it fails,
        or gets no answer within `within` seconds."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(within):
                with translate_db_errors():
                    async with self.prober().connect() as conn:
                        await conn.exec_driver_sql("SELECT 1")
        except TimeoutError:
            log.warning("database probe: no answer within %gs", within)
            raise Unavailable(f"the database did not answer within {within:g}s") from None
        log.debug("database probe answered in %.1f ms", (time.monotonic() - started) * 1000)

    async def dispose(self) -> None:
        if self.held is not None:
            await self.held.close()
        await self.engine.dispose()
        if self._prober is not None:
            await self._prober.dispose()


class RepositorySource(Protocol):
    """What work running in a transaction is handed: repositories for the call's tenant,
    and what they changed."""

    def repository(self, cls: type[R]) -> R: ...

    @property
    def changes(self) -> Changes: ...

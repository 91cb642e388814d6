"""The unit of work: one transaction for one tenant's work, and the repositories in it."""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from repositories import prepared, wal
from repositories.bulkheads import NO_CAP, Bulkheads, Slot
from repositories.changes import Changes
from repositories.errors import translate_db_errors
from repositories.held import HeldConnections, connect
from repositories.scoped_table import ScopedTable, Writes

log = logging.getLogger(__name__)
R = TypeVar("R", bound=ScopedTable)


class Repositories:
    """Repositories on one connection for one tenant, built once each.

    The tenant enters here, never as a per-call argument. A short unit of work
    and a call inside a long transaction both hand one of these to their work.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        tenant: str,
        *,
        actor: str | None = None,
        writes: int | None = None,
    ) -> None:
        self._conn = conn
        self._tenant = tenant
        self._actor = actor
        # How many writes the unit may run (see Writes); None: any.
        self._writes = Writes(writes)
        self._built: dict[type[ScopedTable], ScopedTable] = {}
        self.changes = Changes()

    def repository(self, cls: type[R]) -> R:
        repo = self._built.get(cls)
        if repo is None:
            repo = self._built[cls] = cls(
                self._conn,
                self._tenant,
                actor=self._actor,
                writes=self._writes,
                changes=self.changes,
                source=self.repository,
            )
        assert isinstance(repo, cls)
        return repo

    @property
    def failed(self) -> bool:
        """Whether a statement failed: on PostgreSQL the transaction can no longer commit."""
        return any(repo.failed for repo in self._built.values())


class UnitOfWork:
    """One transaction: rolls back on exit unless `commit()` was called.

    Repositories are built here, with the tenant; callers never pass it per call.
    `writes` limits the writes it may run (see Writes). Units limited to none or one
    run in autocommit on PostgreSQL: each statement commits as it runs (a lone write
    is as atomic as in a transaction), and two reads may see different snapshots. Such
    a unit is given `held`: its connection may come from the unit before it and go on
    to the next (repositories/held.py).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        tenant: str,
        *,
        actor: str | None = None,
        writes: int | None = None,
        held: HeldConnections | None = None,
        bulkheads: Bulkheads | None = None,
        positioned: bool = False,
    ) -> None:
        self._engine = engine
        self._positioned = positioned
        # Where the WAL was once this unit committed, when `positioned`: past its commit.
        self.position: int | None = None
        self._bulkheads = bulkheads or NO_CAP
        self._slot: Slot | None = None
        self._tenant = tenant
        self._actor = actor
        self._writes = writes
        self._held = held
        self._autocommit = held is not None
        # When the connection left the pool (a held one may have served other units).
        self._since = 0.0
        self._commit_sent = False
        self._recorded = Changes()
        self._conn: AsyncConnection | None = None
        self._repositories: Repositories | None = None

    async def __aenter__(self) -> UnitOfWork:
        # The tenant's slot first: a tenant at its cap never queues for the pool.
        slot = await self._bulkheads.take(self._tenant)
        held = self._held
        try:
            found = None if held is None else await held.take()
            if found is None:
                with translate_db_errors():
                    conn = await connect(self._engine)
        except BaseException:
            slot.release()
            raise
        if found is not None:
            conn, self._since = found
        elif held is not None:
            # Set on the driver's connection, and unset before it goes back to the pool:
            # SQLAlchemy's isolation_level option sets and resets it through its own
            # machinery at every checkout, about 30 µs.
            prepared.connections(conn)[1].autocommit = True
            self._since = time.monotonic()
        self._slot = slot
        self._conn = conn
        self._repositories = Repositories(
            conn, self._tenant, actor=self._actor, writes=self._writes
        )
        self._recorded = self._repositories.changes
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn, self._repositories = self._conn, None, None
        slot, self._slot = self._slot, None
        if conn is None or slot is None:
            return
        try:
            # In autocommit each statement committed as it ran: nothing to roll back.
            if not self._autocommit and conn.in_transaction():
                await conn.rollback()
        except Exception:
            # A dead connection cannot roll back; the pool discards it. Do not hide
            # the error that brought us here behind this one.
            log.warning("rollback failed", exc_info=True)
        finally:
            try:
                if self._held is not None:
                    await self._held.give_back(conn, self._since)
                else:
                    await conn.close()
            finally:
                slot.release()

    def repository(self, cls: type[R]) -> R:
        return self._inside().repository(cls)

    @property
    def changes(self) -> Changes:
        """What this unit changed so far: for caches to forget once it commits."""
        return self._inside().changes

    def _inside(self) -> Repositories:
        if self._repositories is None:
            raise RuntimeError("unit of work used outside its `async with` block")
        return self._repositories

    async def commit(self) -> None:
        if self._conn is None or self._repositories is None:
            raise RuntimeError("unit of work used outside its `async with` block")
        if self._repositories.failed:
            raise RuntimeError("a statement in this unit of work failed; it cannot commit")
        self._commit_sent = True
        if not self._autocommit:  # in autocommit each statement committed as it ran
            with translate_db_errors():
                await self._conn.commit()
        if self._positioned:
            try:
                self.position = await self.wal_position(wal.INSERTED)
            except Exception:
                # Committed all the same: the write is answered, without a token.
                log.warning("reading the WAL position after a commit failed", exc_info=True)

    async def wal_position(self, sql: str) -> int | None:
        """A WAL position (repositories/wal.py) read on this unit's connection."""
        if self._conn is None:
            raise RuntimeError("unit of work used outside its `async with` block")
        with translate_db_errors():
            return await wal.read(self._conn, sql)

    def written(self) -> Changes:
        """What this unit may have made durable, for caches to forget, during or after it,
        whether or not it then failed: all it recorded once it sent COMMIT (which may have
        landed though no answer came) or, in autocommit, as its statements ran."""
        return self._recorded if self._autocommit or self._commit_sent else Changes()

"""Transactions that span calls: each holds one connection between calls.

Calls on one transaction take its lock, so they run one at a time on its
connection, and each runs in a savepoint, so a failed call undoes only
itself. A serialization failure or deadlock, a lost connection or a call
cancelled mid-statement ends the whole transaction: what it did is lost or
unknowable, and only a retry of all of it is safe (AIP-194).

A transaction belongs to the tenant that began it and to this process, which
its id names with the address peers reach it at (transaction_ids.py). One whose
id left the process records its commit (outcomes.py), unless a peer that could
not hand it a call recorded its abort first.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import StaticPool

from repositories import prepared, wal
from repositories.bulkheads import Slot
from repositories.changes import Changes
from repositories.database import Database
from repositories.errors import (
    FailedPrecondition,
    ReadOnlyTransaction,
    SerializationFailure,
    TooManyTransactions,
    TransactionAborted,
    TransactionNotFound,
    Unavailable,
    translate_db_errors,
)
from repositories.held import connect
from repositories.outcomes import expiry, record_commit
from repositories.transaction_ids import TransactionIds
from repositories.unit_of_work import Repositories

log = logging.getLogger(__name__)

# How many ended transactions are remembered, to tell their owner how they ended.
_REMEMBERED = 10_000
# The savepoint each call runs in (a name taken again shadows the last one's).
_SAVEPOINT = "repogate_call"
# How long shutdown waits for a call still holding a transaction.
_CLOSE_WAIT = 5.0


class Isolation(enum.Enum):
    READ_COMMITTED = "READ COMMITTED"
    REPEATABLE_READ = "REPEATABLE READ"
    SERIALIZABLE = "SERIALIZABLE"


class Outcome(enum.Enum):
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"
    EXPIRED = "EXPIRED"
    ABORTED = "ABORTED"
    # The connection was lost, or the call cancelled, during COMMIT: it may have committed.
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Limits:
    """Server-wide bounds: open transactions, and how long one may live."""

    max_open: int = 10
    idle_timeout: float = 30.0
    max_lifetime: float = 600.0


@dataclass(frozen=True)
class Stats:
    """For admin and metrics: what is open now, and what happened since start."""

    open: int
    oldest_age: float  # seconds; 0 when none is open
    outcomes: dict[str, int]  # begun, and each Outcome's name -> count


# Told what a transaction changed, once it has committed (caches forget it).
OnCommit = Callable[[Changes], Awaitable[None]]


async def tell(on_commit: OnCommit | None, changes: Changes) -> None:
    """Tells `on_commit` of `changes` that committed, or may have. Shielded: a deadline
    passing now must not leave caches half told."""
    if on_commit is not None and changes:
        await asyncio.shield(on_commit(changes))


@dataclass(eq=False)
class Transaction:
    id: str
    tenant: str
    read_only: bool
    isolation: Isolation
    idle_timeout: float
    conn: AsyncConnection
    # Its tenant's bulkhead slot, held as long as it holds its connection.
    slot: Slot
    began: float  # time.monotonic()
    lifetime_end: float
    last_active: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: bool = False
    # Whether its id left this process (not a Transact's): its commit is then recorded.
    shared: bool = True
    # What its calls changed; a call that failed adds nothing.
    changes: Changes = field(default_factory=Changes)
    # Whether a call's savepoint is held (the next call releases it).
    savepoint: bool = False

    def expires_at(self) -> float:
        """Monotonic time it will be rolled back at, if no call comes before."""
        return min(self.last_active + self.idle_timeout, self.lifetime_end)

    def expired(self, now: float) -> bool:
        # A running call is not idleness; the lifetime holds regardless.
        return now >= self.lifetime_end or (not self.busy and now >= self.expires_at())

    def wall_time(self, monotonic: float) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=monotonic - time.monotonic())


class TransactionRegistry:
    """The open transactions of this process."""

    def __init__(
        self,
        db: Database,
        limits: Limits,
        *,
        ids: TransactionIds | None = None,
        on_commit: OnCommit | None = None,
        on_position: Callable[[int], None] | None = None,
    ) -> None:
        """`on_position` is told the WAL position past each commit (read replicas'
        consistency tokens); unset, none is read."""
        self._db = db
        self._limits = limits
        self._on_commit = on_commit
        self._on_position = on_position
        self.ids = ids or TransactionIds(secrets.token_urlsafe(32))
        self._open: dict[str, Transaction] = {}
        self._opening = 0
        self._ended: OrderedDict[str, tuple[str, Outcome]] = OrderedDict()
        self._counts: Counter[str] = Counter()

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def owner(self) -> str:
        return self.ids.tag

    def default_isolation(self) -> Isolation:
        # SQLite serialises writers and reads from a snapshot: always SERIALIZABLE.
        if self._db.dialect == "sqlite":
            return Isolation.SERIALIZABLE
        return Isolation.READ_COMMITTED

    def effective_isolation(self, wanted: Isolation | None) -> Isolation:
        """What the database gives for `wanted`: on SQLite, always SERIALIZABLE (a
        stronger level than asked is allowed by the SQL standard)."""
        if wanted is None or self._db.dialect == "sqlite":
            return self.default_isolation()
        return wanted

    async def begin(
        self,
        tenant: str,
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
        idle_timeout: float | None = None,
        shared: bool = True,
    ) -> Transaction:
        """`shared`: the id will be handed out (not a Transact's own)."""
        if isinstance(self._db.engine.pool, StaticPool):
            raise FailedPrecondition(
                "an in-memory SQLite database has one connection; it cannot hold "
                "transactions across calls"
            )
        await self.reap()
        if len(self._open) + self._opening >= self._limits.max_open:
            raise TooManyTransactions(self._limits.max_open)
        isolation = self.effective_isolation(isolation)
        self._opening += 1
        try:
            slot = await self._db.bulkheads.take(tenant)
            try:
                conn = await self._connect(read_only, isolation)
            except BaseException:
                slot.release()
                raise
        finally:
            self._opening -= 1
        now = time.monotonic()
        tx = Transaction(
            id=self.ids.mint(tenant),
            tenant=tenant,
            read_only=read_only,
            isolation=isolation,
            idle_timeout=idle_timeout or self._limits.idle_timeout,
            conn=conn,
            slot=slot,
            began=now,
            lifetime_end=now + self._limits.max_lifetime,
            last_active=now,
            shared=shared,
        )
        self._open[tx.id] = tx
        self._counts["BEGUN"] += 1
        return tx

    async def _connect(self, read_only: bool, isolation: Isolation) -> AsyncConnection:
        # On SQLite a writing transaction's BEGIN is IMMEDIATE: the write lock now, not a
        # failed upgrade later.
        engine = self._db.engine if read_only else self._db.writes
        with translate_db_errors():
            conn = await connect(engine)
        try:
            with translate_db_errors():
                if self._db.dialect == "postgresql":
                    await conn.execution_options(
                        isolation_level=isolation.value, postgresql_readonly=read_only
                    )
                await conn.begin()
        except BaseException:
            await asyncio.shield(_discard(conn))
            raise
        return conn

    @contextlib.asynccontextmanager
    async def call(
        self, id_: str, tenant: str, *, actor: str | None, write: bool
    ) -> AsyncIterator[Repositories]:
        """One call's work inside transaction `id_`, in a savepoint of its own.

        Waits for the transaction's earlier calls; `write` calls need a read-write
        transaction.
        """
        tx = self._live(id_, tenant)
        if write and tx.read_only:
            raise ReadOnlyTransaction(id_)
        async with tx.lock:
            tx = self._live(id_, tenant)  # it may have ended while this call waited
            tx.busy = True
            try:
                async with self._savepoint(tx, actor, write) as repositories:
                    yield repositories
            finally:
                tx.busy = False
                tx.last_active = time.monotonic()

    @contextlib.asynccontextmanager
    async def _savepoint(
        self, tx: Transaction, actor: str | None, write: bool
    ) -> AsyncIterator[Repositories]:
        repositories = Repositories(tx.conn, tx.tenant, actor=actor, writes=None if write else 0)
        # False while the transaction's state is unknown: a call cancelled
        # mid-statement, or a savepoint that could not be undone.
        known = False
        try:
            # The last call's savepoint is released in the same round trip as this
            # call's is taken (COMMIT releases the last one): one round trip a call.
            opening = f"RELEASE SAVEPOINT {_SAVEPOINT}; " if tx.savepoint else ""
            with translate_db_errors():
                await self._script(tx, f"{opening}SAVEPOINT {_SAVEPOINT}")
            tx.savepoint = True
            try:
                yield repositories
            except Exception as exc:
                if not isinstance(exc, (SerializationFailure, Unavailable)):
                    # The call failed on its own: undo it and keep the transaction.
                    with translate_db_errors():
                        await self._script(tx, f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                    known = True
                raise
            if repositories.failed:
                raise RuntimeError("a statement of this call failed; its work cannot be kept")
            tx.changes.extend(repositories.changes)
        except SerializationFailure as exc:
            await self._end(tx, Outcome.ABORTED)
            raise TransactionAborted(tx.id, "it conflicted with a concurrent transaction") from exc
        except Unavailable as exc:
            await self._end(tx, Outcome.ABORTED, discard=True)
            raise TransactionAborted(tx.id, "its database connection was lost") from exc
        except BaseException:
            if not known:
                await asyncio.shield(self._end(tx, Outcome.ABORTED, discard=True))
            raise

    @staticmethod
    async def _script(tx: Transaction, sql: str) -> None:
        lean = prepared.statements(tx.conn.dialect)
        assert lean is not None, "both databases' drivers run scripts (prepared.py)"
        await prepared.script(lean, tx.conn, sql)

    async def commit(self, id_: str, tenant: str) -> datetime:
        """Commits, then tells `on_commit` what the transaction changed."""
        tx = self._live(id_, tenant)
        async with tx.lock:
            tx = self._live(id_, tenant)
            if tx.shared and not tx.read_only:
                await self._record_commit(tx)
            try:
                with translate_db_errors():
                    await tx.conn.commit()
            except SerializationFailure as exc:
                await self._end(tx, Outcome.ABORTED)
                raise TransactionAborted(tx.id, "it conflicted at commit") from exc
            except BaseException:
                await asyncio.shield(self._end(tx, Outcome.UNKNOWN, discard=True))
                # It may have committed: caches forget what it changed, as after a commit.
                await tell(self._on_commit, tx.changes)
                raise
            await self._positioned(tx)
            await self._end(tx, Outcome.COMMITTED)
        committed = datetime.now(UTC)
        await tell(self._on_commit, tx.changes)
        return committed

    async def _positioned(self, tx: Transaction) -> None:
        """Tells `on_position` where the WAL is past the commit, read on its connection;
        a failure is logged: the commit stands, answered without a token."""
        if self._on_position is None or tx.read_only:
            return
        try:
            position = await wal.read(tx.conn, wal.INSERTED)
        except Exception:
            log.warning("reading the WAL position after a commit failed", exc_info=True)
            return
        if position is not None:
            self._on_position(position)

    async def _record_commit(self, tx: Transaction) -> None:
        """Writes its COMMITTED row in it; any failure ends it (a peer's row came first)."""
        try:
            await record_commit(tx.conn, tx.id, tx.tenant, expiry(self._limits.max_lifetime))
        except BaseException as exc:
            known = isinstance(exc, TransactionAborted)
            await asyncio.shield(self._end(tx, Outcome.ABORTED, discard=not known))
            raise

    async def rollback(self, id_: str, tenant: str) -> None:
        """Rolls back; an unknown, ended or other tenant's transaction is left alone."""
        tx = self._open.get(id_)
        if tx is None or tx.tenant != tenant:
            return
        async with tx.lock:
            if self._open.get(id_) is tx:
                await self._end(tx, Outcome.ROLLED_BACK)

    async def reap(self) -> int:
        """Rolls back every expired transaction that no call holds; returns how many."""
        now = time.monotonic()
        due = [tx for tx in self._open.values() if tx.expired(now) and not tx.lock.locked()]
        for tx in due:
            async with tx.lock:
                if self._open.get(tx.id) is tx:
                    # Shielded: a reaper stopped halfway must not strand the connection.
                    await asyncio.shield(self._end(tx, Outcome.EXPIRED))
        return len(due)

    async def reap_forever(self, most: float = 0.1) -> None:
        """Reaps as transactions come due, at least every `most` seconds: often enough
        that one begun or left idle after the reaper went to sleep gives back its
        connection, and its tenant's slot, well within the tenant's queue timeout."""
        while True:
            now = time.monotonic()
            # A transaction with a call running cannot idle out; only its lifetime can end it.
            soonest = min(
                (tx.lifetime_end if tx.busy else tx.expires_at() for tx in self._open.values()),
                default=now + most,
            )
            await asyncio.sleep(min(most, max(0.01, soonest - now)))
            try:
                await self.reap()
            except Exception:
                log.warning("reaping transactions failed", exc_info=True)

    async def close(self) -> None:
        """Rolls back every open transaction (server shutdown)."""
        for tx in list(self._open.values()):
            try:
                await asyncio.wait_for(tx.lock.acquire(), _CLOSE_WAIT)
            except TimeoutError:
                await self._end(tx, Outcome.ROLLED_BACK, discard=True)
                continue
            try:
                await self._end(tx, Outcome.ROLLED_BACK)
            finally:
                tx.lock.release()

    def stats(self) -> Stats:
        now = time.monotonic()
        oldest = min((tx.began for tx in self._open.values()), default=now)
        return Stats(len(self._open), now - oldest, dict(self._counts))

    def _live(self, id_: str, tenant: str) -> Transaction:
        tx = self._open.get(id_)
        if tx is not None and tx.tenant == tenant and not tx.expired(time.monotonic()):
            return tx
        ended = self._ended.get(id_)
        if ended is not None and ended[0] == tenant:
            # Only the owner learns how it ended (a retried Commit wants to know).
            raise TransactionNotFound(id_, f"it has ended ({ended[1].value})", state=ended[1].value)
        if tx is not None and tx.tenant == tenant:
            raise TransactionNotFound(id_, f"it has ended ({Outcome.EXPIRED.value})")
        raise TransactionNotFound(id_)

    async def _end(self, tx: Transaction, outcome: Outcome, *, discard: bool = False) -> None:
        """Ends `tx` (committed already, or to roll back) and returns its connection.

        `discard`: the connection's state is unknown; close it instead of reusing it.
        """
        if self._open.pop(tx.id, None) is None:
            return
        self._counts[outcome.name] += 1
        self._ended[tx.id] = (tx.tenant, outcome)
        while len(self._ended) > _REMEMBERED:
            self._ended.popitem(last=False)
        try:
            if discard:
                await _discard(tx.conn)
                return
            try:
                if tx.conn.in_transaction():
                    await tx.conn.rollback()
                await tx.conn.close()
            except Exception:
                log.warning("ending transaction %s failed; discarding its connection", tx.id)
                await _discard(tx.conn)
        finally:
            tx.slot.release()  # its connection is back in the pool, or gone


async def _discard(conn: AsyncConnection) -> None:
    """Drops a connection whose state is unknown, so the pool never hands it out again."""
    try:
        await conn.invalidate()
        await conn.close()
    except Exception:
        log.warning("discarding a connection failed", exc_info=True)

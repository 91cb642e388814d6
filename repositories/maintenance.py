"""Purging what has outlived its retention: soft-deleted rows past their
purge_time, request ids past their expire_time, and the
outcomes of transactions past theirs.

This is the one place that writes across tenants, on purpose: it acts on no
tenant's behalf and only removes rows whose own timestamps say they are due.

On PostgreSQL one purge runs at a time across every process sharing the
database: a run first takes a transaction-level advisory lock on a connection
of its own, holds that transaction open while its chunks commit on another,
and ends it (releasing the lock) when done. A process that finds the lock
taken skips the run. The lock belongs to a transaction, not a session, so it
also holds behind PgBouncer in transaction mode; a process that dies
mid-run loses its connection, and the database ends the transaction and the
lock with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    ColumnElement,
    MetaData,
    Table,
    and_,
    delete,
    exists,
    select,
    text,
    tuple_,
)

from repositories.database import Database
from repositories.errors import translate_db_errors
from repositories.tables import metadata, request_ids, transaction_outcomes

log = logging.getLogger(__name__)

# Rows removed per statement: short transactions, short locks.
CHUNK = 1000
# Any fixed 64-bit number, the same for every process; not the migration's.
PURGE_LOCK_ID = 0x7265706F70757267  # "repopurg"


def due(declared: MetaData | None = None) -> tuple[tuple[Table, str], ...]:
    """Each table with the column that says when its rows are due: every entity table
    (they all have purge_time), the schema's (`declared`) first, children before the
    tables they refer to (so a parent whose children go in this run goes in it too),
    and the request ids."""
    schemas = [m for m in (declared, metadata) if m is not None]
    return (
        *(
            (table, "purge_time")
            for each in schemas
            for table in reversed(each.sorted_tables)
            if "purge_time" in table.c
        ),
        (request_ids, "expire_time"),
        (transaction_outcomes, "expire_time"),
    )


DUE = due()


def _still_needed(table: Table) -> Iterator[ColumnElement[bool]]:
    """Rows of `table` that a RESTRICT foreign key still needs (a user with sessions):
    the purge leaves them until those rows are gone. CASCADE children go with them."""
    for child in table.metadata.sorted_tables:
        for key in child.foreign_key_constraints:
            if key.referred_table is table and (key.ondelete or "").upper() != "CASCADE":
                pairs = zip(key.columns, key.elements, strict=True)
                yield exists().where(and_(*(column == ref.column for column, ref in pairs)))


async def purge_due(
    db: Database, now: datetime | None = None, declared: MetaData | None = None
) -> dict[str, int] | None:
    """Deletes every due row, of the schema's tables (`declared`) too; returns how many
    per table, or None when another process is purging the same PostgreSQL database
    (this run is skipped)."""
    now = now or datetime.now(UTC)
    async with _only_purge(db) as alone:
        if not alone:
            log.debug("another process is purging this database; skipping this run")
            return None
        purged = {}
        for table, column in DUE if declared is None else due(declared):
            purged[table.name] = await _purge(db, table, table.c[column], now)
    if any(purged.values()):
        log.info("purged %s", purged)
    return purged


@contextlib.asynccontextmanager
async def _only_purge(db: Database) -> AsyncIterator[bool]:
    """Whether this run holds the purge lock (always, on SQLite: one file, one host)."""
    if db.dialect != "postgresql":
        yield True
        return
    with translate_db_errors():
        conn = await db.engine.connect()
    try:
        with translate_db_errors():
            taken = await conn.scalar(
                text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": PURGE_LOCK_ID}
            )
        yield bool(taken)
    finally:
        # Rolling back ends the transaction, and the lock with it.
        await asyncio.shield(conn.close())


async def _purge(db: Database, table: Table, due: Column[datetime], now: datetime) -> int:
    keys = tuple_(table.c.tenant_id, table.c.id)
    kept = [~needed for needed in _still_needed(table)]
    batch = select(table.c.tenant_id, table.c.id).where(due <= now, *kept).limit(CHUNK)
    total = 0
    while True:
        with translate_db_errors():
            async with db.writes.connect() as conn:
                result = await conn.execute(delete(table).where(keys.in_(batch)))
                await conn.commit()
        total += result.rowcount
        if result.rowcount < CHUNK:
            return total

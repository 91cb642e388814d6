"""Purging what has outlived its retention: soft-deleted rows past their
purge_time, request ids past their expire_time, and the
outcomes of transactions past theirs.

This is the one place that writes across tenants, on purpose: it acts on no
tenant's behalf and only removes rows whose own timestamps say they are due.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Column, ColumnElement, Table, and_, delete, exists, select, tuple_

from repositories.database import Database
from repositories.errors import translate_db_errors
from repositories.tables import metadata, request_ids, transaction_outcomes

log = logging.getLogger(__name__)

# Rows removed per statement: short transactions, short locks.
CHUNK = 1000
# Each table with the column that says when its rows are due: every entity
# table (they all have purge_time), children before the tables they refer to
# (so a parent whose children go in this run goes in it too), and the request ids.
DUE: tuple[tuple[Table, str], ...] = (
    *(
        (table, "purge_time")
        for table in reversed(metadata.sorted_tables)
        if "purge_time" in table.c
    ),
    (request_ids, "expire_time"),
    (transaction_outcomes, "expire_time"),
)


def _still_needed(table: Table) -> Iterator[ColumnElement[bool]]:
    """Rows of `table` that a RESTRICT foreign key still needs (a user with sessions):
    the purge leaves them until those rows are gone. CASCADE children go with them."""
    for child in metadata.sorted_tables:
        for key in child.foreign_key_constraints:
            if key.referred_table is table and (key.ondelete or "").upper() != "CASCADE":
                pairs = zip(key.columns, key.elements, strict=True)
                yield exists().where(and_(*(column == ref.column for column, ref in pairs)))


async def purge_due(db: Database, now: datetime | None = None) -> dict[str, int]:
    """Deletes every due row; returns how many per table."""
    now = now or datetime.now(UTC)
    purged = {}
    for table, column in DUE:
        purged[table.name] = await _purge(db, table, table.c[column], now)
    if any(purged.values()):
        log.info("purged %s", purged)
    return purged


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

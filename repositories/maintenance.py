"""Purging what has outlived its retention: soft-deleted rows past their
purge_time and request ids past their expire_time.

This is the one place that writes across tenants, on purpose: it acts on no
tenant's behalf and only removes rows whose own timestamps say they are due.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Column, Table, delete, select, tuple_

from repositories.database import Database
from repositories.errors import translate_db_errors
from repositories.tables import metadata, request_ids

log = logging.getLogger(__name__)

# Rows removed per statement: short transactions, short locks.
CHUNK = 1000
# Each table with the column that says when its rows are due: every entity
# table (they all have purge_time), and the request ids.
DUE: tuple[tuple[Table, str], ...] = (
    *((table, "purge_time") for table in metadata.sorted_tables if "purge_time" in table.c),
    (request_ids, "expire_time"),
)


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
    batch = select(table.c.tenant_id, table.c.id).where(due <= now).limit(CHUNK)
    total = 0
    while True:
        with translate_db_errors():
            async with db.engine.connect() as conn:
                await conn.execution_options(**db.write_options)
                result = await conn.execute(delete(table).where(keys.in_(batch)))
                await conn.commit()
        total += result.rowcount
        if result.rowcount < CHUNK:
            return total

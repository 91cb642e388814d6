"""Positions in PostgreSQL's write-ahead log, as integers (bytes since 0/0).

What read replicas and consistency tokens compare (server/replicas.py,
server/consistency.py): where the primary has inserted WAL up to, and where a
standby has replayed it up to.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from repositories import prepared

# The primary's insert position, not pg_current_wal_lsn() (the write position): under
# synchronous_commit=off a commit's record may be inserted but not yet written, and
# the insert position is past the end of every record inserted, so past every commit
# acknowledged before it was read. At the start of a WAL page it points past the page's
# header (24 bytes; 40 on a segment's first page), where a standby's replay position,
# the end of the last record, stops short of it: taken off, or an idle primary's
# standby would never be seen caught up.
INSERTED = """
SELECT at - CASE
    WHEN at % pg_size_bytes(current_setting('wal_segment_size')) = 40 THEN 40
    WHEN at % current_setting('wal_block_size')::bigint = 24 THEN 24
    ELSE 0 END
FROM (SELECT pg_current_wal_insert_lsn() - '0/0' AS at) AS inserted
"""
# A standby's replay position; NULL on a server that is not a standby (in recovery).
REPLAYED = "SELECT pg_last_wal_replay_lsn() - '0/0'"


async def read(conn: AsyncConnection, sql: str) -> int | None:
    """The position `sql` (INSERTED or REPLAYED) answers, run on the driver outside any
    transaction: one round trip, where SQLAlchemy would begin one after a commit (BEGIN,
    SELECT, then ROLLBACK at check-in). Errors are raised as SQLAlchemy raises them, for
    translate_db_errors."""
    lean = prepared.statements(conn.dialect)
    assert lean is not None, "WAL positions are PostgreSQL's"
    assert not lean.sqlite, "WAL positions are PostgreSQL's"
    _, adapted = prepared.connections(conn)
    try:
        async with adapted._execute_mutex:
            value = await adapted._connection.fetchval(sql)
    except Exception as error:
        raise await prepared.failed(lean, conn, error, sql) from error
    return None if value is None else int(value)

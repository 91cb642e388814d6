"""How transactions across calls ended, where every process of a fleet can read it.

The owner of a read-write transaction writes its COMMITTED row inside the
transaction, just before COMMIT: the row exists exactly when the commit does.
A peer that could not hand a call to the owner writes an ABORTED row first, in
a short transaction of its own: the owner's row can then no longer be written,
and its Commit fails. The primary key decides the race either way, since an
insert waits for a concurrent uncommitted insert of the same key.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from repositories import prepared
from repositories.database import Database
from repositories.errors import (
    AlreadyExists,
    SerializationFailure,
    TransactionAborted,
    translate_db_errors,
)
from repositories.tables import transaction_outcomes

COMMITTED = "COMMITTED"
ABORTED = "ABORTED"
# Built once, values bound per call: SQLAlchemy compiles each only the first time.
_RECORD = insert(transaction_outcomes)
_READ = select(transaction_outcomes.c.outcome).where(
    transaction_outcomes.c.id == bindparam("outcome_id")
)
_IF_ABSENT = {
    "postgresql": postgresql.insert(transaction_outcomes).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(transaction_outcomes).on_conflict_do_nothing(),
}


def expiry(max_lifetime: float) -> datetime:
    """When an outcome recorded now may be purged: once every transaction open now has
    ended, with as long again for peers that allow a longer lifetime."""
    return datetime.now(UTC) + timedelta(seconds=2 * max_lifetime)


async def record_commit(
    conn: AsyncConnection, id_: str, tenant: str, expire_time: datetime
) -> None:
    """Inside transaction `id_`, before its COMMIT: TransactionAborted when a peer has
    recorded that a call of it failed to reach this process."""
    row = {"id": id_, "tenant_id": tenant, "outcome": COMMITTED, "expire_time": expire_time}
    try:
        with translate_db_errors():
            await prepared.execute(conn, _RECORD, row)
    except AlreadyExists as exc:
        raise TransactionAborted(id_, "a call of it failed to reach its owner") from exc
    except SerializationFailure as exc:
        # A snapshot transaction may be told of the peer's row so instead.
        raise TransactionAborted(id_, "it conflicted at commit") from exc


async def poison(db: Database, id_: str, tenant: str, expire_time: datetime) -> str:
    """Keeps transaction `id_` from committing, unless it has committed already;
    returns what is recorded now: ABORTED, or COMMITTED."""
    row = {"id": id_, "tenant_id": tenant, "outcome": ABORTED, "expire_time": expire_time}
    with translate_db_errors():
        async with db.writes.connect() as conn:
            if db.dialect == "postgresql":
                # Each statement its own snapshot: the select sees the row the insert
                # waited for, whatever the database's default isolation.
                await conn.execution_options(isolation_level="READ COMMITTED")
            await conn.execute(_IF_ABSENT[db.dialect], row)
            outcome = await conn.scalar(_READ, {"outcome_id": id_})
            await conn.commit()
    return str(outcome)

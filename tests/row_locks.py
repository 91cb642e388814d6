"""A user's row held FOR UPDATE by a connection of the test's own, to hold a server's
write on it for as long as a test needs, and to see when that write waits."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from tests.conftest import _plain_dsn


@dataclass
class RowLock:
    conn: asyncpg.Connection
    transaction: asyncpg.transaction.Transaction
    tenant: str
    user_id: uuid.UUID

    async def blocked(self) -> int:
        """Backends this lock blocks (a server's statement waiting on the row)."""
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
        )

    async def release(self) -> None:
        await self.transaction.rollback()

    async def display_name(self) -> str:
        """The row's display_name as committed (after `release`)."""
        return str(
            await self.conn.fetchval(
                "SELECT display_name FROM users WHERE tenant_id = $1 AND id = $2",
                self.tenant,
                self.user_id,
            )
        )


@contextlib.asynccontextmanager
async def user_locked(database_url: str, tenant: str, user_id: str) -> AsyncIterator[RowLock]:
    conn = await asyncpg.connect(_plain_dsn(database_url))
    try:
        transaction = conn.transaction()
        await transaction.start()
        key = uuid.UUID(user_id)
        await conn.execute(
            "SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2 FOR UPDATE", tenant, key
        )
        yield RowLock(conn, transaction, tenant, key)
    finally:
        await conn.close()

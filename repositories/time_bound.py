"""Statements stopped at a deadline, on both databases: the cost bound of aggregates.

PostgreSQL: the statement's task is cancelled, and asyncpg sends the server a cancel
request for it. SQLite: a cancelled task would leave the statement running in the
driver's thread, and the call waiting for it, to its end; the connection is interrupted
instead (sqlite3_interrupt, which another thread may call), so the statement stops with
an error and the unit of work rolls back as after any failed statement.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import CursorResult
from sqlalchemy.sql.base import Executable

from repositories.errors import DeadlineExceeded
from repositories.scope import Params
from repositories.scoped_table import ScopedTable


class OutOfTime(DeadlineExceeded):
    """A statement ran into its deadline and was stopped."""

    def __init__(self) -> None:
        super().__init__("the statement ran out of time and was stopped")


async def execute(
    repo: ScopedTable, stmt: Executable, deadline: float | None, params: Params = None
) -> CursorResult[Any]:
    """Runs `stmt` (with `params`) through `repo`'s one door, which refuses a statement its
    tenant scope did not build, stopped at `deadline` (the event loop's clock; None: not)
    if it is still running then. OutOfTime when it was, or when the deadline had passed."""
    if deadline is None:
        return await repo._execute(stmt, params)
    loop = asyncio.get_running_loop()
    if loop.time() >= deadline:
        raise OutOfTime()
    if repo.dialect != "sqlite":
        try:
            async with asyncio.timeout_at(deadline):
                return await repo._execute(stmt, params)
        except TimeoutError:
            raise OutOfTime() from None
    raw = await repo._conn.get_raw_connection()
    # aiosqlite's sqlite3 connection: interrupting it from this thread is safe.
    sqlite: Any = raw.driver_connection._conn  # type: ignore[union-attr]
    timer = loop.call_at(deadline, sqlite.interrupt)
    try:
        return await repo._execute(stmt, params)
    except sa_exc.OperationalError as exc:
        if "interrupted" not in str(exc.orig):
            raise
        raise OutOfTime() from exc
    finally:
        timer.cancel()

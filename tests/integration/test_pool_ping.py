"""A pooled connection that sat idle is tested before use; one in steady use is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.database import Database, EngineOptions, create_engine
from repositories.errors import Unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(postgresql_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(
        make_url(postgresql_url).set(drivername="postgresql").render_as_string(False)
    )
    yield conn
    await conn.close()


def engine(url: str, after: float) -> AsyncEngine:
    return create_engine(url, EngineOptions(pool_size=1, max_overflow=0, pre_ping_after=after))


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one())


async def kill(admin: asyncpg.Connection, pid: int) -> None:
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    # The backend is gone once it no longer shows in pg_stat_activity.
    for _ in range(100):
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.01)


async def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(
    postgresql_url: str, admin: asyncpg.Connection
) -> None:
    idle = engine(postgresql_url, after=0.05)
    try:
        pid = await backend_pid(idle)
        await kill(admin, pid)
        await asyncio.sleep(0.1)
        # The ping finds the dead connection; the pool hands out a new one.
        assert await backend_pid(idle) != pid
    finally:
        await idle.dispose()


async def test_a_connection_in_steady_use_is_not_pinged(
    postgresql_url: str, admin: asyncpg.Connection
) -> None:
    busy = engine(postgresql_url, after=3600)
    try:
        pid = await backend_pid(busy)
        await kill(admin, pid)
        # Not pinged: the call that meets the dead connection fails, as unavailable...
        with pytest.raises(Unavailable):
            await Database(busy).ping()
        # ...and the pool has dropped it, so the next call gets a new one.
        assert await backend_pid(busy) != pid
    finally:
        await busy.dispose()

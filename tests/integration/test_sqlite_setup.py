"""SQLite connections are set up for concurrent use: WAL, foreign keys, busy timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.database import Database, EngineOptions, create_engine
from repositories.errors import Conflict
from repositories.migrate import upgrade
from repositories.users import UserRepository
from tests.integration.support import all_rows, create_users, user

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'setup.db'}"


async def _pragmas(engine: AsyncEngine) -> dict[str, object]:
    values = {}
    async with engine.connect() as conn:
        for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous"):
            values[name] = (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
    return values


@pytest.mark.parametrize(
    ("options", "busy_timeout"),
    [
        (None, EngineOptions().sqlite_busy_timeout_ms),
        (EngineOptions(sqlite_busy_timeout_ms=1234), 1234),
    ],
    ids=["default", "configured"],
)
async def test_every_connection_is_configured(
    sqlite_file: str, options: EngineOptions | None, busy_timeout: int
) -> None:
    engine = create_engine(sqlite_file, options)
    try:
        # Two connections at once: the settings are per connection, not per file.
        async with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
                assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == busy_timeout
                # NORMAL is 1 (FULL, the default, is 2).
                assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1
    finally:
        await engine.dispose()


async def test_settings_survive_pool_recycling(sqlite_file: str) -> None:
    engine = create_engine(sqlite_file, EngineOptions(sqlite_busy_timeout_ms=777))
    try:
        before = await _pragmas(engine)
        await engine.dispose()  # drops pooled connections; the next one is new
        after = await _pragmas(engine)
    finally:
        await engine.dispose()
    assert (
        before
        == after
        == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": 777,
            "synchronous": 1,
        }
    )


@pytest.fixture
async def no_wait_db(sqlite_file: str) -> AsyncIterator[Database]:
    """A migrated SQLite database whose connections do not wait for locks."""
    db = Database(create_engine(sqlite_file, EngineOptions(sqlite_busy_timeout_ms=0)))
    await upgrade(db.engine)
    yield db
    await db.dispose()


async def test_write_units_take_the_write_lock_when_they_begin(no_wait_db: Database) -> None:
    tenant = "t-sqlite"
    (row,) = await create_users(no_wait_db, tenant, "existing")

    async with no_wait_db.unit_of_work(tenant) as writer:
        # A write unit that has only read so far already holds the write lock
        # (BEGIN IMMEDIATE), so a second writer is turned away at its first statement...
        assert await writer.repository(UserRepository).get(row["id"]) == row
        async with no_wait_db.unit_of_work(tenant) as second:
            with pytest.raises(Conflict) as err:
                await second.repository(UserRepository).get(row["id"])
        assert err.value.reason == "CONCURRENCY_CONFLICT"
        # ...while readers carry on beside it (WAL).
        async with no_wait_db.unit_of_work(tenant, read_only=True) as reader:
            assert await reader.repository(UserRepository).get(row["id"]) == row
        await writer.repository(UserRepository).create(user("mine"))
        await writer.commit()

    # The turned-away unit left nothing behind; the first one's write landed.
    assert [r["username"] for r in await all_rows(no_wait_db, tenant)] == ["existing", "mine"]

"""Driver failures reach callers as domain errors with plain messages."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from repositories.database import Database, EngineOptions, create_engine
from repositories.errors import Conflict, DomainError, Unavailable
from repositories.users import UserRepository
from tests.integration.support import create_users

pytestmark = pytest.mark.integration


def _assert_plain(error: DomainError) -> None:
    """No SQL, driver name or connection detail in what a client would see."""
    text = str(error)
    assert text == error.message
    for leak in ("SELECT", "BEGIN", "INSERT", "sqlalchemy", "asyncpg", "sqlite3", "127.0.0.1"):
        assert leak.lower() not in text.lower()


@pytest.mark.parametrize("read_only", [False, True])
async def test_closed_postgresql_port_is_unavailable(read_only: bool) -> None:
    db = Database(create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/x"))
    try:
        with pytest.raises(Unavailable) as err:
            async with db.unit_of_work("t-any", read_only=read_only):
                pytest.fail("the unit of work was entered without a database")
    finally:
        await db.dispose()
    assert err.value.reason == "DATABASE_UNAVAILABLE"
    assert err.value.__cause__ is not None
    _assert_plain(err.value)


async def test_unopenable_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    missing_dir = tmp_path / "does-not-exist" / "repogate.db"
    db = Database(create_engine(f"sqlite+aiosqlite:///{missing_dir}"))
    try:
        with pytest.raises(Unavailable) as err:
            async with db.unit_of_work("t-any"):
                pytest.fail("the unit of work was entered without a database")
    finally:
        await db.dispose()
    _assert_plain(err.value)


async def test_pool_exhaustion_is_unavailable(database: Database, tenant: str) -> None:
    url = database.engine.url.render_as_string(hide_password=False)
    options = EngineOptions(pool_size=1, max_overflow=0, pool_timeout=0.2)
    small = Database(create_engine(url, options))
    try:
        async with small.unit_of_work(tenant, read_only=True) as held:
            assert await held.repository(UserRepository).page(1) == ([], False)
            with pytest.raises(Unavailable) as err:
                async with small.unit_of_work(tenant, read_only=True):
                    pytest.fail("a second connection came out of a pool of one")
        _assert_plain(err.value)
        # Once the first unit is done, its connection serves the next one.
        async with small.unit_of_work(tenant, read_only=True) as again:
            assert await again.repository(UserRepository).page(1) == ([], False)
    finally:
        await small.dispose()


# SQLite write units serialise at BEGIN IMMEDIATE and cannot deadlock.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_postgresql_deadlock_is_a_conflict(database: Database, tenant: str) -> None:
    assert database.dialect == "postgresql"
    first, second = await create_users(database, tenant, "first", "second")
    both_hold_one = asyncio.Barrier(2)

    async def cross(mine: uuid.UUID, theirs: uuid.UUID) -> str:
        async with database.unit_of_work(tenant) as uow:
            repo = uow.repository(UserRepository)
            await repo.update(mine, {"display_name": "locked"})
            await both_hold_one.wait()
            await repo.update(theirs, {"display_name": "crossed"})
            await uow.commit()
        return "committed"

    results = await asyncio.gather(
        cross(first["id"], second["id"]),
        cross(second["id"], first["id"]),
        return_exceptions=True,
    )

    conflicts = [r for r in results if isinstance(r, Conflict)]
    assert len(conflicts) == 1, results
    assert results.count("committed") == 1, results
    assert conflicts[0].reason == "CONCURRENCY_CONFLICT"
    _assert_plain(conflicts[0])


async def test_a_statement_cached_before_its_table_changed_is_a_conflict_to_retry(
    postgresql_url: str,
) -> None:
    """A fleet mid-migration: another process widened a column, and this process's
    cached statement no longer fits. It ran nothing; retried, it is prepared anew."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, select, text

    from repositories.errors import SerializationFailure, translate_db_errors

    table = Table(
        f"widened_{uuid.uuid4().hex[:8]}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String(5)),
    )
    cached, other = create_engine(postgresql_url), create_engine(postgresql_url)
    query = select(table).where(table.c.id == 1)
    try:
        async with other.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
            await conn.execute(table.insert().values(id=1, name="a"))
        async with cached.connect() as conn:
            assert (await conn.execute(query)).all() == [(1, "a")]
        async with other.begin() as conn:
            await conn.execute(text(f"ALTER TABLE {table.name} ALTER COLUMN name TYPE VARCHAR(9)"))

        async with cached.connect() as conn:
            with pytest.raises(SerializationFailure) as error, translate_db_errors():
                await conn.execute(query)
        _assert_plain(error.value)
        async with cached.connect() as conn:
            assert (await conn.execute(query)).all() == [(1, "a")]
    finally:
        async with other.begin() as conn:
            await conn.run_sync(table.metadata.drop_all)
        await cached.dispose()
        await other.dispose()

"""Migrations on brand-new databases, run by several instances at once."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.database import Database, create_engine
from repositories.errors import AlreadyExists
from repositories.migrate import current_revision, head_revision, upgrade
from repositories.tables import users
from repositories.users import UserRepository
from tests.conftest import POSTGRES_URL, _admin_connect
from tests.integration.support import create_users, fetch, user

pytestmark = pytest.mark.integration

INSTANCES = 4
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database that has never been migrated; removed afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    admin = await _admin_connect()  # skips, or fails under REPOGATE_TEST_REQUIRE_POSTGRES=1
    name = f"repogate_migrate_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def engines(fresh_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """One engine per simulated instance, like separate processes would have."""
    created = [create_engine(fresh_url) for _ in range(INSTANCES)]
    try:
        yield created
    finally:
        for engine in created:
            await engine.dispose()


async def _table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def _version_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version"))).all())


async def test_concurrent_upgrades_of_a_fresh_database(engines: list[AsyncEngine]) -> None:
    head = head_revision()
    assert head is not None
    assert await current_revision(engines[0]) is None
    assert "users" not in await _table_names(engines[0])

    results = await asyncio.gather(*(upgrade(engine) for engine in engines), return_exceptions=True)

    assert [r for r in results if isinstance(r, BaseException)] == []
    for engine in engines:
        assert await current_revision(engine) == head
    assert {"users", "alembic_version"} <= await _table_names(engines[0])
    assert await _version_rows(engines[0]) == [(head,)]
    async with engines[0].connect() as conn:
        columns = await conn.run_sync(lambda c: inspect(c).get_columns("users"))
    assert {column["name"] for column in columns} == set(users.c.keys())

    # The migrated schema works for the repositories on every instance.
    db = Database(engines[1])
    (row,) = await create_users(db, "t-migrated", "first")
    assert await fetch(Database(engines[2]), "t-migrated", row["id"]) == row
    # ...including the case-insensitive unique indexes.
    async with Database(engines[3]).unit_of_work("t-migrated") as uow:
        with pytest.raises(AlreadyExists) as err:
            await uow.repository(UserRepository).create(user("x", email="FIRST@example.com"))
    assert err.value.field == "email"


_UPGRADE_IN_A_PROCESS = """
import asyncio, sys
from repositories.database import create_engine
from repositories.migrate import upgrade

async def main(url):
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()

asyncio.run(main(sys.argv[1]))
"""


async def test_concurrent_upgrades_from_separate_processes(fresh_url: str) -> None:
    # Separate processes do not share the in-process turn-taking, so this is what
    # the database-side serialisation (advisory lock, BEGIN IMMEDIATE) is for.
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _UPGRADE_IN_A_PROCESS,
            fresh_url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(INSTANCES)
    ]
    outputs = [await process.communicate() for process in processes]

    failures = [
        err.decode()[-2000:]
        for process, (_, err) in zip(processes, outputs, strict=True)
        if process.returncode != 0
    ]
    assert failures == []
    engine = create_engine(fresh_url)
    try:
        assert await current_revision(engine) == head_revision()
        assert "users" in await _table_names(engine)
        assert await _version_rows(engine) == [(head_revision(),)]
    finally:
        await engine.dispose()


async def test_upgrading_again_is_a_no_op(engines: list[AsyncEngine]) -> None:
    await upgrade(engines[0])
    head = await current_revision(engines[0])
    (row,) = await create_users(Database(engines[0]), "t-kept", "kept")

    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    for engine in engines:
        event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await upgrade(engines[0])
        await asyncio.gather(*(upgrade(engine) for engine in engines))
    finally:
        for engine in engines:
            event.remove(engine.sync_engine, "before_cursor_execute", record)

    assert statements, "the listener saw nothing; the check below would be vacuous"
    changes = [
        s
        for s in statements
        if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE"))
    ]
    assert changes == []
    assert await current_revision(engines[0]) == head == head_revision()
    assert await _version_rows(engines[0]) == [(head,)]
    async with Database(engines[3]).unit_of_work("t-kept", read_only=True) as uow:
        assert await uow.repository(UserRepository).get(row["id"]) == row

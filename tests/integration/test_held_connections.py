"""Autocommit units hand their connection to the next unit, past the pool, without
keeping it from anyone else (repositories/held.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from repositories import held as held_module
from repositories.database import Database, EngineOptions, create_engine
from repositories.held import connect
from repositories.migrate import upgrade
from tests.integration.support import create_users, fetch

pytestmark = pytest.mark.integration


class Checkouts:
    """Counts the pool's checkouts of one engine."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        event.listen(db.engine.sync_engine, "checkout", self._checked_out)

    def _checked_out(self, *_: Any) -> None:
        self.count += 1


@pytest.fixture
async def small(postgresql_url: str) -> AsyncIterator[Database]:
    """Two connections and no overflow; a checkout waits at most 0.2 s."""
    db = Database(
        create_engine(postgresql_url, EngineOptions(pool_size=2, max_overflow=0, pool_timeout=0.2))
    )
    await upgrade(db.engine)
    yield db
    await db.dispose()


def pool(db: Database) -> Any:
    return db.engine.sync_engine.pool


async def test_units_one_after_another_share_one_checkout(small: Database, tenant: str) -> None:
    (row,) = await create_users(small, tenant, "shared")
    checkouts = Checkouts(small)

    for _ in range(20):
        assert await fetch(small, tenant, row["id"]) == row

    assert checkouts.count == 1
    assert small.held is not None
    assert small.held.reused == 19


async def test_concurrent_units_each_get_a_connection(small: Database, tenant: str) -> None:
    rows = await create_users(small, tenant, *(f"c{i}" for i in range(6)))

    found = await asyncio.gather(*(fetch(small, tenant, row["id"]) for row in rows * 5))

    assert found == rows * 5
    assert pool(small).checkedout() <= 2


async def test_a_held_connection_goes_back_to_the_pool_once_idle(
    small: Database, tenant: str
) -> None:
    (row,) = await create_users(small, tenant, "idle")
    await fetch(small, tenant, row["id"])
    held_after_the_unit = pool(small).checkedout()

    await asyncio.sleep(held_module.IDLE + 0.3)

    assert held_after_the_unit == 1
    assert pool(small).checkedout() == 0


async def test_a_checkout_from_a_pool_with_none_free_gets_a_held_connection(
    small: Database, tenant: str
) -> None:
    (row,) = await create_users(small, tenant, "waiter")
    await fetch(small, tenant, row["id"])  # held: the pool could still open another
    other = await small.engine.connect()  # which this takes, past `connect`
    try:
        # Nothing free, nothing to open: a transaction (which checks out through
        # `connect`) is handed the held connection rather than waiting out the pool.
        begun = await connect(small.writes)
        await begun.close()
    finally:
        await other.close()


async def test_a_connection_is_not_held_while_the_pool_has_none_to_spare(
    small: Database, tenant: str
) -> None:
    (row,) = await create_users(small, tenant, "spare")
    other = await small.engine.connect()
    try:
        await fetch(small, tenant, row["id"])  # the pool's last connection
        # A checkout past `connect` (a probe, a health check) finds it in the pool.
        async with small.engine.connect() as third:
            assert not third.invalidated
    finally:
        await other.close()


async def test_dispose_returns_the_held_connections(postgresql_url: str, tenant: str) -> None:
    db = Database(create_engine(postgresql_url, EngineOptions(pool_size=2, max_overflow=0)))
    await upgrade(db.engine)
    (row,) = await create_users(db, tenant, "disposed")
    await fetch(db, tenant, row["id"])
    held_before = pool(db).checkedout()

    assert db.held is not None
    await db.held.close()

    assert held_before == 1
    assert pool(db).checkedout() == 0
    await db.dispose()


async def test_a_pool_that_tests_every_connection_gets_every_one_back(
    postgresql_url: str, tenant: str
) -> None:
    """REPOGATE_DB_PRE_PING_AFTER=0: every checkout is tested, so nothing is held."""
    db = Database(create_engine(postgresql_url, EngineOptions(pool_size=2, pre_ping_after=0)))
    try:
        await upgrade(db.engine)
        (row,) = await create_users(db, tenant, "pinged")
        checkouts = Checkouts(db)

        for _ in range(3):
            assert await fetch(db, tenant, row["id"]) == row

        assert checkouts.count == 3
    finally:
        await db.dispose()

"""One purge at a time across every process sharing a PostgreSQL database, directly and
through PgBouncer in transaction mode: a purge that finds another one running skips its run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from repositories.database import Database, EngineOptions, create_engine
from repositories.maintenance import PURGE_LOCK_ID, purge_due
from repositories.tables import users
from repositories.users import UserRepository
from tests.integration.support import create_users, other_tenant
from tests.pgbouncer import PgBouncer, fresh_database, running
from tests.polling import eventually

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
async def own_url() -> AsyncIterator[str]:
    """A migrated database of this module's own: its advisory locks reach no other test."""
    async with fresh_database(migrated=True) as url:
        yield url


@pytest.fixture(scope="module")
def bouncer(own_url: str) -> Iterator[PgBouncer]:
    with running(own_url) as bouncer:
        yield bouncer


@pytest.fixture
async def direct(own_url: str) -> AsyncIterator[Database]:
    # Two purges (two connections each), a blocker and a look at pg_locks at once.
    db = Database(create_engine(own_url, EngineOptions(pool_size=6, max_overflow=0)))
    yield db
    await db.dispose()


async def deleted_users(db: Database, *names: str) -> str:
    """A tenant with users of these names, soft-deleted with an hour's retention."""
    tenant = other_tenant()
    rows = await create_users(db, tenant, *names)
    async with db.unit_of_work(tenant) as uow:
        for row in rows:
            await uow.repository(UserRepository).delete(row["id"], retention=HOUR)
        await uow.commit()
    return tenant


async def left(db: Database, tenant: str) -> int:
    async with db.engine.connect() as conn:
        rows = await conn.execute(users.select().where(users.c.tenant_id == tenant))
        return len(rows.all())


async def purge_lock_held(db: Database) -> bool:
    async with db.engine.connect() as conn:
        held = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND ((classid::bigint << 32) | objid::bigint) = :id"
            ),
            {"id": PURGE_LOCK_ID},
        )
        return bool(held)


async def test_of_two_concurrent_purges_one_runs_and_the_other_skips(direct: Database) -> None:
    tenant = await deleted_users(direct, "ann", "bob", "cy")
    later = datetime.now(UTC) + 2 * HOUR
    # A row lock on one due user holds the first purge inside its run, lock taken.
    async with direct.engine.connect() as blocker:
        await blocker.execute(
            users.select()
            .where(users.c.tenant_id == tenant, users.c.username == "bob")
            .with_for_update()
        )
        first = asyncio.create_task(purge_due(direct, now=later))
        await eventually(lambda: purge_lock_held(direct), "the first purge to take the lock")

        second = await purge_due(direct, now=later)

        assert second is None
        assert not first.done()
        await blocker.rollback()
    purged = await first

    assert purged is not None
    assert purged["users"] == 3
    assert await left(direct, tenant) == 0
    assert not await purge_lock_held(direct)


@pytest.mark.parametrize("route", ["direct", "pgbouncer"])
async def test_a_purge_skips_while_another_process_holds_the_lock(
    route: str, own_url: str, bouncer: PgBouncer, direct: Database
) -> None:
    options = EngineOptions(pool_size=2, max_overflow=0, pgbouncer=route == "pgbouncer")
    url = bouncer.url(own_url) if route == "pgbouncer" else own_url
    db = Database(create_engine(url, options))
    tenant = await deleted_users(direct, "dee")
    later = datetime.now(UTC) + 2 * HOUR
    try:
        async with direct.engine.connect() as other_process:
            assert await other_process.scalar(
                text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": PURGE_LOCK_ID}
            )
            assert await purge_due(db, now=later) is None
            assert await left(direct, tenant) == 1
        # Its transaction ended, and the lock with it: the next run purges.
        purged = await purge_due(db, now=later)
    finally:
        await db.dispose()

    assert purged is not None
    assert purged["users"] == 1
    assert await left(direct, tenant) == 0

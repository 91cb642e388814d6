"""What caches are told when a write may have landed though its call failed: single
calls (server.units) and transactions across calls, against a real database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from repositories.changes import Changes
from repositories.database import Database, RepositorySource
from repositories.errors import TransactionNotFound, Unavailable
from repositories.transactions import Limits, TransactionRegistry
from repositories.users import UserRepository
from server import context
from server.units import RetryPolicy, Units
from tests.integration.support import create_users, fetch

pytestmark = pytest.mark.integration


class Boom(Exception):
    pass


class Told:
    """Stands where the read-through cache is told what committed."""

    def __init__(self) -> None:
        self.changes: list[Changes] = []

    async def __call__(self, changes: Changes) -> None:
        self.changes.append(changes)

    def rows(self) -> list[tuple[str, str, Any, int | None]]:
        return [row for changes in self.changes for row in changes.rows]

    def tables(self) -> set[tuple[str, str]]:
        return {table for changes in self.changes for table in changes.tables}


@pytest.fixture
def told() -> Told:
    return Told()


@pytest.fixture
def units(database: Database, told: Told) -> Units:
    transactions = TransactionRegistry(database, Limits(), on_commit=told)
    return Units(database, transactions, RetryPolicy(), on_commit=told)


async def as_tenant(tenant: str, call: Callable[[], Awaitable[Any]]) -> Any:
    token = context.bind(context.RequestContext(tenant=tenant, request_id="test"))
    try:
        return await call()
    finally:
        context.unbind(token)


async def until_waiting_on_a_lock(database: Database) -> None:
    """Returns once some statement waits on a row lock (within ten seconds)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE users%'"
    )
    for _ in range(1000):
        async with database.engine.connect() as conn:
            if (await conn.execute(query)).scalar_one():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the update never waited on the lock")


@pytest.mark.parametrize("one_write", [False, True])
async def test_a_write_that_landed_before_its_call_failed_is_still_forgotten(
    database: Database, units: Units, told: Told, tenant: str, one_write: bool
) -> None:
    (ann,) = await create_users(database, tenant, "ann")

    async def update_then_fail(uow: RepositorySource) -> None:
        await uow.repository(UserRepository).update(ann["id"], {"display_name": "landed?"})
        raise Boom

    with pytest.raises(Boom):
        await as_tenant(tenant, lambda: units.write(update_then_fail, one_write=one_write))

    row = await fetch(database, tenant, ann["id"])
    assert row is not None
    # Autocommit (one write, on PostgreSQL) keeps the write; a transaction rolls it back.
    landed = one_write and database.dialect == "postgresql"
    assert (row["display_name"] == "landed?") is landed
    assert told.rows() == ([("users", tenant, ann["id"], ann["version"] + 1)] if landed else [])


async def test_a_write_cut_off_in_autocommit_makes_caches_forget_its_table(
    database: Database, units: Units, told: Told, tenant: str
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("SQLite writes run in a transaction: one cut off is rolled back")
    (ann,) = await create_users(database, tenant, "ann")

    async def update(uow: RepositorySource) -> None:
        await uow.repository(UserRepository).update(ann["id"], {"display_name": "cut off"})

    async with database.engine.connect() as holder:
        # Holds ann's row, so the update waits on it until cancelled.
        await holder.execute(
            text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": ann["id"]}
        )
        call = asyncio.create_task(as_tenant(tenant, lambda: units.write(update, one_write=True)))
        await until_waiting_on_a_lock(database)
        assert not call.done()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await holder.rollback()

    assert told.tables() == {("users", tenant)}
    assert told.rows() == []
    row = await fetch(database, tenant, ann["id"])
    assert row is not None
    assert row["display_name"] == ann["display_name"]


async def test_a_refused_write_tells_caches_nothing(
    database: Database, units: Units, told: Told, tenant: str
) -> None:
    first, second = await create_users(database, tenant, "first", "second")

    async def take_email(uow: RepositorySource) -> None:
        repo = uow.repository(UserRepository)
        await repo.update(second["id"], {"email": first["email"]})

    with pytest.raises(Exception, match="email"):
        await as_tenant(tenant, lambda: units.write(take_email, one_write=True))

    assert told.changes == []


async def test_a_commit_cut_off_makes_caches_forget_the_transactions_writes(
    database: Database, told: Told, tenant: str
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("a SQLite connection cannot be cut off from outside")
    (ann,) = await create_users(database, tenant, "ann")
    registry = TransactionRegistry(database, Limits(), on_commit=told)
    # Not shared (a Transact's): COMMIT is the first statement sent after the cut.
    tx = await registry.begin(tenant, shared=False)
    async with registry.call(tx.id, tenant, actor=None, write=True) as repositories:
        await repositories.repository(UserRepository).update(ann["id"], {"display_name": "b"})
    await _cut_off(database, tx.conn)

    # Here it did not land, but a COMMIT cut off on its way back looks the same.
    with pytest.raises(Unavailable):
        await registry.commit(tx.id, tenant)

    assert told.rows() == [("users", tenant, ann["id"], ann["version"] + 1)]


async def test_a_shared_transaction_cut_off_before_its_commit_is_recorded_is_aborted(
    database: Database, told: Told, tenant: str
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("a SQLite connection cannot be cut off from outside")
    (ann,) = await create_users(database, tenant, "ann")
    registry = TransactionRegistry(database, Limits(), on_commit=told)
    tx = await registry.begin(tenant)
    async with registry.call(tx.id, tenant, actor=None, write=True) as repositories:
        await repositories.repository(UserRepository).update(ann["id"], {"display_name": "b"})
    await _cut_off(database, tx.conn)

    # Its outcome row goes first: COMMIT was never sent, so nothing may have landed.
    with pytest.raises(Unavailable):
        await registry.commit(tx.id, tenant)
    with pytest.raises(TransactionNotFound) as again:
        await registry.commit(tx.id, tenant)

    assert again.value.metadata["state"] == "ABORTED"
    assert told.rows() == []


async def _cut_off(database: Database, conn: AsyncConnection) -> None:
    """Terminates the server side of `conn`, as a network cut would."""
    pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    async with database.engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

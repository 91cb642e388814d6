"""The unit of work: one transaction, committed only on request."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from repositories.database import Database, EngineOptions, create_engine
from repositories.errors import AlreadyExists
from repositories.scope import ScopeViolation
from repositories.sessions import SessionRepository
from repositories.users import UserRepository
from tests.integration.support import all_rows, create_users, fetch, user

pytestmark = pytest.mark.integration


class Boom(Exception):
    pass


async def test_without_commit_nothing_persists(database: Database, tenant: str) -> None:
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        created = await repo.create(user("ephemeral"))
        # Visible inside its own transaction...
        assert await repo.get(created["id"]) == created

    # ...and gone for everyone afterwards.
    assert await fetch(database, tenant, created["id"]) is None
    assert await all_rows(database, tenant) == []


async def test_uncommitted_update_and_delete_are_rolled_back(
    database: Database, tenant: str
) -> None:
    first, second = await create_users(database, tenant, "first", "second")

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        await repo.update(first["id"], {"display_name": "changed"})
        await repo.delete(second["id"])

    assert await all_rows(database, tenant) == [first, second]


async def test_commit_persists(database: Database, tenant: str) -> None:
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        created = await repo.create(user("kept"))
        updated = await repo.update(created["id"], {"display_name": "Kept"})
        await uow.commit()

    stored = await fetch(database, tenant, created["id"])
    assert stored == updated
    assert stored is not None
    assert stored["display_name"] == "Kept"
    assert stored["version"] == 2


async def test_an_exception_in_the_block_rolls_back(database: Database, tenant: str) -> None:
    (existing,) = await create_users(database, tenant, "existing")
    created: list[uuid.UUID] = []

    async def doomed() -> None:
        async with database.unit_of_work(tenant) as uow:
            repo = uow.repository(UserRepository)
            created.append((await repo.create(user("doomed")))["id"])
            await repo.update(existing["id"], {"display_name": "doomed"})
            raise Boom

    with pytest.raises(Boom):
        await doomed()

    assert len(created) == 1
    assert await fetch(database, tenant, created[0]) is None
    assert await all_rows(database, tenant) == [existing]


async def test_a_domain_error_in_the_block_rolls_back_earlier_writes(
    database: Database, tenant: str
) -> None:
    (existing,) = await create_users(database, tenant, "taken")

    async def create_two() -> None:
        async with database.unit_of_work(tenant) as uow:
            repo = uow.repository(UserRepository)
            await repo.create(user("fine"))
            await repo.create(user("taken"))
            await uow.commit()

    with pytest.raises(AlreadyExists):
        await create_two()

    assert await all_rows(database, tenant) == [existing]
    # The connection went back to the pool in a usable state.
    await create_users(database, tenant, "after")
    assert [row["username"] for row in await all_rows(database, tenant)] == ["taken", "after"]


async def test_commit_ends_the_transaction(database: Database, tenant: str) -> None:
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        a = await repo.create(user("a"))
        await uow.commit()
        # Work after a commit is a new transaction, rolled back at exit.
        b = await repo.create(user("b"))

    assert await fetch(database, tenant, a["id"]) == a
    assert await fetch(database, tenant, b["id"]) is None


async def test_repositories_are_per_unit_and_only_inside_the_block(
    database: Database, tenant: str
) -> None:
    uow = database.unit_of_work(tenant)
    with pytest.raises(RuntimeError):
        uow.repository(UserRepository)
    with pytest.raises(RuntimeError):
        await uow.commit()

    async with uow:
        repo = uow.repository(UserRepository)
        assert uow.repository(UserRepository) is repo
        assert repo.scope.tenant == tenant

    with pytest.raises(RuntimeError):
        await uow.commit()


async def test_read_only_unit_reads_committed_rows(database: Database, tenant: str) -> None:
    (row,) = await create_users(database, tenant, "reader")
    async with database.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        assert await repo.get(row["id"]) == row
        assert await repo.page(10) == ([row], False)


async def test_units_of_other_tenants_are_independent(database: Database, tenant: str) -> None:
    other = f"{tenant}-other"
    async with (
        database.unit_of_work(tenant) as mine,
        database.unit_of_work(other, read_only=True) as theirs,
    ):
        created = await mine.repository(UserRepository).create(user("solo"))
        await mine.commit()
        assert await theirs.repository(UserRepository).page(10) == ([], False)
    assert await fetch(database, tenant, created["id"]) == created
    assert await fetch(database, other, created["id"]) is None


async def test_commit_after_a_failed_statement_is_refused(database: Database, tenant: str) -> None:
    """PostgreSQL would turn this COMMIT into a silent ROLLBACK; both backends refuse it."""
    (taken,) = await create_users(database, tenant, "taken")
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        kept = await repo.create(user("kept-before-failure"))
        with pytest.raises(AlreadyExists):
            await repo.create(user("dup", email=taken["email"]))
        with pytest.raises(RuntimeError, match="cannot commit"):
            await uow.commit()
    assert await fetch(database, tenant, kept["id"]) is None


async def test_a_read_only_unit_refuses_writes(database: Database, tenant: str) -> None:
    async with database.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        with pytest.raises(ScopeViolation, match="read-only"):
            await repo.create(user("never"))
    assert await all_rows(database, tenant) == []


async def test_a_one_write_unit_refuses_a_second_write_before_it_runs(
    database: Database, tenant: str
) -> None:
    async with database.unit_of_work(tenant, one_write=True) as uow:
        repo = uow.repository(UserRepository)
        assert await repo.count() == 0  # reads run before the write...
        first = await repo.create(user("first"))
        assert (await repo.get(first["id"]))["id"] == first["id"]  # ...and after it
        with pytest.raises(ScopeViolation, match="runs 1 write"):
            await repo.create(user("second"))
        # Every repository of the unit shares its limit.
        sessions = uow.repository(SessionRepository)
        with pytest.raises(ScopeViolation, match="runs 1 write"):
            await sessions.delete_where(sessions.c.name == "none")
        await uow.commit()

    assert [row["username"] for row in await all_rows(database, tenant)] == ["first"]


async def test_a_locking_read_counts_as_the_one_write(database: Database, tenant: str) -> None:
    (live,) = await create_users(database, tenant, "live")
    async with database.unit_of_work(tenant, one_write=True) as uow:
        repo = uow.repository(UserRepository)
        await repo.lock_live([live["id"]])
        with pytest.raises(ScopeViolation, match="runs 1 write"):
            await repo.create(user("after-lock"))
    assert [row["username"] for row in await all_rows(database, tenant)] == ["live"]


async def test_a_one_write_unit_runs_in_autocommit_on_postgresql(
    database: Database, tenant: str
) -> None:
    """Its write is everyone's as soon as it runs: no BEGIN or COMMIT round trips."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite writes take BEGIN IMMEDIATE, one write or many")
    async with database.unit_of_work(tenant, one_write=True) as uow:
        created = await uow.repository(UserRepository).create(user("at-once"))
        assert await fetch(database, tenant, created["id"]) is not None
    # Leaving without commit() cannot take back what autocommit committed.
    assert await fetch(database, tenant, created["id"]) is not None

    async with database.unit_of_work(tenant) as uow:
        pending = await uow.repository(UserRepository).create(user("pending"))
        assert await fetch(database, tenant, pending["id"]) is None


async def test_a_failed_one_write_leaves_nothing(database: Database, tenant: str) -> None:
    (taken,) = await create_users(database, tenant, "taken")
    async with database.unit_of_work(tenant, one_write=True) as uow:
        with pytest.raises(AlreadyExists):
            await uow.repository(UserRepository).create(user("dup", email=taken["email"]))
    assert [row["username"] for row in await all_rows(database, tenant)] == ["taken"]


async def test_changes_name_every_row_written_and_every_bulk_statement(
    database: Database, tenant: str
) -> None:
    kept, soft, hard = await create_users(database, tenant, "kept", "soft", "hard")

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        await repo.get(kept["id"])
        assert not uow.changes  # reads change nothing
        updated = await repo.update(kept["id"], {"display_name": "new"})
        await repo.delete_many([(soft["id"], None, False), (hard["id"], None, True)])
        assert uow.changes.tables == set()
        await repo.update_where({"is_active": False}, repo.c.username == "nobody")
        changes = uow.changes

    assert sorted(changes.rows, key=str) == sorted(
        [
            ("users", tenant, kept["id"], updated["version"]),
            ("users", tenant, soft["id"], soft["version"] + 1),
            ("users", tenant, hard["id"], None),
        ],
        key=str,
    )
    assert changes.tables == {("users", tenant)}


async def test_read_only_units_run_each_statement_on_its_own_on_postgresql(
    database: Database, tenant: str
) -> None:
    """Autocommit: no BEGIN/ROLLBACK round trips around a read. Write units stay one
    transaction."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite reads run in a transaction: WAL gives them one snapshot")
    query = "SELECT transaction_timestamp()"

    async def two_statements(read_only: bool) -> set[object]:
        async with database.unit_of_work(tenant, read_only=read_only) as uow:
            conn = uow.repository(UserRepository)._conn
            first = (await conn.exec_driver_sql(query)).scalar_one()
            await asyncio.sleep(0.01)
            return {first, (await conn.exec_driver_sql(query)).scalar_one()}

    assert len(await two_statements(read_only=True)) == 2
    assert len(await two_statements(read_only=False)) == 1


async def test_a_connection_leaves_autocommit_with_its_unit(
    database: Database, database_url: str, backend: str, tenant: str
) -> None:
    if backend != "postgresql":
        pytest.skip("units run in autocommit on PostgreSQL only")
    # One connection: every unit below gets the one the unit before it gave back.
    single = Database(create_engine(database_url, EngineOptions(pool_size=1, max_overflow=0)))

    async def one_write_that_fails() -> None:
        async with single.unit_of_work(tenant, one_write=True) as uow:
            await uow.repository(UserRepository).count()
            raise RuntimeError("undone")

    async def writes_that_fail() -> None:
        async with single.unit_of_work(tenant) as uow:
            await uow.repository(UserRepository).create(user("never"))
            raise RuntimeError("undone")

    try:
        async with single.unit_of_work(tenant, read_only=True) as uow:
            await uow.repository(UserRepository).count()
        with pytest.raises(RuntimeError, match="undone"):
            await one_write_that_fails()
        with pytest.raises(RuntimeError, match="undone"):
            await writes_that_fail()
        async with single.unit_of_work(tenant, read_only=True) as uow:
            # The unit of many writes ran in a transaction, rolled back as a whole.
            assert await uow.repository(UserRepository).count() == 0
    finally:
        await single.dispose()

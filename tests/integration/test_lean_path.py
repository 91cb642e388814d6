"""The lean path (repositories/prepared.py): which statements it runs, that the tenant
scope still guards them, and that listeners, errors and cancellation behave as through
SQLAlchemy, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, func, select

from repositories import prepared
from repositories.database import Database
from repositories.errors import AlreadyExists, NotFound
from repositories.scope import TENANT_PARAM, ScopeViolation
from repositories.sessions import SessionRepository
from repositories.transactions import Limits, TransactionRegistry
from repositories.users import UserRepository
from tests.integration.support import create_users, other_tenant, user

pytestmark = pytest.mark.integration


@dataclass
class Heard:
    statement: str
    lean: bool
    context: Any


@contextmanager
def heard(database: Database) -> Iterator[tuple[list[Heard], list[Any]]]:
    """Statements the engine's listeners hear while the block runs (whether the lean
    path ran each), and the errors `handle_error` listeners hear."""
    statements: list[Heard] = []
    errors: list[Any] = []

    def before(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        lean = isinstance(context, prepared.LeanContext)
        statements.append(Heard(" ".join(statement.split()), lean, context))

    def failed(context: Any) -> None:
        errors.append(context)

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "handle_error", failed)
    try:
        yield statements, errors
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "handle_error", failed)


@pytest.fixture
def db(database: Database) -> Database:
    return database


def _users(seen: list[Heard]) -> list[Heard]:
    return [each for each in seen if " users" in each.statement]


async def test_the_hot_statements_run_on_the_lean_path(
    db: Database, tenant: str, backend: str
) -> None:
    first, second = await create_users(db, tenant, "lean1", "lean2")
    with heard(db) as (seen, _):
        async with db.unit_of_work(tenant) as uow:
            repo = uow.repository(UserRepository)
            await repo.get(first["id"])
            await repo.get_many([first["id"], second["id"]])
            await repo.page(10)
            assert await repo.count() == 2
            created = await repo.create(user("lean3"))
            await repo.update(created["id"], {"display_name": "Lean"}, expected_version=1)
            await repo.delete(created["id"])
            await uow.commit()
    ran = _users(seen)
    assert len(ran) == 7, [each.statement for each in ran]
    left = [each.statement for each in ran if not each.lean]
    if backend == "sqlite":
        # get_many's IN list has one shape per length there: SQLAlchemy expands it.
        assert len(left) == 1
        assert " IN (?, ?)" in left[0]
    else:
        assert left == []


async def test_rows_from_the_lean_path_are_what_sqlalchemy_gives(db: Database, tenant: str) -> None:
    (owner,) = await create_users(db, tenant, "owner")
    session = {
        "user_id": owner["id"],
        "status": "active",
        "preferences": {"a": [1, {"b": None}]},
        "total_cost_usd": Decimal("0.000000007"),
        "last_access_time": datetime.now(UTC),
    }
    async with db.unit_of_work(tenant) as uow:
        created = await uow.repository(SessionRepository).create(session)
        await uow.commit()
    async with db.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(SessionRepository)
        lean = await repo.get(created["id"])
        repo._lean = None  # the same statement through SQLAlchemy
        through_sqlalchemy = await repo.get(created["id"])
    assert isinstance(lean, dict)
    assert lean == dict(through_sqlalchemy)
    assert lean["preferences"] == {"a": [1, {"b": None}]}
    assert lean["total_cost_usd"] == Decimal("0.000000007")
    assert lean["create_time"].utcoffset() is not None


async def test_a_statement_the_scope_did_not_build_never_runs(db: Database, tenant: str) -> None:
    async with db.unit_of_work(tenant, read_only=True) as uow:
        users = uow.repository(UserRepository)
        sessions = uow.repository(SessionRepository)
        with heard(db) as (seen, _):
            with pytest.raises(ScopeViolation):
                await users._rows(select(users.table))
            with pytest.raises(ScopeViolation):
                # Marked, but by another table's scope.
                await users._rows(sessions.scope.select())
    assert seen == []


async def test_a_tenant_passed_as_a_parameter_is_overridden(db: Database, tenant: str) -> None:
    other = other_tenant()
    await create_users(db, other, "theirs")
    (mine,) = await create_users(db, tenant, "mine")
    async with db.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        with heard(db) as (seen, _):
            rows = await repo._rows(repo.scope.select(), {TENANT_PARAM: other})
    assert [row["id"] for row in rows] == [mine["id"]]
    assert all(each.lean for each in _users(seen))


async def test_a_refused_statement_is_translated_and_heard(db: Database, tenant: str) -> None:
    await create_users(db, tenant, "taken")
    with heard(db) as (seen, errors):
        async with db.unit_of_work(tenant) as uow:
            with pytest.raises(AlreadyExists):
                await uow.repository(UserRepository).create(user("taken"))
    (insert,) = _users(seen)
    assert insert.lean
    (error,) = errors
    # The same context the statement's listeners were handed: a span started in
    # before_cursor_execute is found again and ended.
    assert error.execution_context is insert.context
    # The driver's error as SQLAlchemy's adapter raises it, as through SQLAlchemy.
    assert isinstance(error.original_exception, db.engine.dialect.loaded_dbapi.IntegrityError)
    assert "unique" in str(error.sqlalchemy_exception).lower()


async def test_a_cancelled_statement_leaves_no_connection_behind(
    db: Database, tenant: str, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("pg_sleep: a statement PostgreSQL runs until cancelled")
    (row,) = await create_users(db, tenant, "sleeper")
    async with db.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        stmt = repo.scope.select(func.pg_sleep(30))
        task = asyncio.create_task(repo._rows(stmt))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # As through SQLAlchemy: the connection is invalidated, never handed out again.
        assert repo._conn.invalidated
    async with db.engine.connect() as conn:
        sleeping = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' "
            "AND state = 'active' AND pid <> pg_backend_pid()"
        )
        assert sleeping.scalar_one() == 0
    async with db.unit_of_work(tenant, read_only=True) as uow:
        assert (await uow.repository(UserRepository).get(row["id"]))["username"] == "sleeper"


async def test_updates_of_one_row_share_one_statement(db: Database, tenant: str) -> None:
    (row,) = await create_users(db, tenant, "twice")
    with heard(db) as (seen, _):
        async with db.unit_of_work(tenant) as uow:
            repo = uow.repository(UserRepository)
            first = await repo.update(row["id"], {"display_name": "One"}, expected_version=1)
            second = await repo.update(row["id"], {"display_name": "Two"}, expected_version=2)
            await uow.commit()
    assert (first["display_name"], first["version"]) == ("One", 2)
    assert (second["display_name"], second["version"]) == ("Two", 3)
    one, two = _users(seen)
    assert one.lean
    assert two.lean
    assert one.statement == two.statement  # the values are parameters


async def test_a_cached_update_cannot_move_a_row_to_another_tenant(
    db: Database, tenant: str
) -> None:
    async with db.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        with pytest.raises(ScopeViolation):
            repo.scope.update_one(("display_name", "tenant_id"), versioned=False, deleted=False)


async def test_calls_in_a_transaction_take_one_savepoint_round_trip_each(
    db: Database, tenant: str
) -> None:
    registry = TransactionRegistry(db, Limits())
    tx = await registry.begin(tenant)
    with heard(db) as (seen, _):
        for tag in ("kept1", "failed", "kept2"):
            try:
                async with registry.call(tx.id, tenant, actor=None, write=True) as repos:
                    await repos.repository(UserRepository).create(user(tag))
                    if tag == "failed":
                        raise RuntimeError("the call fails after its write")
            except RuntimeError:
                pass
        await registry.commit(tx.id, tenant)
    savepoints = [each.statement for each in seen if "SAVEPOINT" in each.statement]
    assert savepoints == [
        "SAVEPOINT repogate_call",
        "RELEASE SAVEPOINT repogate_call; SAVEPOINT repogate_call",
        "ROLLBACK TO SAVEPOINT repogate_call",
        "RELEASE SAVEPOINT repogate_call; SAVEPOINT repogate_call",
    ]
    (recorded,) = [each for each in seen if "INSERT INTO transaction_outcomes" in each.statement]
    assert recorded.lean  # the commit's outcome row
    async with db.unit_of_work(tenant, read_only=True) as uow:
        rows, _ = await uow.repository(UserRepository).page(10)
    names = sorted(row["username"] for row in rows)
    assert names == ["kept1", "kept2"]


async def test_one_compiled_statement_serves_each_tenant_only_its_rows(
    db: Database, tenant: str
) -> None:
    other = other_tenant()
    (mine,) = await create_users(db, tenant, "onlymine")
    with heard(db) as (seen, _):
        async with db.unit_of_work(tenant, read_only=True) as uow:
            assert (await uow.repository(UserRepository).get(mine["id"]))["id"] == mine["id"]
        async with db.unit_of_work(other, read_only=True) as uow:
            with pytest.raises(NotFound):
                await uow.repository(UserRepository).get(mine["id"])
    first, second = _users(seen)
    assert first.lean
    assert second.lean
    assert first.statement == second.statement

"""Tenant scope is absolute: no repository call reads or writes another tenant's rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, event, or_, select, true, update

from repositories.database import Database
from repositories.errors import NotFound
from repositories.scope import ScopeViolation, TenantScope
from repositories.tables import sessions, users
from repositories.users import UserRepository
from tests.integration.support import all_rows, create_users, fetch, other_tenant, user

pytestmark = pytest.mark.integration


async def test_get_update_delete_of_another_tenants_row_are_not_found(
    database: Database, tenant: str
) -> None:
    other = other_tenant()
    (theirs,) = await create_users(database, other, "theirs")

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        with pytest.raises(NotFound) as got:
            await repo.get(theirs["id"])
        assert got.value.metadata == {"resource_type": "user", "id": str(theirs["id"])}
        with pytest.raises(NotFound):
            await repo.update(theirs["id"], {"display_name": "hijacked"})
        with pytest.raises(NotFound):
            await repo.update(theirs["id"], {"display_name": "hijacked"}, expected_version=1)
        with pytest.raises(NotFound):
            await repo.delete(theirs["id"])
        with pytest.raises(NotFound):
            await repo.delete(theirs["id"], expected_version=1)
        await uow.commit()

    assert await fetch(database, other, theirs["id"]) == theirs


async def test_update_where_touches_only_the_scoped_tenant(database: Database, tenant: str) -> None:
    other = other_tenant()
    mine = await create_users(database, tenant, "m1", "m2")
    theirs = await create_users(database, other, "t1", "t2")
    both_tenants = users.c.tenant_id.in_([tenant, other])

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        assert await repo.update_where({"display_name": "bulk"}, both_tenants) == 2
        # An OR cannot widen the scope: it is ANDed with the tenant predicate.
        escape = or_(users.c.tenant_id == other, true())
        assert await repo.update_where({"is_active": False}, escape) == 2
        await uow.commit()

    assert await all_rows(database, other) == theirs
    after = {row["id"]: row for row in await all_rows(database, tenant)}
    for row in mine:
        changed = after[row["id"]]
        assert changed["display_name"] == "bulk"
        assert changed["is_active"] is False
        assert changed["version"] == row["version"] + 2


async def test_update_where_with_a_criterion_matching_both_tenants_by_value(
    database: Database, tenant: str
) -> None:
    other = other_tenant()
    # Both tenants have users named alike; the criterion matches some rows of each.
    mine = await create_users(database, tenant, "same", "alike", "apart")
    theirs = await create_users(database, other, "same", "alike", "apart")
    criterion = users.c.username.in_(["same", "alike"])

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        count = await repo.update_where({"display_name": "x"}, criterion)
        await uow.commit()

    assert count == 2
    after = await all_rows(database, tenant)
    assert [row["display_name"] for row in after] == ["x", "x", mine[2]["display_name"]]
    assert [row["version"] for row in after] == [2, 2, 1]
    assert after[2] == mine[2]
    assert await all_rows(database, other) == theirs


async def test_delete_where_touches_only_the_scoped_tenant(database: Database, tenant: str) -> None:
    other = other_tenant()
    await create_users(database, tenant, "keep", "drop1", "drop2")
    theirs = await create_users(database, other, "drop1", "drop2", "keep")

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        criterion = users.c.username.in_(["drop1", "drop2"]) & users.c.tenant_id.in_(
            [tenant, other]
        )
        assert await repo.delete_where(criterion) == 2
        await uow.commit()

    assert [row["username"] for row in await all_rows(database, tenant)] == ["keep"]
    assert await all_rows(database, other) == theirs

    # With no criterion at all, "every row" still means every row of this tenant.
    async with database.unit_of_work(tenant) as uow:
        assert await uow.repository(UserRepository).delete_where() == 1
        await uow.commit()
    assert await all_rows(database, tenant) == []
    assert await all_rows(database, other) == theirs


async def test_page_never_returns_another_tenants_rows(database: Database, tenant: str) -> None:
    other = other_tenant()
    # Interleave creation so the other tenant's rows sit between ours in time.
    mine, theirs = [], []
    for i in range(4):
        mine += await create_users(database, tenant, f"m{i}")
        theirs += await create_users(database, other, f"t{i}")

    seen: list[Any] = []
    async with database.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        after = None
        while True:
            rows, more = await repo.page(3, after)
            seen += rows
            if not more:
                break
            after = (rows[-1]["create_time"], rows[-1]["id"])
        # A cursor taken from the other tenant's rows does not reach them either.
        first_theirs = theirs[0]
        rows, _ = await repo.page(100, (first_theirs["create_time"], first_theirs["id"]))
        assert {row["tenant_id"] for row in rows} == {tenant}

    assert [row["id"] for row in seen] == [row["id"] for row in mine]
    assert {row["tenant_id"] for row in seen} == {tenant}


async def test_create_ignores_a_tenant_id_in_values(database: Database, tenant: str) -> None:
    other = other_tenant()
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        row = await repo.create(user("smuggler", tenant_id=other))
        # The scope's insert overrides it as well.
        await repo._execute(
            repo.scope.insert(
                [{**dict(row), "id": uuid.uuid4(), "email": "b@e.com", "username": "b"}]
            )
        )
        await uow.commit()

    assert row["tenant_id"] == tenant
    assert await fetch(database, tenant, row["id"]) == row
    assert await fetch(database, other, row["id"]) is None
    assert await all_rows(database, other) == []
    assert {r["username"] for r in await all_rows(database, tenant)} == {"smuggler", "b"}


async def test_batch_create_ignores_a_tenant_id_in_values(database: Database, tenant: str) -> None:
    other = other_tenant()
    values = [user(f"smuggler{i}", tenant_id=other) for i in range(3)]
    async with database.unit_of_work(tenant) as uow:
        rows = await uow.repository(UserRepository).create_many(values)
        await uow.commit()

    assert {row["tenant_id"] for row in rows} == {tenant}
    assert await all_rows(database, other) == []
    assert sorted(r["username"] for r in await all_rows(database, tenant)) == [
        "smuggler0",
        "smuggler1",
        "smuggler2",
    ]


async def test_an_insert_from_columns_takes_the_executing_scopes_tenant(
    database: Database, tenant: str
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("INSERT from unnested arrays is PostgreSQL's batch path")
    other = other_tenant()
    built_for_other = TenantScope(users, other)
    now = datetime.now(UTC)
    rows = [user("col0"), user("col1", tenant_id=other)]
    ids = {"id": [uuid.uuid4(), uuid.uuid4()], "tenant_id": [other] * 2}
    same = {"create_time": now, "update_time": now, "tenant_id": other}
    # Neither a row's tenant nor a tenant given for every row reaches the database.
    stmt, columns = built_for_other.insert_columns(rows, ids, same)
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        # A caller's own tenant parameter is overridden too.
        await repo._execute(stmt, {**columns, "repogate_tenant": other})
        await uow.commit()

    assert await all_rows(database, other) == []
    assert sorted(r["username"] for r in await all_rows(database, tenant)) == ["col0", "col1"]


async def test_repository_writes_refuse_a_tenant_change(database: Database, tenant: str) -> None:
    other = other_tenant()
    (row,) = await create_users(database, tenant, "stay")

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        with pytest.raises(ScopeViolation):
            await repo.update(row["id"], {"tenant_id": other})
        with pytest.raises(ScopeViolation):
            await repo.update_where({"tenant_id": other})
        with pytest.raises(ScopeViolation):
            await repo._execute(
                repo.scope.update({users.c.tenant_id: other}).where(users.c.id == row["id"])
            )
        await uow.commit()

    assert await fetch(database, tenant, row["id"]) == row
    assert await all_rows(database, other) == []


async def test_statements_not_built_by_a_scope_never_reach_the_database(
    database: Database, tenant: str
) -> None:
    (row,) = await create_users(database, tenant, "target")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        unscoped = [
            select(users),
            select(users).where(users.c.tenant_id == tenant),
            update(users).values(display_name="x"),
            delete(users),
            # Scoped, but to another table.
            TenantScope(sessions, tenant).select(),
        ]
        event.listen(database.engine.sync_engine, "before_cursor_execute", record)
        try:
            for stmt in unscoped:
                with pytest.raises(ScopeViolation):
                    await repo._execute(stmt)
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", record)
        assert statements == []
        # The scope's own statements, refined further, still carry the mark.
        scoped = repo.scope.select().where(users.c.id == row["id"]).limit(1)
        assert (await repo._execute(scoped)).mappings().one() == row
        await uow.commit()

    assert await fetch(database, tenant, row["id"]) == row


async def test_a_statement_runs_with_the_executing_scopes_tenant_whoever_built_it(
    database: Database, tenant: str
) -> None:
    other = other_tenant()
    (mine,) = await create_users(database, tenant, "mine")
    (theirs,) = await create_users(database, other, "theirs")
    built_for_other = TenantScope(users, other)

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        found = (await repo._execute(built_for_other.select())).mappings().all()
        assert [r["id"] for r in found] == [mine["id"]]
        # A caller's own tenant parameter is overridden, not obeyed.
        smuggled = await repo._execute(repo.scope.select(), {"repogate_tenant": other})
        assert [r["id"] for r in smuggled.mappings()] == [mine["id"]]
        deleted = await repo._execute(built_for_other.delete().where(users.c.id == theirs["id"]))
        assert deleted.rowcount == 0
        await uow.commit()

    assert await fetch(database, other, theirs["id"]) == theirs

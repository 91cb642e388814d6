"""Constraint and concurrency failures surface as domain errors, naming what failed."""

from __future__ import annotations

import uuid

import pytest

from repositories.database import Database
from repositories.errors import AlreadyExists, EtagMismatch, NotFound, ResourceDeleted
from repositories.users import UserRepository
from tests.integration.support import all_rows, create_users, fetch, other_tenant, user

CHANGED_BY_DELETE = {"version", "update_time", "delete_time", "updated_by"}

pytestmark = pytest.mark.integration


async def _create_expecting_conflict(database: Database, tenant: str, values: dict) -> str | None:
    async with database.unit_of_work(tenant) as uow:
        with pytest.raises(AlreadyExists) as err:
            await uow.repository(UserRepository).create(values)
    error = err.value
    assert error.reason == "RESOURCE_ALREADY_EXISTS"
    assert error.metadata["resource_type"] == "user"
    assert error.metadata["field"] == (error.field or "")
    # Neither SQL nor the conflicting values leak into the message.
    assert "INSERT" not in error.message.upper()
    assert values["email"] not in error.message
    return error.field


@pytest.mark.parametrize(
    "email", ["Ann@Example.com", "ann@example.com", "ANN@EXAMPLE.COM", "aNN@example.COM"]
)
async def test_duplicate_email_is_case_insensitive(
    database: Database, tenant: str, email: str
) -> None:
    (ann,) = await create_users(database, tenant, "ann", email="Ann@Example.com")
    field = await _create_expecting_conflict(database, tenant, user("other", email=email))
    assert field == "email"
    assert await all_rows(database, tenant) == [ann]


@pytest.mark.parametrize("username", ["Bob", "bob", "BOB"])
async def test_duplicate_username_is_case_insensitive(
    database: Database, tenant: str, username: str
) -> None:
    (bob,) = await create_users(database, tenant, "Bob")
    values = user("ignored", username=username)
    field = await _create_expecting_conflict(database, tenant, values)
    assert field == "username"
    assert await all_rows(database, tenant) == [bob]


async def test_update_into_a_taken_email_or_username(database: Database, tenant: str) -> None:
    first, second = await create_users(database, tenant, "first", "second")
    async with database.unit_of_work(tenant) as uow:
        with pytest.raises(AlreadyExists) as err:
            await uow.repository(UserRepository).update(
                second["id"], {"email": first["email"].upper()}
            )
    assert err.value.field == "email"
    async with database.unit_of_work(tenant) as uow:
        with pytest.raises(AlreadyExists) as err:
            await uow.repository(UserRepository).update(second["id"], {"username": "FIRST"})
    assert err.value.field == "username"
    assert await all_rows(database, tenant) == [first, second]


async def test_uniqueness_is_per_tenant(database: Database, tenant: str) -> None:
    other = other_tenant()
    (mine,) = await create_users(database, tenant, "shared")
    (theirs,) = await create_users(database, other, "shared")
    assert (mine["email"], mine["username"]) == (theirs["email"], theirs["username"])
    assert mine["id"] != theirs["id"]


async def test_matching_etag_updates_and_increments_the_version(
    database: Database, tenant: str
) -> None:
    (row,) = await create_users(database, tenant, "versioned")
    assert row["version"] == 1

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        v2 = await repo.update(row["id"], {"display_name": "two"}, expected_version=1)
        v3 = await repo.update(row["id"], {"display_name": "three"}, expected_version=2)
        # Without an expected version the write is unconditional, and still counts.
        v4 = await repo.update(row["id"], {"display_name": "four"})
        await uow.commit()

    assert [v2["version"], v3["version"], v4["version"]] == [2, 3, 4]
    assert v4["display_name"] == "four"
    assert v4["create_time"] == row["create_time"]
    assert await fetch(database, tenant, row["id"]) == v4


@pytest.mark.parametrize("stale", [0, 1, 3])
async def test_stale_etag_on_update_is_a_mismatch(
    database: Database, tenant: str, stale: int
) -> None:
    (row,) = await create_users(database, tenant, "stale")
    async with database.unit_of_work(tenant) as uow:
        current = await uow.repository(UserRepository).update(row["id"], {"display_name": "v2"})
        await uow.commit()
    assert current["version"] == 2

    async with database.unit_of_work(tenant) as uow:
        with pytest.raises(EtagMismatch) as err:
            await uow.repository(UserRepository).update(
                row["id"], {"display_name": "lost update"}, expected_version=stale
            )
        await uow.commit()

    assert err.value.reason == "ETAG_MISMATCH"
    assert err.value.metadata == {"resource_type": "user", "id": str(row["id"])}
    assert await fetch(database, tenant, row["id"]) == current


async def test_etag_on_delete(database: Database, tenant: str) -> None:
    (row,) = await create_users(database, tenant, "deleteme")

    async with database.unit_of_work(tenant) as uow:
        with pytest.raises(EtagMismatch):
            await uow.repository(UserRepository).delete(row["id"], expected_version=2)
        await uow.commit()
    assert await fetch(database, tenant, row["id"]) == row

    async with database.unit_of_work(tenant) as uow:
        deleted = await uow.repository(UserRepository).delete(row["id"], expected_version=1)
        await uow.commit()
    assert deleted["version"] == 2
    assert deleted["delete_time"] is not None
    assert {k: v for k, v in deleted.items() if k not in CHANGED_BY_DELETE} == {
        k: v for k, v in row.items() if k not in CHANGED_BY_DELETE
    }
    assert await fetch(database, tenant, row["id"]) == deleted

    async with database.unit_of_work(tenant) as uow:
        with pytest.raises(EtagMismatch):
            await uow.repository(UserRepository).delete(row["id"], 1, force=True)
        purged = await uow.repository(UserRepository).delete(row["id"], 2, force=True)
        await uow.commit()
    assert purged == deleted
    assert await fetch(database, tenant, row["id"]) is None


async def test_missing_id_is_not_found_for_every_method(database: Database, tenant: str) -> None:
    await create_users(database, tenant, "present")
    missing = uuid.uuid4()
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        attempts = [
            lambda: repo.get(missing),
            lambda: repo.update(missing, {"display_name": "x"}),
            # An etag does not turn a missing row into a mismatch.
            lambda: repo.update(missing, {"display_name": "x"}, expected_version=1),
            lambda: repo.delete(missing),
            lambda: repo.delete(missing, expected_version=1),
        ]
        for attempt in attempts:
            with pytest.raises(NotFound) as err:
                await attempt()
            assert err.value.reason == "RESOURCE_NOT_FOUND"
            assert err.value.metadata == {"resource_type": "user", "id": str(missing)}


async def test_deleted_row_refuses_writes_and_purged_row_is_not_found(
    database: Database, tenant: str
) -> None:
    (row,) = await create_users(database, tenant, "gone")
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        await repo.delete(row["id"])
        with pytest.raises(ResourceDeleted):
            await repo.delete(row["id"])
        with pytest.raises(ResourceDeleted):
            await repo.update(row["id"], {"display_name": "ghost"})
        await repo.delete(row["id"], force=True)
        with pytest.raises(NotFound):
            await repo.delete(row["id"], force=True)
        with pytest.raises(NotFound):
            await repo.update(row["id"], {"display_name": "ghost"})
        with pytest.raises(NotFound):
            await repo.undelete(row["id"])

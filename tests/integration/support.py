"""Helpers shared by the integration tests: users' values, rows inserted as-is."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from repositories.base import Row
from repositories.database import Database
from repositories.errors import NotFound
from repositories.users import UserRepository

# A fixed instant far from "now", for rows whose create_time a test chooses.
BASE_TIME = datetime(2031, 5, 17, 8, 30, tzinfo=UTC)


def other_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def user(tag: str, **overrides: Any) -> dict[str, Any]:
    """Values for a valid user whose email and username are derived from `tag`."""
    return {
        "email": f"{tag}@example.com",
        "username": tag,
        "display_name": f"User {tag}",
        "is_active": True,
        **overrides,
    }


def raw_row(tag: str, create_time: datetime, id_: uuid.UUID | None = None) -> dict[str, Any]:
    """A complete row for `scope.insert`, with the create_time the test chooses."""
    return {
        **user(tag),
        "id": id_ or uuid.uuid4(),
        "version": 1,
        "create_time": create_time,
        "update_time": create_time,
    }


async def create_users(db: Database, tenant: str, *tags: str, **overrides: Any) -> list[Row]:
    """Creates and commits one user per tag in `tenant`."""
    async with db.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        rows = [await repo.create(user(tag, **overrides)) for tag in tags]
        await uow.commit()
    return rows


async def insert_rows(db: Database, tenant: str, rows: list[Mapping[str, Any]]) -> None:
    """Inserts complete rows through the repository's scope (chosen ids and times)."""
    async with db.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        await repo._execute(repo.scope.insert(rows))
        await uow.commit()


async def fetch(db: Database, tenant: str, id_: uuid.UUID) -> Row | None:
    """The row as `tenant` sees it now, or None."""
    async with db.unit_of_work(tenant, read_only=True) as uow:
        try:
            return await uow.repository(UserRepository).get(id_)
        except NotFound:
            return None


async def all_rows(db: Database, tenant: str) -> list[Row]:
    async with db.unit_of_work(tenant, read_only=True) as uow:
        rows, more = await uow.repository(UserRepository).page(10_000)
    assert not more
    return rows

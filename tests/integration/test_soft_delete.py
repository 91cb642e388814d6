"""Repository.delete_many on real databases: soft and forced deletes in one call,
all-or-nothing batches, and how many statements a batch costs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from repositories.base import Row
from repositories.database import Database
from repositories.errors import DomainError, EtagMismatch, NotFound, ResourceDeleted
from repositories.users import UserRepository
from tests.integration.support import create_users, fetch, other_tenant

pytestmark = pytest.mark.integration

Item = tuple[uuid.UUID, int | None, bool]


async def soft_delete(database: Database, tenant: str, row: Row) -> Row:
    async with database.unit_of_work(tenant) as uow:
        deleted = await uow.repository(UserRepository).delete(row["id"])
        await uow.commit()
    return deleted


async def snapshot(database: Database, tenant: str, rows: list[Row]) -> list[Row | None]:
    """Each row as a fresh unit of work reads it now (None: gone)."""
    return [await fetch(database, tenant, row["id"]) for row in rows]


@contextmanager
def statements(database: Database) -> Iterator[list[str]]:
    """Collects the SQL sent on the test database's engine while the block runs."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_delete_many_soft_and_forced_in_one_call(database: Database, tenant: str) -> None:
    live_a, live_b, live_c, was_deleted, bystander = await create_users(
        database, tenant, "a", "b", "c", "d", "e"
    )
    was_deleted = await soft_delete(database, tenant, was_deleted)
    items: list[Item] = [
        (live_a["id"], None, False),  # soft, unconditional
        (live_b["id"], 1, True),  # forced, pinned to its version
        (live_c["id"], 1, False),  # soft, pinned
        (was_deleted["id"], 2, True),  # forced purge of a soft-deleted row
    ]

    async with database.unit_of_work(tenant, actor="cleaner") as uow:
        done = await uow.repository(UserRepository).delete_many(items, retention=timedelta(hours=1))
        await uow.commit()

    assert [row["id"] for row in done] == [id_ for id_, _, _ in items]
    soft_a, forced_b, soft_c, forced_d = done
    for soft, before in ((soft_a, live_a), (soft_c, live_c)):
        assert soft["version"] == before["version"] + 1
        assert soft["delete_time"] is not None
        assert soft["purge_time"] == soft["delete_time"] + timedelta(hours=1)
        assert soft["update_time"] == soft["delete_time"]
        assert soft["updated_by"] == "cleaner"
        assert (soft["email"], soft["create_time"]) == (before["email"], before["create_time"])
    # One soft statement: one instant for every row it deleted.
    assert soft_a["delete_time"] == soft_c["delete_time"]
    # Forced rows come back as they were left, untouched by the soft statement.
    assert forced_b == live_b
    assert forced_d == was_deleted
    assert await snapshot(database, tenant, [live_a, live_b, live_c, was_deleted, bystander]) == [
        soft_a,
        None,
        soft_c,
        None,
        bystander,
    ]


async def test_delete_many_of_nothing_but_forced_soft_deleted_rows(
    database: Database, tenant: str
) -> None:
    first, second = await create_users(database, tenant, "first", "second")
    first, second = [await soft_delete(database, tenant, row) for row in (first, second)]

    async with database.unit_of_work(tenant) as uow:
        done = await uow.repository(UserRepository).delete_many(
            [(second["id"], None, True), (first["id"], 2, True)]
        )
        await uow.commit()

    assert done == [second, first]
    assert await snapshot(database, tenant, [first, second]) == [None, None]


def _failing_batches() -> dict[str, tuple[type[DomainError], Any]]:
    """name -> (error, items builder over (live rows, soft-deleted row, missing id, foreign id)).
    The offender sits in the middle of the batch, after items that would succeed."""
    return {
        "stale soft": (
            EtagMismatch,
            lambda live, gone, missing, foreign: (
                [(live[0]["id"], None, False), (live[1]["id"], 7, False), (live[2]["id"], 1, True)],
                live[1]["id"],
            ),
        ),
        "stale forced": (
            EtagMismatch,
            lambda live, gone, missing, foreign: (
                [(live[0]["id"], 1, False), (gone["id"], 1, True), (live[2]["id"], None, True)],
                gone["id"],
            ),
        ),
        "missing soft": (
            NotFound,
            lambda live, gone, missing, foreign: (
                [(live[0]["id"], None, False), (missing, None, False), (live[1]["id"], 1, True)],
                missing,
            ),
        ),
        "missing forced": (
            NotFound,
            lambda live, gone, missing, foreign: (
                [(live[0]["id"], None, False), (live[1]["id"], None, True), (missing, None, True)],
                missing,
            ),
        ),
        "already deleted": (
            ResourceDeleted,
            lambda live, gone, missing, foreign: (
                [(live[0]["id"], None, False), (gone["id"], None, False), (live[1]["id"], 1, True)],
                gone["id"],
            ),
        ),
        "another tenant's": (
            NotFound,
            lambda live, gone, missing, foreign: (
                [
                    (live[0]["id"], None, True),
                    (foreign["id"], None, False),
                    (live[1]["id"], 1, False),
                ],
                foreign["id"],
            ),
        ),
    }


FAILING = _failing_batches()


@pytest.mark.parametrize("case", sorted(FAILING))
async def test_a_batch_with_one_bad_item_changes_nothing(
    database: Database, tenant: str, case: str
) -> None:
    live = await create_users(database, tenant, "one", "two", "three")
    (gone,) = await create_users(database, tenant, "gone")
    gone = await soft_delete(database, tenant, gone)
    foreign_tenant = other_tenant()
    (foreign,) = await create_users(database, foreign_tenant, "one")
    error_type, build = FAILING[case]
    items, offender = build(live, gone, uuid.uuid4(), foreign)
    before = await snapshot(database, tenant, [*live, gone])

    async with database.unit_of_work(tenant) as uow:
        with pytest.raises(error_type) as err:
            await uow.repository(UserRepository).delete_many(items)

    assert err.value.metadata == {"resource_type": "user", "id": str(offender)}
    assert await snapshot(database, tenant, [*live, gone]) == before == [*live, gone]
    assert await fetch(database, foreign_tenant, foreign["id"]) == foreign


# Users purged (forced) are first looked for in sessions (USER_HAS_SESSIONS): one SELECT.
@pytest.mark.parametrize(
    ("soft", "forced", "expected"),
    [
        (5, 0, ["UPDATE"]),
        (0, 5, ["SELECT", "DELETE"]),
        (5, 5, ["SELECT", "UPDATE", "DELETE"]),
        (1, 1, ["SELECT", "UPDATE", "DELETE"]),
    ],
)
async def test_delete_many_takes_one_statement_per_kind(
    database: Database, tenant: str, soft: int, forced: int, expected: list[str]
) -> None:
    rows = await create_users(database, tenant, *(f"u{i}" for i in range(soft + forced)))
    # Half the items pinned to a version, half not: both kinds share the statement.
    items: list[Item] = [(row["id"], 1 if i % 2 else None, i >= soft) for i, row in enumerate(rows)]

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        await repo.get(rows[0]["id"])  # the transaction (BEGIN) is under way before counting
        with statements(database) as sent:
            done = await repo.delete_many(items)
        await uow.commit()

    assert [statement.split()[0].upper() for statement in sent] == expected, sent
    assert [row["id"] for row in done] == [row["id"] for row in rows]
    assert await snapshot(database, tenant, rows) == [
        row if not force else None for row, (_, _, force) in zip(done, items, strict=True)
    ]

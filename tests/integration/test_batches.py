"""The repository's batch statements: how many statements a batch costs, row order, and
all-or-nothing behaviour inside one unit of work."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event

from repositories.database import Database
from repositories.errors import AlreadyExists, NotFound
from repositories.users import UserRepository
from tests.integration.support import all_rows, create_users, fetch, user

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Executed:
    statement: str
    executemany: bool


@contextmanager
def statements(db: Database) -> Iterator[list[Executed]]:
    """Every statement sent to the database (cursor executions) while in the block."""
    seen: list[Executed] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        seen.append(Executed(" ".join(statement.split()), executemany))

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _on_users(seen: list[Executed], verb: str) -> list[Executed]:
    pattern = re.compile(rf"{verb}\b.*\busers\b", re.IGNORECASE)
    return [each for each in seen if pattern.match(each.statement)]


async def test_create_many_is_one_insert_statement(database: Database, tenant: str) -> None:
    values = [user(f"bulk{i:03}") for i in range(500)]

    with statements(database) as seen:
        async with database.unit_of_work(tenant) as uow:
            rows = await uow.repository(UserRepository).create_many(values)
            await uow.commit()

    inserts = [each for each in seen if each.statement.upper().startswith("INSERT")]
    assert len(inserts) == 1, [each.statement[:80] for each in inserts]
    (insert,) = inserts
    # One statement carrying every row, never one per row: on PostgreSQL an INSERT from
    # unnested column arrays, one parameter per column; elsewhere SQLAlchemy's
    # insertmanyvalues renders the executemany as multi-row INSERTs, 1000 rows a batch.
    if database.dialect == "postgresql":
        assert "unnest(" in insert.statement
        assert insert.statement.count("$") < 20
    else:
        assert insert.statement.count("?") >= 500 * 10
    assert re.match(r"INSERT INTO users\b", insert.statement, re.IGNORECASE)
    # Everything else was transaction control: no per-row statements hide elsewhere.
    others = [each.statement for each in seen if each is not insert]
    assert all(not re.match(r"(INSERT|UPDATE|DELETE|SELECT)\b", s, re.I) for s in others), others
    # The rows come back in the order given, and that is what was stored.
    assert [row["username"] for row in rows] == [each["username"] for each in values]
    assert len({row["id"] for row in rows}) == 500
    stored = {row["id"]: row for row in await all_rows(database, tenant)}
    assert [stored[row["id"]] for row in rows] == rows


async def test_create_many_conflicting_with_a_stored_row_writes_nothing(
    database: Database, tenant: str
) -> None:
    (existing,) = await create_users(database, tenant, "taken")
    created: list[uuid.UUID] = []

    async def doomed() -> None:
        async with database.unit_of_work(tenant) as uow:
            repo = uow.repository(UserRepository)
            created.extend(row["id"] for row in await repo.create_many([user("fresh")]))
            await repo.create_many([user("other"), user("TAKEN", username="taken2")])

    with pytest.raises(AlreadyExists) as err:
        await doomed()

    assert err.value.field == "email"
    assert len(created) == 1
    assert await fetch(database, tenant, created[0]) is None
    assert await all_rows(database, tenant) == [existing]


async def test_get_many_is_one_select_in_the_order_asked(database: Database, tenant: str) -> None:
    rows = await create_users(database, tenant, *(f"get{i:03}" for i in range(300)))
    wanted = [row["id"] for row in reversed(rows)] + [rows[7]["id"]]

    with statements(database) as seen:
        async with database.unit_of_work(tenant, read_only=True) as uow:
            got = await uow.repository(UserRepository).get_many(wanted)

    assert [row["id"] for row in got] == wanted
    assert got[-1] == rows[7]
    assert len(_on_users(seen, "SELECT")) == 1


async def test_get_many_names_the_first_missing_id(database: Database, tenant: str) -> None:
    (known,) = await create_users(database, tenant, "known")
    first, second = uuid.uuid4(), uuid.uuid4()

    with pytest.raises(NotFound) as err:
        async with database.unit_of_work(tenant, read_only=True) as uow:
            await uow.repository(UserRepository).get_many([known["id"], first, second])

    assert err.value.metadata["id"] == str(first)


async def test_delete_many_is_one_statement_per_kind(database: Database, tenant: str) -> None:
    rows = await create_users(database, tenant, *(f"del{i:03}" for i in range(200)))
    items = [
        (row["id"], row["version"] if i % 3 else None, i % 2 == 0) for i, row in enumerate(rows)
    ]

    with statements(database) as seen:
        async with database.unit_of_work(tenant) as uow:
            done = await uow.repository(UserRepository).delete_many(items)
            await uow.commit()

    assert len(_on_users(seen, "UPDATE")) == 1
    assert len(_on_users(seen, "DELETE")) == 1
    assert [row["id"] for row in done] == [row["id"] for row in rows]
    for (id_, _, force), row in zip(items, done, strict=True):
        stored = await fetch(database, tenant, id_)
        if force:
            assert stored is None
        else:
            assert stored == row
            assert stored is not None
            assert stored["delete_time"] is not None


async def test_delete_many_is_all_or_nothing(database: Database, tenant: str) -> None:
    rows = await create_users(database, tenant, "keep1", "keep2")
    missing = uuid.uuid4()

    async def doomed() -> None:
        async with database.unit_of_work(tenant) as uow:
            await uow.repository(UserRepository).delete_many(
                [(rows[0]["id"], None, False), (missing, None, False), (rows[1]["id"], None, True)]
            )
            await uow.commit()

    with pytest.raises(NotFound) as err:
        await doomed()

    assert err.value.metadata["id"] == str(missing)
    assert await all_rows(database, tenant) == rows

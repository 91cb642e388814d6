"""The entity tables' change log on real PostgreSQL: what each kind of write records,
when a reader following it by snapshots sees it, and how an entry reads back as
Changes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from repositories import change_log
from repositories.changes import Changes
from repositories.database import create_engine
from repositories.migrate import upgrade
from tests.conftest import POSTGRES_URL, _admin_connect, _plain_dsn

pytestmark = pytest.mark.integration


@dataclass
class Reader:
    """A writer's connection, and a reader following the log as server/coherence.py does."""

    dsn: str
    writer: asyncpg.Connection
    conn: asyncpg.Connection
    snapshot: str = ""

    async def read(self) -> list[Changes]:
        """What committed since the previous read."""
        row = await self.conn.fetchrow(change_log.SINCE, self.snapshot)
        assert row is not None
        self.snapshot = row["taken"]
        return [change_log.parse(payload) for payload in row["payloads"]]

    async def since(self, action: str, *args: object) -> list[Changes]:
        """Runs `action` on the writer and returns what it recorded."""
        await self.read()
        await self.writer.execute(action, *args)
        return await self.read()


@pytest.fixture(scope="module")
async def dsn() -> AsyncIterator[str]:
    """A migrated database of the module's own: a TRUNCATE here touches no other test."""
    admin = await _admin_connect()
    name = f"repogate_change_log_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        await upgrade(engine)
        yield _plain_dsn(url)
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def reader(dsn: str) -> AsyncIterator[Reader]:
    writer, conn = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        yield Reader(dsn, writer, conn, await conn.fetchval(change_log.SNAPSHOT))
    finally:
        await writer.close()
        await conn.close()


INSERT = (
    "INSERT INTO users (tenant_id, id, version, create_time, update_time, email, username, "
    "display_name, is_active) SELECT $1::text || (g % $3), gen_random_uuid(), 1, now(), now(), "
    "'u' || g || '@example.com', 'u' || g, '', true FROM generate_series(1, $2) g "
    "RETURNING tenant_id, id"
)
BUMP = "UPDATE users SET version = version + 1 WHERE id = $1"


async def insert(reader: Reader, tenant: str, rows: int = 1, tenants: int = 1) -> list[uuid.UUID]:
    """`rows` users spread over `tenants` tenants named `tenant` followed by a number."""
    return [row["id"] for row in await reader.writer.fetch(INSERT, tenant, rows, tenants)]


async def test_an_insert_records_nothing(reader: Reader) -> None:
    await reader.read()
    await insert(reader, "t-insert")

    assert await reader.read() == []


async def test_an_update_names_each_row_with_its_version(reader: Reader) -> None:
    ann, bob = await insert(reader, "t-update", 2)

    (changes,) = await reader.since(
        "UPDATE users SET version = version + 1 WHERE tenant_id = 't-update0'"
    )

    assert sorted(changes.rows) == sorted(
        [("users", "t-update0", ann, 2), ("users", "t-update0", bob, 2)]
    )
    assert (changes.tables, changes.everywhere) == (set(), set())


async def test_a_delete_marks_its_rows_gone(reader: Reader) -> None:
    (ann,) = await insert(reader, "t-delete")

    (changes,) = await reader.since("DELETE FROM users WHERE id = $1", ann)

    assert changes.rows == [("users", "t-delete0", ann, None)]


async def test_a_statement_that_changes_nothing_records_nothing(reader: Reader) -> None:
    assert await reader.since("UPDATE users SET version = 0 WHERE tenant_id = 'nobody'") == []
    assert await reader.since("DELETE FROM users WHERE tenant_id = 'nobody'") == []


async def test_a_transaction_is_read_once_it_commits_and_a_rollback_never(reader: Reader) -> None:
    (ann,) = await insert(reader, "t-tx")
    await reader.read()

    rolled_back = reader.writer.transaction()
    await rolled_back.start()
    await reader.writer.execute(BUMP, ann)
    await rolled_back.rollback()
    after_rollback = await reader.read()
    committed = reader.writer.transaction()
    await committed.start()
    await reader.writer.execute(BUMP, ann)
    while_open = await reader.read()
    await committed.commit()
    after_commit = await reader.read()
    again = await reader.read()

    assert after_rollback == while_open == again == []
    assert [changes.rows for changes in after_commit] == [[("users", "t-tx0", ann, 2)]]


async def test_a_transaction_older_than_the_last_read_is_read_when_it_commits(
    reader: Reader,
) -> None:
    """It began before the reader's snapshot and committed after: the snapshot's list of
    transactions in progress is what finds it."""
    ann, bob = await insert(reader, "t-long", 2)
    long = reader.writer.transaction()
    await long.start()
    await reader.writer.execute(BUMP, ann)  # takes its transaction id now
    await reader.read()
    other = await asyncpg.connect(reader.dsn)
    try:
        await other.execute(BUMP, bob)  # begins and commits after the long one began
    finally:
        await other.close()
    meanwhile = await reader.read()
    await long.commit()
    at_commit = await reader.read()

    assert [changes.rows for changes in meanwhile] == [[("users", "t-long0", bob, 2)]]
    assert [changes.rows for changes in at_commit] == [[("users", "t-long0", ann, 2)]]


async def test_rows_beyond_the_limit_are_recorded_by_tenant(reader: Reader) -> None:
    await insert(reader, "t-many", rows=change_log.MAX_ROWS + 100, tenants=2)

    changes = await reader.since(
        "UPDATE users SET version = version + 1 WHERE tenant_id LIKE 't-many%'"
    )

    assert changes == [Changes(tables={("users", "t-many0"), ("users", "t-many1")})]


async def test_tenants_beyond_the_limit_record_the_whole_table(reader: Reader) -> None:
    rows = change_log.MAX_ROWS + 100
    await insert(reader, "t-tenants-", rows=rows, tenants=rows)

    changes = await reader.since("DELETE FROM users WHERE tenant_id LIKE 't-tenants-%'")

    assert changes == [Changes(everywhere={"users"})]


async def test_a_truncate_records_each_table_it_empties(reader: Reader) -> None:
    await insert(reader, "t-truncate")

    recorded = await reader.since("TRUNCATE users CASCADE")

    assert {table for changes in recorded for table in changes.everywhere} == {
        "users",
        "sessions",
        "messages",
    }


async def test_trimming_keeps_what_a_reader_has_yet_to_read(reader: Reader) -> None:
    (ann,) = await insert(reader, "t-trim")
    await reader.writer.execute(BUMP, ann)
    await reader.read()
    await reader.writer.execute(BUMP, ann)

    await reader.writer.execute(change_log.FORGET_BEFORE, reader.snapshot)
    left = await reader.conn.fetchval(f"SELECT count(*) FROM {change_log.TABLE}")
    unread = await reader.read()

    assert left == 1  # the entry read before the trim's snapshot went, the unread one stayed
    assert [changes.rows for changes in unread] == [[("users", "t-trim0", ann, 3)]]


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "{}",
        '{"t": 1}',
        '{"t": "users", "r": [["t", "not-a-uuid", 1]]}',
        '{"t": "users", "r": [[1, 2]]}',
    ],
)
def test_an_unreadable_entry_is_refused(payload: str) -> None:
    with pytest.raises(ValueError, match="unreadable"):
        change_log.parse(payload)

"""The entity tables' change notifications on real PostgreSQL: what each kind of write
announces, when, and how the announcement reads back as Changes."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from repositories import notify
from repositories.changes import Changes
from repositories.database import create_engine
from repositories.migrate import upgrade
from tests.conftest import POSTGRES_URL, _admin_connect, _plain_dsn

pytestmark = pytest.mark.integration

# The channel a test marks its place on: PostgreSQL delivers in commit order, so once
# the mark arrives every notification committed before it has too.
MARK = "test_notify_mark"
_marks = itertools.count()


@dataclass
class Heard:
    writer: asyncpg.Connection
    listener: asyncpg.Connection
    payloads: list[str]

    async def since(self, action: str, *args: object) -> list[str]:
        """Runs `action` on the writer and returns what was announced meanwhile."""
        await self.drain()
        await self.writer.execute(action, *args)
        return await self.drain()

    async def drain(self) -> list[str]:
        mark = str(next(_marks))
        arrived = asyncio.Event()

        def on_mark(*args: object) -> None:
            if args[3] == mark:
                arrived.set()

        await self.listener.add_listener(MARK, on_mark)
        try:
            # From the listener's own session: it commits at once, whatever the writer's
            # transaction is doing, so the writer's commits are heard first or not yet.
            await self.listener.execute(f"NOTIFY {MARK}, '{mark}'")
            await asyncio.wait_for(arrived.wait(), 10)
        finally:
            await self.listener.remove_listener(MARK, on_mark)
        taken, self.payloads[:] = list(self.payloads), []
        return taken


@pytest.fixture(scope="module")
async def dsn() -> AsyncIterator[str]:
    """A migrated database of the module's own: a TRUNCATE here touches no other test."""
    admin = await _admin_connect()
    name = f"repogate_notify_{uuid.uuid4().hex[:12]}"
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
async def heard(dsn: str) -> AsyncIterator[Heard]:
    writer, listener = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    payloads: list[str] = []
    await listener.add_listener(notify.CHANNEL, lambda *args: payloads.append(args[3]))
    try:
        yield Heard(writer, listener, payloads)
    finally:
        await writer.close()
        await listener.close()


INSERT = (
    "INSERT INTO users (tenant_id, id, version, create_time, update_time, email, username, "
    "display_name, is_active) SELECT $1::text || (g % $3), gen_random_uuid(), 1, now(), now(), "
    "'u' || g || '@example.com', 'u' || g, '', true FROM generate_series(1, $2) g "
    "RETURNING tenant_id, id"
)


async def insert(heard: Heard, tenant: str, rows: int = 1, tenants: int = 1) -> list[uuid.UUID]:
    """`rows` users spread over `tenants` tenants named `tenant` followed by a number."""
    return [row["id"] for row in await heard.writer.fetch(INSERT, tenant, rows, tenants)]


async def test_an_insert_announces_nothing(heard: Heard) -> None:
    await heard.drain()
    await insert(heard, "t-insert")

    assert await heard.drain() == []


async def test_an_update_names_each_row_with_its_version(heard: Heard) -> None:
    ann, bob = await insert(heard, "t-update", 2)

    (payload,) = await heard.since(
        "UPDATE users SET version = version + 1 WHERE tenant_id = 't-update0'"
    )

    changes = notify.parse(payload)
    assert sorted(changes.rows) == sorted(
        [("users", "t-update0", ann, 2), ("users", "t-update0", bob, 2)]
    )
    assert (changes.tables, changes.everywhere) == (set(), set())


async def test_a_delete_marks_its_rows_gone(heard: Heard) -> None:
    (ann,) = await insert(heard, "t-delete")

    (payload,) = await heard.since("DELETE FROM users WHERE id = $1", ann)

    assert notify.parse(payload).rows == [("users", "t-delete0", ann, None)]


async def test_a_statement_that_changes_nothing_announces_nothing(heard: Heard) -> None:
    assert await heard.since("UPDATE users SET version = 0 WHERE tenant_id = 'nobody'") == []
    assert await heard.since("DELETE FROM users WHERE tenant_id = 'nobody'") == []


async def test_a_transaction_announces_at_commit_and_a_rollback_never(heard: Heard) -> None:
    (ann,) = await insert(heard, "t-tx")
    bump = "UPDATE users SET version = version + 1 WHERE id = $1"

    rolled_back = heard.writer.transaction()
    await rolled_back.start()
    await heard.writer.execute(bump, ann)
    await rolled_back.rollback()
    after_rollback = await heard.drain()
    committed = heard.writer.transaction()
    await committed.start()
    await heard.writer.execute(bump, ann)
    before_commit = await heard.drain()
    await committed.commit()
    after_commit = await heard.drain()

    assert after_rollback == before_commit == []
    assert [notify.parse(p).rows for p in after_commit] == [[("users", "t-tx0", ann, 2)]]


async def test_rows_that_do_not_fit_are_announced_by_tenant(heard: Heard) -> None:
    await insert(heard, "t-many", rows=300, tenants=2)

    (payload,) = await heard.since(
        "UPDATE users SET version = version + 1 WHERE tenant_id LIKE 't-many%'"
    )

    assert len(payload) <= notify.PAYLOAD_LIMIT
    assert notify.parse(payload) == Changes(tables={("users", "t-many0"), ("users", "t-many1")})


async def test_tenants_that_do_not_fit_announce_the_whole_table(heard: Heard) -> None:
    await insert(heard, "t-tenants-with-rather-long-names-", rows=400, tenants=400)

    (payload,) = await heard.since("DELETE FROM users WHERE tenant_id LIKE 't-tenants-%'")

    assert notify.parse(payload) == Changes(everywhere={"users"})


async def test_a_truncate_announces_each_table_it_empties(heard: Heard) -> None:
    await insert(heard, "t-truncate")

    payloads = await heard.since("TRUNCATE users CASCADE")

    announced = Changes()
    for payload in payloads:
        announced.extend(notify.parse(payload))
    assert announced.everywhere == {"users", "sessions", "messages"}


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
def test_an_unreadable_payload_is_refused(payload: str) -> None:
    with pytest.raises(ValueError, match="unreadable"):
        notify.parse(payload)

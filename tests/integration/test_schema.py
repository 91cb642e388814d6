"""The migrated schema is the schema the code describes (repositories.tables), and
migration 0002 goes down and up again without losing what it should keep."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories import change_log
from repositories.database import Database, create_engine
from repositories.errors import AlreadyExists
from repositories.messages import MessageRepository
from repositories.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    lock_for_migration,
    upgrade,
)
from repositories.sessions import SessionRepository
from repositories.tables import jobs, messages, metadata, request_ids, sessions, users
from repositories.users import UserRepository
from tests.conftest import POSTGRES_URL, _admin_connect
from tests.integration.support import create_users, fetch, user

pytestmark = pytest.mark.integration

PARTIAL_UNIQUE = {"uq_users_tenant_email": "email", "uq_users_tenant_username": "username"}
PLAIN_INDEXES = {"ix_users_tenant_create_time", "ix_users_purge_time"}

# SQLAlchemy cannot reflect expression indexes on SQLite (lower(email)); it skips
# them with a warning, and alembic then skips comparing them, with another. Those
# two indexes are checked by their DDL instead (index_definitions below).
EXPRESSION_INDEX_WARNINGS = [
    "ignore:Skipped unsupported reflection of expression-based index",
    "ignore:autogenerate skipping metadata-specified expression-based index",
]


def described(name: str | None, type_: str, parent_names: Any) -> bool:
    """Leaves out, before reflecting it, the change log: the migrations' own table, read
    with plain SQL only (repositories/change_log.py)."""
    return not (type_ == "table" and name == change_log.TABLE)


def schema_diff(conn: Connection, target: MetaData = metadata) -> list[Any]:
    dialect = conn.dialect.name

    def made_here(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        # Alembic ignores Index.ddl_if: leave out what the metadata makes on another
        # dialect only (the GIN index on messages.content is PostgreSQL's).
        ddl_if = getattr(obj, "_ddl_if", None)
        return reflected or ddl_if is None or ddl_if.dialect in (None, dialect)

    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_object": made_here,
            "include_name": described,
        },
    )
    return list(compare_metadata(context, target))


def index_definitions(conn: Connection, table: str) -> dict[str, str]:
    """Index name -> its DDL as the database keeps it, squeezed for comparison:
    lower case, no whitespace, no parentheses, no ::text casts."""
    if conn.dialect.name == "sqlite":
        rows = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = :table AND sql IS NOT NULL"
            ),
            {"table": table},
        )
    else:
        rows = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE tablename = :table AND schemaname = current_schema()"
            ),
            {"table": table},
        )
    return {name: re.sub(r"\s|\(|\)|::text", "", ddl.lower()) for name, ddl in rows}


def assert_partial_unique(definitions: dict[str, str]) -> None:
    for name, column in PARTIAL_UNIQUE.items():
        ddl = definitions[name]
        assert ddl.startswith(f"createuniqueindex{name}on"), ddl
        assert f"tenant_id,lower{column}" in ddl, ddl
        assert ddl.endswith("wheredelete_timeisnull"), ddl


async def run_sync(engine: AsyncEngine, fn: Any, *args: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(fn, *args)


# ------------------------------------------------------------ head == tables.py


@pytest.mark.filterwarnings(*EXPRESSION_INDEX_WARNINGS)
async def test_migrated_database_matches_the_table_metadata(database: Database) -> None:
    assert await current_revision(database.engine) == head_revision()

    diff = await run_sync(database.engine, schema_diff)

    assert diff == []
    # The comparison sees the database: against no tables at all, it would drop ours.
    removed = await run_sync(database.engine, schema_diff, MetaData())
    assert {entry[1].name for entry in removed if entry[0] == "remove_table"} == {
        "users",
        "request_ids",
        "sessions",
        "messages",
        "jobs",
        "transaction_outcomes",
        "repogate_schema",
    }


async def test_indexes_are_the_ones_the_metadata_names(database: Database) -> None:
    definitions = await run_sync(database.engine, index_definitions, "users")

    expected = {index.name for index in users.indexes}
    assert expected == set(PARTIAL_UNIQUE) | PLAIN_INDEXES
    # PostgreSQL lists the primary key's index too; SQLite keeps it implicit.
    assert set(definitions) - {"pk_users"} == expected
    assert_partial_unique(definitions)
    assert definitions["ix_users_purge_time"].endswith("wherepurge_timeisnotnull")
    request_definitions = await run_sync(database.engine, index_definitions, "request_ids")
    assert set(request_definitions) - {"pk_request_ids"} == {
        index.name for index in request_ids.indexes
    }


@pytest.mark.parametrize("table", [sessions, messages, jobs], ids=lambda table: table.name)
async def test_domain_tables_have_the_indexes_the_metadata_names(
    database: Database, table: Table
) -> None:
    definitions = await run_sync(database.engine, index_definitions, table.name)

    here = database.dialect
    expected = {
        index.name
        for index in table.indexes
        if getattr(index, "_ddl_if", None) is None or index._ddl_if.dialect == here
    }
    assert set(definitions) - {f"pk_{table.name}"} == expected
    if table is jobs:
        queue = definitions["ix_jobs_queue_job_type"]
        assert "tenant_id,job_type,prioritydesc,enqueue_time,id" in queue, queue
        assert queue.endswith("wherestatus='pending'anddelete_timeisnull"), queue
    if table is messages:
        unique = definitions["uq_messages_tenant_session_id_sequence_number"]
        assert unique.startswith("createuniqueindex"), unique
        assert ("ix_messages_content" in definitions) == (here == "postgresql")


# ------------------------------------------------------------ 0002 down and up


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database of its own, migrated to head, for tests that move its schema."""
    if request.param == "sqlite":
        db = Database(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"))
        await upgrade(db.engine)
        yield db
        await db.dispose()
        return
    admin = await _admin_connect()  # skips, or fails under REPOGATE_TEST_REQUIRE_POSTGRES=1
    name = f"repogate_schema_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(create_engine(url))
    try:
        await upgrade(db.engine)
        yield db
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _downgrade(conn: Connection, revision: str) -> None:
    lock_for_migration(conn)
    config = alembic_config()
    config.attributes["connection"] = conn
    command.downgrade(config, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """As repositories.migrate.upgrade does it: one write transaction."""
    async with engine.connect() as conn:
        await conn.execution_options(repogate_write=True)
        await conn.run_sync(_downgrade, revision)
        await conn.commit()


def columns(conn: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(conn).get_columns(table)}


async def soft_delete(db: Database, tenant: str, id_: uuid.UUID, *, force: bool = False) -> None:
    async with db.unit_of_work(tenant) as uow:
        await uow.repository(UserRepository).delete(id_, force=force)
        await uow.commit()


@pytest.mark.filterwarnings(*EXPRESSION_INDEX_WARNINGS)
async def test_0002_downgrades_and_upgrades_again(fresh: Database) -> None:
    tenant = "t-round-trip"
    kept, gone = await create_users(fresh, tenant, "kept", "gone")
    await soft_delete(fresh, tenant, gone["id"])

    await downgrade(fresh.engine, "0001")

    assert await current_revision(fresh.engine) == "0001"
    assert await run_sync(fresh.engine, columns, "users") == {
        "tenant_id",
        "id",
        "email",
        "username",
        "display_name",
        "is_active",
        "version",
        "create_time",
        "update_time",
    }
    tables = await run_sync(fresh.engine, lambda c: set(inspect(c).get_table_names()))
    assert "request_ids" not in tables
    definitions = await run_sync(fresh.engine, index_definitions, "users")
    for name, column in PARTIAL_UNIQUE.items():
        # Unique over every row again, as 0001 made them.
        assert definitions[name].startswith(f"createuniqueindex{name}on")
        assert definitions[name].endswith(f"tenant_id,lower{column}")
    assert "ix_users_purge_time" not in definitions
    async with fresh.engine.connect() as conn:
        left = (await conn.execute(text("SELECT id, username FROM users ORDER BY username"))).all()
    assert [row.username for row in left] == ["gone", "kept"]

    await upgrade(fresh.engine)

    assert await current_revision(fresh.engine) == head_revision()
    assert await run_sync(fresh.engine, schema_diff) == []
    assert_partial_unique(await run_sync(fresh.engine, index_definitions, "users"))
    # Rows survive the trip; without a delete_time column "gone" came back to life.
    assert await fetch(fresh, tenant, kept["id"]) == kept
    revived = await fetch(fresh, tenant, gone["id"])
    assert revived is not None
    assert revived["delete_time"] is None
    # The partial unique indexes work again: a deleted user's email is free...
    await soft_delete(fresh, tenant, gone["id"])
    (again,) = await create_users(fresh, tenant, "gone")
    # ...and a live one's is not.
    async with fresh.unit_of_work(tenant) as uow:
        with pytest.raises(AlreadyExists) as err:
            await uow.repository(UserRepository).create(user("again", email="KEPT@example.com"))
    assert err.value.field == "email"
    assert again["email"] == gone["email"]


@pytest.mark.filterwarnings(*EXPRESSION_INDEX_WARNINGS)
async def test_a_failed_0002_downgrade_leaves_the_schema_at_0002(fresh: Database) -> None:
    # A deleted and a live user share an email: 0001's unique index cannot be built.
    tenant = "t-blocked"
    (deleted,) = await create_users(fresh, tenant, "twin")
    await soft_delete(fresh, tenant, deleted["id"])
    (live,) = await create_users(fresh, tenant, "twin")

    with pytest.raises(Exception, match="uq_users_tenant_email"):
        await downgrade(fresh.engine, "0001")

    # Nothing of the downgrade stuck: the transaction took it all back.
    assert await current_revision(fresh.engine) == head_revision()
    assert await run_sync(fresh.engine, schema_diff) == []
    assert_partial_unique(await run_sync(fresh.engine, index_definitions, "users"))
    assert await fetch(fresh, tenant, live["id"]) == live
    assert await fetch(fresh, tenant, deleted["id"]) is not None
    # Purging the deleted twin is the documented way out.
    await soft_delete(fresh, tenant, deleted["id"], force=True)
    await downgrade(fresh.engine, "0001")
    assert await current_revision(fresh.engine) == "0001"


# ------------------------------------------------------------ 0003 down and up


@pytest.mark.filterwarnings(*EXPRESSION_INDEX_WARNINGS)
async def test_0003_downgrades_and_upgrades_again(fresh: Database) -> None:
    tenant = "t-0003"
    (kept,) = await create_users(fresh, tenant, "kept")
    async with fresh.unit_of_work(tenant) as uow:
        session = await uow.repository(SessionRepository).create(
            {"user_id": kept["id"], "name": "", "status": "created", "preferences": {}}
        )
        await uow.repository(MessageRepository).create(
            {"session_id": session["id"], "message_type": "user", "role": "", "content": {}}
        )
        await uow.commit()

    await downgrade(fresh.engine, "0002")

    assert await current_revision(fresh.engine) == "0002"
    tables = await run_sync(fresh.engine, lambda c: set(inspect(c).get_table_names()))
    assert {"sessions", "messages", "jobs"} & tables == set()
    assert "last_login_time" not in await run_sync(fresh.engine, columns, "users")

    await upgrade(fresh.engine)

    assert await current_revision(fresh.engine) == head_revision()
    assert await run_sync(fresh.engine, schema_diff) == []
    assert await fetch(fresh, tenant, kept["id"]) == kept


# ------------------------------------------------------------ 0005: change notifications


def triggers(conn: Connection) -> set[tuple[str, str]]:
    """(table, trigger) for every trigger the schema defines (none internal)."""
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text("SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'"))
    else:
        rows = conn.execute(
            text(
                "SELECT c.relname, t.tgname FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
            )
        )
    return {(table, name) for table, name in rows}


def change_log_exists(conn: Connection) -> tuple[bool, bool]:
    """Whether the change log's function and its table exist."""
    function = text("SELECT count(*) FROM pg_proc WHERE proname = :name")
    table = text("SELECT count(*) FROM pg_class WHERE relname = :name AND relpersistence = 'u'")
    return (
        bool(conn.execute(function, {"name": change_log.FUNCTION}).scalar_one()),
        bool(conn.execute(table, {"name": change_log.TABLE}).scalar_one()),
    )


ENTITY_TABLES = ("users", "sessions", "messages", "jobs")


def recording(*tables: str) -> set[tuple[str, str]]:
    events = ("update", "delete", "truncate")
    return {(table, change_log.trigger_name(table, event)) for table in tables for event in events}


async def test_entity_tables_record_their_writes_on_postgresql_only(database: Database) -> None:
    found = await run_sync(database.engine, triggers)

    if database.dialect == "sqlite":
        assert found == set()
    else:
        assert found == recording(*ENTITY_TABLES)
        assert await run_sync(database.engine, change_log_exists) == (True, True)


@pytest.mark.filterwarnings(*EXPRESSION_INDEX_WARNINGS)
async def test_0005_downgrades_and_upgrades_again(fresh: Database) -> None:
    await downgrade(fresh.engine, "0004")

    assert await current_revision(fresh.engine) == "0004"
    assert await run_sync(fresh.engine, triggers) == set()
    if fresh.dialect == "postgresql":
        assert await run_sync(fresh.engine, change_log_exists) == (False, False)

    await upgrade(fresh.engine)

    assert await current_revision(fresh.engine) == head_revision()
    expected = recording(*ENTITY_TABLES) if fresh.dialect == "postgresql" else set()
    assert await run_sync(fresh.engine, triggers) == expected
    assert await run_sync(fresh.engine, schema_diff) == []

"""Schema migrations, run by `repogate migrate` and at server start.

Alembic runs on the caller's connection inside one transaction, followed by the
changes a declared schema implies (schema/migrations.py). On PostgreSQL that
transaction first takes an advisory lock, so instances starting together migrate
one after the other and the later ones find nothing left to do. On SQLite the
transaction begins IMMEDIATE, which serialises them the same way.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from schema.declared import Declared

T = TypeVar("T")

# Any fixed 64-bit number; it only has to be the same for every instance.
ADVISORY_LOCK_ID = 0x7265706F67617465  # "repogate"

# Alembic keeps the running migration's context in module globals, so two
# upgrades interleaving on one event loop (even of different databases)
# corrupt each other; within a process they take turns.
_in_process: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "repositories:migrations")
    return config


async def upgrade(
    engine: AsyncEngine, revision: str = "head", declared: Declared | None = None
) -> None:
    """Brings the schema up to `revision` and, given one, to the `declared` schema's
    tables; safe to run from several processes or tasks. Raises SchemaError (Refused
    for changes that are not automatic) having changed nothing."""
    await locked(engine, _upgrade, revision, declared)


async def locked(engine: AsyncEngine, fn: Callable[..., T], *args: object) -> T:
    """`fn(connection, *args)` in one transaction under the migration lock, committed
    when it returns; rolled back when it raises."""
    lock = _in_process.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, engine.connect() as conn:
        await conn.execution_options(repogate_write=True)
        result = await conn.run_sync(_locked, fn, *args)
        await conn.commit()
        return result


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def lock_for_migration(conn: Connection) -> None:
    """Opens the one transaction every migration step runs in, holding the lock that
    serialises instances. Alembic runs each step in a transaction of its own when none
    is open, which on SQLite would commit the steps of one upgrade one by one."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
    elif not conn.in_transaction():
        conn.begin()  # BEGIN IMMEDIATE: the connection is marked for writing


def _locked(conn: Connection, fn: Callable[..., T], *args: object) -> T:
    lock_for_migration(conn)
    return fn(conn, *args)


def _upgrade(conn: Connection, revision: str, declared: Declared | None) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)
    if declared is not None:
        from schema.migrations import apply

        apply(conn, declared)

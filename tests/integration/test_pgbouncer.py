"""Repositories through a PgBouncer of the test's own in transaction pooling mode, and what
the pooler's and the driver's failures become.

The swap: a client runs a statement on one server connection, then another client takes
that server connection (PgBouncer hands out the one released last) and holds it in a
transaction, so the first client's next statement runs on another server connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from repositories import driver_faults
from repositories.database import Database, EngineOptions, create_engine
from repositories.errors import Unavailable, translate_db_errors
from repositories.users import UserRepository
from tests.integration.support import create_users, other_tenant
from tests.pgbouncer import PgBouncer, fresh_database, running

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def own_url() -> AsyncIterator[str]:
    """A migrated database of this module's own."""
    async with fresh_database(migrated=True) as url:
        yield url


@pytest.fixture(scope="module")
def bouncer(own_url: str) -> Iterator[PgBouncer]:
    with running(own_url) as bouncer:
        yield bouncer


@pytest.fixture
def advice_unsaid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The advice to set REPOGATE_DB_PGBOUNCER is logged once per process: as if not yet."""
    monkeypatch.setattr(driver_faults, "_pooler_advised", False)


async def through(bouncer: PgBouncer, own_url: str, *, flag: bool) -> Database:
    # One connection, no pre-ping: every call runs on the same client connection.
    options = EngineOptions(pool_size=1, max_overflow=0, pool_pre_ping=False, pgbouncer=flag)
    return Database(create_engine(bouncer.url(own_url), options))


async def names(db: Database, tenant: str) -> list[str]:
    async with db.unit_of_work(tenant, read_only=True) as uow:  # autocommit on PostgreSQL
        rows, _ = await uow.repository(UserRepository).page(10)
    return [row["username"] for row in rows]


async def swap_server_connection(bouncer: PgBouncer, own_url: str) -> asyncpg.Connection:
    """Another client, holding the server connection released last in a transaction."""
    database = make_url(own_url).database
    other = await asyncpg.connect(
        host="127.0.0.1", port=bouncer.port, user="postgres", database=database
    )
    await other.execute("BEGIN")
    return other


async def test_with_the_flag_a_statement_runs_on_whichever_server_connection(
    bouncer: PgBouncer, own_url: str
) -> None:
    db = await through(bouncer, own_url, flag=True)
    tenant = other_tenant()
    await create_users(db, tenant, "ann")
    try:
        assert await names(db, tenant) == ["ann"]
        other = await swap_server_connection(bouncer, own_url)
        try:
            # The same statement again, and a write in a transaction, elsewhere.
            assert await names(db, tenant) == ["ann"]
            await create_users(db, tenant, "bob")
            assert await names(db, tenant) == ["ann", "bob"]
        finally:
            await other.close()
    finally:
        await db.dispose()


async def test_without_the_flag_the_missing_statement_is_unavailable_and_names_the_fix(
    bouncer: PgBouncer, own_url: str, caplog: pytest.LogCaptureFixture, advice_unsaid: None
) -> None:
    db = await through(bouncer, own_url, flag=False)
    tenant = other_tenant()
    try:
        assert await names(db, tenant) == []
        other = await swap_server_connection(bouncer, own_url)
        try:
            with caplog.at_level(logging.WARNING, logger="repositories.errors"):
                failures = [await unavailable(names(db, tenant)) for _ in range(2)]
        finally:
            await other.close()
    finally:
        await db.dispose()

    assert all(failure.reason == "DATABASE_UNAVAILABLE" for failure in failures)
    assert "does not exist" in str(failures[0].__cause__)
    advice = [r for r in caplog.records if "REPOGATE_DB_PGBOUNCER=true" in r.getMessage()]
    assert len(advice) == 1, "the advice is given once, not on every failure"


async def unavailable(call: object) -> Unavailable:
    with pytest.raises(Unavailable) as err:
        await call  # type: ignore[misc]
    return err.value


@pytest.mark.parametrize(
    "statements",
    [
        ["EXECUTE repogate_never_prepared"],  # 26000, as a pooler's lost statement
        ["PREPARE repogate_twice AS SELECT 1", "PREPARE repogate_twice AS SELECT 1"],  # 42P05
    ],
    ids=["missing", "duplicate"],
)
async def test_prepared_statement_errors_are_unavailable(
    own_url: str, statements: list[str], advice_unsaid: None
) -> None:
    engine = create_engine(own_url, EngineOptions(pool_size=1, max_overflow=0))

    async def run() -> None:
        with translate_db_errors():
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.exec_driver_sql(statement)

    try:
        await unavailable(run())
    finally:
        await engine.dispose()


async def test_a_url_turning_the_statement_cache_off_connects(own_url: str) -> None:
    # It crashed the first connect with a TypeError: SQLAlchemy passed "0" as a string.
    engine = create_engine(own_url + "?statement_cache_size=0&command_timeout=10")
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("flag", [True, False])
async def test_the_database_probe_connects_as_the_pool_does(own_url: str, flag: bool) -> None:
    # Straight to PostgreSQL, which lists the statements a session named: behind PgBouncer
    # a named statement may be missing from the server connection that runs it.
    options = EngineOptions(pool_size=1, max_overflow=0, pgbouncer=flag)
    db = Database(create_engine(own_url, options))
    try:
        counts = []
        for engine in (db.engine, db.prober()):
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
                counts.append(
                    await conn.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
                )
    finally:
        await db.dispose()

    assert counts == ([0, 0] if flag else [counts[0], counts[0]])
    assert flag or counts[0] > 0

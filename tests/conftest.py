"""Shared fixtures: real databases (SQLite always, PostgreSQL when reachable) and
a real grpc.aio server on a loopback port for each.

PostgreSQL: REPOGATE_TEST_POSTGRES_URL names a database to connect to for
creating a throwaway one per run (default: postgres@127.0.0.1:5432/test).
When it cannot be reached the PostgreSQL cases are skipped, loudly, unless
REPOGATE_TEST_REQUIRE_POSTGRES=1 (CI sets it), which makes them fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from grpc import aio
from sqlalchemy.engine import make_url

from repogate.v1 import user_pb2_grpc
from repositories.database import Database, create_engine
from repositories.migrate import upgrade
from server.app import Repogate
from server.settings import Settings

POSTGRES_URL = os.environ.get(
    "REPOGATE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("REPOGATE_TEST_REQUIRE_POSTGRES") == "1"
BACKENDS = ("sqlite", "postgresql")


def _plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin_connect() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_plain_dsn(POSTGRES_URL), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc!r}"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (REPOGATE_TEST_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
async def postgresql_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this run, dropped afterwards."""
    admin = await _admin_connect()
    name = f"repogate_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "repogate.db"
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, backend: str) -> str:
    return str(request.getfixturevalue(f"{backend}_url"))


@pytest.fixture(scope="session")
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database shared by the session; tests isolate by tenant."""
    db = Database(create_engine(database_url))
    await upgrade(db.engine)
    yield db
    await db.dispose()


@dataclass
class Running:
    app: Repogate
    channel: aio.Channel


@pytest.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[Running]:
    # No background purge: a test's own purge_due would skip while the server's held the lock.
    settings = Settings(
        listen="127.0.0.1:0", database_url=database_url, shutdown_grace=1, purge_interval=0
    )
    async with Repogate(settings) as app, aio.insecure_channel(app.address) as channel:
        yield Running(app, channel)


@pytest.fixture
def tenant() -> str:
    """A tenant of its own per test: tests share databases but never rows."""
    return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def users(server: Running) -> user_pb2_grpc.UserServiceStub:
    return user_pb2_grpc.UserServiceStub(server.channel)

"""Fixtures for end-to-end tests that need a Repogate of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from opentelemetry.sdk.trace.export import SpanExporter
from sqlalchemy.engine import make_url

from repogate.v1 import user_pb2_grpc
from server.app import Repogate
from server.settings import Settings
from tests.conftest import Running
from tests.declared import TASKS
from tests.e2e.domain import Stubs
from tests.e2e.otlp_collector import collector  # noqa: F401 (a fixture of the e2e tests)
from tests.e2e.support import Dedicated, StartRepogate, serving_schema
from tests.pgbouncer import fresh_database
from tests.proxy import Proxy


@pytest.fixture
async def start_repogate(tmp_path) -> AsyncIterator[StartRepogate]:
    """Starts Repogates of the test's own; each is stopped (and its channel closed) after it.

    Settings default to a fresh, migrated SQLite file under tmp_path; keyword
    arguments override Settings fields, `migrate=False` skips migrations, and
    `span_exporter` receives the server's spans.
    """
    started: list[Dedicated] = []

    async def start(
        *, migrate: bool = True, span_exporter: SpanExporter | None = None, **overrides: Any
    ) -> Dedicated:
        fields: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "database_url": f"sqlite+aiosqlite:///{tmp_path / f'db{len(started)}.sqlite'}",
            "shutdown_grace": 1,
            # The 0.25 s default suits production; a shared test machine can stall one
            # Redis reply longer. Tests about cache timeouts pass their own.
            "cache_timeout": 5,
            **overrides,
        }
        app = Repogate(Settings(**fields), migrate=migrate, span_exporter=span_exporter)
        try:
            await app.start()
        except BaseException:
            await app.stop(0)
            raise
        channel = aio.insecure_channel(app.address)
        running = Dedicated(app, channel, user_pb2_grpc.UserServiceStub(channel))
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        await running.channel.close()
        await running.app.stop(0)


@pytest.fixture
async def proxy(postgresql_url: str) -> AsyncIterator[Proxy]:
    """A proxy in front of the test run's PostgreSQL, for the test to cut or blackhole."""
    url = make_url(postgresql_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.open()
    yield proxy
    await proxy.close()


@pytest.fixture
def stubs(server: Running) -> Stubs:
    """Stubs of every entity service (and TransactionService) on the shared server."""
    return Stubs.on(server.channel)


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of the test's own that has never been migrated: a SQLite file, and a
    PostgreSQL database dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def own_postgresql_url() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own, dropped after: its servers' feeds are then
    the only ones there to take the change log's backstop role (on the session's database,
    servers of other tests may hold it)."""
    async with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
async def tasks_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """The suite's schema (tests/schemas/tasks) served on a database of the test module's own."""
    async with serving_schema(backend, tmp_path_factory, TASKS) as running:
        yield running

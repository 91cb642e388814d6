"""A Repogate per test module serving the schema pack the module names: `PACK` (a
directory under schemas/) and, when it has some, `EXTENSIONS` (import or file paths)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc import aio

from server.app import Repogate
from server.settings import Settings
from tests.conftest import Running
from tests.pgbouncer import fresh_database


@pytest.fixture(scope="module")
async def pack_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    """The module's pack served on a database of the module's own, SQLite or PostgreSQL."""
    pack: Path = request.module.PACK
    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgresql":
            url = await stack.enter_async_context(fresh_database())
        else:
            url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp(pack.name) / 'pack.db'}"
        settings = Settings(
            listen="127.0.0.1:0",
            database_url=url,
            schema_path=str(pack),
            extensions=getattr(request.module, "EXTENSIONS", ""),
            shutdown_grace=1,
            purge_interval=0,
            cache_timeout=5,
        )
        app = await stack.enter_async_context(Repogate(settings))
        channel = await stack.enter_async_context(aio.insecure_channel(app.address))
        yield Running(app, channel)

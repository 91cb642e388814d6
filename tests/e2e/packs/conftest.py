"""A Repogate per test module serving the schema pack the module names: `PACK` (a
directory under schemas/) and, when it has some, `EXTENSIONS` (import or file paths); a
client of its package (`PACKAGE`) and the built-in services' stubs on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Running
from tests.declared import Client
from tests.e2e.domain import Stubs
from tests.e2e.support import serving_schema


@pytest.fixture(scope="module")
async def pack_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    """The module's pack served on a database of the module's own, SQLite or PostgreSQL."""
    pack: Path = request.module.PACK
    extensions = getattr(request.module, "EXTENSIONS", "")
    async with serving_schema(backend, tmp_path_factory, pack, extensions) as running:
        yield running


@pytest.fixture
def client(pack_server: Running, request: pytest.FixtureRequest) -> Client:
    module = request.module
    return Client(pack_server.channel, schema=module.PACK, package=module.PACKAGE)


@pytest.fixture
def stubs(pack_server: Running) -> Stubs:
    return Stubs.on(pack_server.channel)

"""A Repogate per test module serving the schema pack the module names: `PACK` (a
directory under schemas/) and, when it has some, `EXTENSIONS` (import or file paths)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Running
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

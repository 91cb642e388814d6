"""Fixtures for end-to-end tests that need a Repogate of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc import aio

from repogate.v1 import user_pb2_grpc
from server.app import Repogate
from server.settings import Settings
from tests.e2e.support import Dedicated, StartRepogate


@pytest.fixture
async def start_repogate(tmp_path) -> AsyncIterator[StartRepogate]:
    """Starts Repogates of the test's own; each is stopped (and its channel closed) after it.

    Settings default to a fresh, migrated SQLite file under tmp_path; keyword
    arguments override Settings fields, and `migrate=False` skips migrations.
    """
    started: list[Dedicated] = []

    async def start(*, migrate: bool = True, **overrides: Any) -> Dedicated:
        fields: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "database_url": f"sqlite+aiosqlite:///{tmp_path / f'db{len(started)}.sqlite'}",
            "shutdown_grace": 1,
            **overrides,
        }
        app = Repogate(Settings(**fields), migrate=migrate)
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

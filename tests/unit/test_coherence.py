"""Applying what was read from the change log, over a real in-memory backend that can
fail as Redis would; stopping; and the feed's connection arguments."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from google.protobuf import wrappers_pb2

from server import coherence, context
from server.cache import ResilientCache
from server.coherence import Applier
from server.read_through import ReadThrough
from tests.cache_support import Flaky

pytestmark = pytest.mark.unit

Value = wrappers_pb2.StringValue
TENANT = "acme"
ROW = uuid.uuid4()


@pytest.fixture(autouse=True)
def _request() -> AsyncIterator[None]:
    token = context.bind(context.RequestContext(tenant=TENANT, request_id="r"))
    yield
    context.unbind(token)


class Row:
    def __init__(self) -> None:
        self.value, self.version = "v1", 1

    async def load(self) -> tuple[Value, int]:
        return Value(value=self.value), self.version

    def update(self, value: str) -> str:
        """Changes the row; returns the entry the change log would hold."""
        self.value, self.version = value, self.version + 1
        return json.dumps({"t": "users", "r": [[TENANT, str(ROW), self.version]]})


async def read(cache: ReadThrough, row: Row) -> str:
    return (await cache.get("users", ROW, row.load, Value.FromString)).value


@pytest.fixture
def applying() -> tuple[Flaky, ReadThrough, Applier]:
    backend = Flaky()
    cache = ReadThrough(ResilientCache(backend), 60, bound=60)
    cache.register("users", Value)
    return backend, cache, Applier(cache)


async def test_entries_read_are_applied_and_open_the_gate(
    applying: tuple[Flaky, ReadThrough, Applier],
) -> None:
    _, cache, applier = applying
    row = Row()
    closed = cache.gate_open
    await applier.resync(time.monotonic())
    await read(cache, row)

    await applier.apply([row.update("v2")], time.monotonic())

    assert not closed
    assert cache.gate_open
    assert await read(cache, row) == "v2"


async def test_an_entry_the_cache_did_not_take_is_made_up_for_by_a_drop(
    applying: tuple[Flaky, ReadThrough, Applier],
) -> None:
    backend, cache, applier = applying
    row = Row()
    await applier.resync(time.monotonic())
    await read(cache, row)  # cached: v1
    held = len(backend)

    backend.down = True
    await applier.apply([row.update("v2")], time.monotonic())  # the tombstone is lost
    lost = applier.dirty
    backend.down = False
    await applier.apply([], time.monotonic())

    assert (held, lost) == (1, True)
    assert not applier.dirty
    assert len(backend) == 0  # the next read dropped every entity entry


async def test_while_the_cache_keeps_failing_nothing_is_confirmed(
    applying: tuple[Flaky, ReadThrough, Applier],
) -> None:
    backend, cache, applier = applying
    backend.down = True

    await applier.resync(time.monotonic())
    await applier.apply([Row().update("v2")], time.monotonic())

    assert applier.dirty
    assert not cache.gate_open


async def test_an_unreadable_entry_drops_every_entity(
    applying: tuple[Flaky, ReadThrough, Applier],
) -> None:
    _, cache, applier = applying
    row = Row()
    await applier.resync(time.monotonic())
    await read(cache, row)
    row.value = "changed in a way nobody could read"

    await applier.apply(["{not json"], time.monotonic())

    assert await read(cache, row) == "changed in a way nobody could read"


def test_the_feed_connects_as_the_engine_would_under_a_name_of_its_own() -> None:
    args = coherence.connect_args(
        "postgresql+asyncpg://ann:secret@db.example:6543/app"
        "?prepared_statement_cache_size=0&ssl=require&statement_cache_size=0"
    )

    settings = args.pop("server_settings")
    assert args == {
        "host": "db.example",
        "port": 6543,
        "user": "ann",
        "password": "secret",
        "database": "app",
        "ssl": "require",
        "statement_cache_size": 0,  # typed as the engine's are, not the query's "0"
        "timeout": coherence.READ_TIMEOUT,
    }
    assert settings["application_name"].startswith(coherence.APPLICATION_NAME + "-")
    assert int(settings["tcp_keepalives_idle"]) > 0


async def test_stopping_ends_a_task_that_swallowed_its_cancellation() -> None:
    started = asyncio.Event()

    async def like_redis_py() -> None:
        while True:
            try:
                started.set()
                await asyncio.sleep(3600)  # a command: the cancellation lands here...
            except asyncio.CancelledError:
                pass  # ...and the command completes anyway
            await asyncio.Event().wait()  # then it waits for more work

    task = asyncio.create_task(like_redis_py())
    await started.wait()

    stopping = asyncio.ensure_future(coherence.cancel([task]))
    done, _ = await asyncio.wait({stopping}, timeout=10)

    assert done == {stopping}, "the task outlived every cancellation"
    assert task.cancelled()

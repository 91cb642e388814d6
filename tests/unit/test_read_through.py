"""Read-through caching over a real in-memory backend: fills, tombstones, the race
between a slow reader and a committed write, and a failed invalidation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from google.protobuf import wrappers_pb2

from repositories.changes import Changes
from server import context
from server.cache import MemoryBackend, ResilientCache
from server.read_through import ReadThrough
from tests.cache_support import Flaky

pytestmark = pytest.mark.unit

Value = wrappers_pb2.StringValue
TENANT = "acme"
ROW = uuid.uuid4()


class Table:
    """The database side: one row's value and version, and how often it was read."""

    def __init__(self) -> None:
        self.value, self.version, self.loads = "v1", 1, 0

    def loader(self) -> Callable[[], Awaitable[tuple[Value, int]]]:
        async def load() -> tuple[Value, int]:
            self.loads += 1
            return Value(value=self.value), self.version

        return load

    def write(self, value: str) -> Changes:
        self.value, self.version = value, self.version + 1
        return Changes(rows=[("users", TENANT, ROW, self.version)])


@pytest.fixture(autouse=True)
def _request() -> AsyncIterator[None]:
    token = context.bind(context.RequestContext(tenant=TENANT, request_id="r"))
    yield
    context.unbind(token)


def read_through(backend: MemoryBackend, ttl: float = 60) -> ReadThrough:
    cache = ReadThrough(ResilientCache(backend), ttl)
    cache.register("users", Value)
    return cache


async def get(cache: ReadThrough, table: Table) -> str:
    return (await cache.get("users", ROW, table.loader(), Value.FromString)).value


async def test_a_second_get_is_served_from_the_cache() -> None:
    table, cache = Table(), read_through(MemoryBackend())

    assert [await get(cache, table), await get(cache, table)] == ["v1", "v1"]
    assert table.loads == 1


async def test_a_committed_write_is_never_read_stale() -> None:
    table, cache = Table(), read_through(MemoryBackend())
    await get(cache, table)

    await cache.forget(table.write("v2"))

    assert await get(cache, table) == "v2"
    assert await get(cache, table) == "v2"
    assert table.loads == 2


async def test_a_slow_reader_cannot_put_an_old_row_back_over_a_write() -> None:
    table, cache = Table(), read_through(MemoryBackend())
    loaded, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> tuple[Value, int]:
        old = Value(value=table.value), table.version
        loaded.set()
        await release.wait()  # the write commits and is forgotten meanwhile
        return old

    slow = asyncio.ensure_future(cache.get("users", ROW, slow_load, Value.FromString))
    await loaded.wait()
    await cache.forget(table.write("v2"))
    release.set()

    assert (await slow).value == "v1"  # what it read, when it read it
    assert await get(cache, table) == "v2"  # but the cache did not keep it


async def test_a_row_deleted_for_good_is_never_filled_again() -> None:
    table, cache = Table(), read_through(MemoryBackend())
    await cache.forget(Changes(rows=[("users", TENANT, ROW, None)]))

    await get(cache, table)
    await get(cache, table)

    assert table.loads == 2


async def test_a_bulk_change_drops_the_tenants_entries_of_that_table() -> None:
    table, cache = Table(), read_through(MemoryBackend())
    await get(cache, table)

    table.value = "bulk"  # changed by a statement that named no rows
    await cache.forget(Changes(tables={("users", TENANT), ("users", "other")}))

    assert await get(cache, table) == "bulk"


async def test_changes_to_tables_it_does_not_cache_are_ignored() -> None:
    table, cache = Table(), read_through(MemoryBackend())
    await get(cache, table)

    await cache.forget(Changes(rows=[("request_ids", TENANT, ROW, 9)], tables={("x", TENANT)}))

    assert await get(cache, table) == "v1"
    assert table.loads == 1


async def test_after_a_failed_invalidation_reads_go_around_the_cache_for_a_ttl() -> None:
    backend = Flaky()
    table, cache = Table(), read_through(backend, ttl=0.2)
    await get(cache, table)

    backend.down = True
    await cache.forget(table.write("v2"))  # lost: the old entry stays in the cache
    backend.down = False
    during = [await get(cache, table) for _ in range(3)]
    loads_during = table.loads
    await asyncio.sleep(0.3)
    await get(cache, table)
    await get(cache, table)

    assert during == ["v2", "v2", "v2"]
    assert loads_during == 4  # every read went to the database
    assert table.loads == 5  # then filled once and served from the cache again


async def test_reads_inside_a_transaction_never_touch_the_cache() -> None:
    backend = MemoryBackend()
    table, cache = Table(), read_through(backend)
    token = context.bind(
        context.RequestContext(tenant=TENANT, request_id="r", transaction_id="w.t")
    )
    try:
        await get(cache, table)
        await get(cache, table)
    finally:
        context.unbind(token)

    assert table.loads == 2
    assert len(backend) == 0


async def test_turned_off_it_always_loads() -> None:
    backend = MemoryBackend()
    table = Table()
    cache = ReadThrough(ResilientCache(backend), 60, enabled=False)
    cache.register("users", Value)

    await get(cache, table)
    await get(cache, table)
    await cache.forget(table.write("v2"))

    assert table.loads == 2
    assert len(backend) == 0

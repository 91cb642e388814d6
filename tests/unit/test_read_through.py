"""Read-through caching over a real in-memory backend: fills, tombstones, the race
between a slow reader and a committed write, and a failed invalidation."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from google.protobuf import wrappers_pb2

from repositories.changes import Changes
from server import consistency, context
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


async def test_a_slow_reader_cannot_fill_over_a_bulk_change() -> None:
    table, cache = Table(), read_through(MemoryBackend())
    loaded, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> tuple[Value, int]:
        old = Value(value=table.value), table.version
        loaded.set()
        await release.wait()  # a bulk write commits and is forgotten meanwhile
        return old

    slow = asyncio.ensure_future(cache.get("users", ROW, slow_load, Value.FromString))
    await loaded.wait()
    table.value = "bulk"  # a statement that named no rows: no tombstone to outrank the fill
    await cache.forget(Changes(tables={("users", TENANT)}))
    release.set()

    assert (await slow).value == "v1"
    assert await get(cache, table) == "bulk"


async def test_a_change_to_every_tenant_drops_each_ones_entries() -> None:
    backend = MemoryBackend()
    table, cache = Table(), read_through(backend)
    await get(cache, table)
    await backend.set("rg:v1:c:acme:mine", b"a client's key")

    table.value = "truncated and refilled"
    await cache.forget(Changes(everywhere={"users"}))

    assert await get(cache, table) == "truncated and refilled"
    assert await backend.get("rg:v1:c:acme:mine") == b"a client's key"


async def test_rows_of_tenants_no_call_can_name_are_skipped() -> None:
    table, cache = Table(), read_through(MemoryBackend())
    await get(cache, table)

    done = await cache.apply(
        Changes(rows=[("users", "a tool's tenant", ROW, 5)], tables={("users", "x:y")})
    )

    assert done
    assert await get(cache, table) == "v1"


def gated(backend: MemoryBackend, bound: float = 60) -> ReadThrough:
    cache = ReadThrough(ResilientCache(backend), 60, bound=bound)
    cache.register("users", Value)
    return cache


async def test_a_gated_cache_is_unused_until_its_channel_confirms() -> None:
    backend = MemoryBackend()
    table, cache = Table(), gated(backend)

    before = [await get(cache, table), await get(cache, table)]
    cache.confirm(time.monotonic())
    after = [await get(cache, table), await get(cache, table)]

    assert before == after == ["v1", "v1"]
    assert table.loads == 3  # two around the cache, then one fill and a hit


async def test_a_gated_cache_is_unused_once_its_last_confirmation_is_older_than_the_bound() -> None:
    table, cache = Table(), gated(MemoryBackend(), bound=1.0)
    cache.confirm(time.monotonic())
    await get(cache, table)

    cache.confirm(time.monotonic() - 5)  # an old beat moves nothing back
    still = cache.gate_open
    stale = gated(MemoryBackend(), bound=1.0)
    stale.confirm(time.monotonic() - 1.5)  # the channel last proved itself 1.5 s ago

    assert still
    assert not stale.gate_open
    await get(stale, table)
    await get(stale, table)
    assert table.loads == 3  # the stale gate kept both reads off its cache


async def test_drop_forgets_every_entity_entry_and_keeps_a_slow_fill_out() -> None:
    backend = MemoryBackend()
    table, cache = Table(), read_through(backend)
    await get(cache, table)
    await backend.set("rg:v1:c:acme:mine", b"a client's key")
    loaded, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> tuple[Value, int]:
        loaded.set()
        await release.wait()  # the process drops its cache meanwhile
        return Value(value="read before the drop"), 1

    slow = asyncio.ensure_future(cache.get("users", uuid.uuid4(), slow_load, Value.FromString))
    await loaded.wait()
    dropped = await cache.drop()
    release.set()
    await slow

    assert dropped
    assert await _keys(backend) == ["rg:v1:c:acme:mine"]


async def _keys(backend: MemoryBackend) -> list[str]:
    found, _ = await backend.scan("*", "", 1000)
    return found


@pytest.fixture
def session() -> Iterator[consistency.Session]:
    """The call's consistency session, as with read replicas configured."""
    current = consistency.Session()
    token = consistency.bind(current)
    yield current
    consistency.unbind(token)


async def test_a_token_read_skips_a_gated_cache(session: consistency.Session) -> None:
    table = Table()
    cache = ReadThrough(ResilientCache(MemoryBackend()), 60, bound=1.0)
    cache.register("users", Value)
    cache.confirm(time.monotonic())
    await get(cache, table)
    # Written by another process: this one hears of it only through its feed, later.
    table.write("v2")

    assert await get(cache, table) == "v1"  # tokenless: within the gate's bound
    session.at_least = 42  # the write's token
    assert await get(cache, table) == "v2"


async def test_a_token_read_uses_an_ungated_cache(session: consistency.Session) -> None:
    table, cache = Table(), read_through(MemoryBackend())
    await get(cache, table)
    session.at_least = 42

    assert await get(cache, table) == "v1"
    assert table.loads == 1


async def test_a_load_from_a_replica_behind_a_drop_is_not_cached(
    session: consistency.Session,
) -> None:
    table, cache = Table(), read_through(MemoryBackend())
    behind = time.monotonic()  # all the replica is known to hold
    await cache.forget(Changes(tables={("users", TENANT)}))  # a bulk write, no tombstones
    session.complete_as_of = behind  # the load below came from that replica

    await get(cache, table)
    session.complete_as_of = math.inf  # the primary, or a replica past the drop
    await get(cache, table)
    await get(cache, table)

    assert table.loads == 2


@pytest.mark.parametrize("replicated", [True, False])
async def test_only_a_replicated_cache_is_read_around_for_a_ttl_after_any_error(
    replicated: bool,
) -> None:
    """A failover can hand the cache to a replica that missed a tombstone; the process
    sees it as an error, here on a read, while the entry from before a write survives."""
    backend = Flaky()
    table = Table()
    cache = ReadThrough(ResilientCache(backend), 60, replicated=replicated)
    cache.register("users", Value)
    await get(cache, table)  # cached: v1

    backend.down = True
    assert await get(cache, table) == "v1"  # a miss, from the database
    backend.down = False
    table.value = "v2 (its tombstone lost with the old primary)"
    seen = await get(cache, table)

    assert seen == (table.value if replicated else "v1")


class Promoted(MemoryBackend):
    """A backend whose lookup finds, once `promote` is set, that a primary was promoted
    since it started (as a cluster's or Sentinel's does on its first command)."""

    promote = False

    async def get(self, key: str) -> bytes | None:
        value = await super().get(key)
        if self.promote:
            self.promote = False
            self.stats.failovers += 1
        return value


async def test_a_replicated_cache_found_promoted_is_read_around_for_a_ttl() -> None:
    """No call failed, yet the entry may predate a tombstone the promotion lost: neither
    it nor any entry is served for one TTL."""
    backend, table = Promoted(), Table()
    cache = ReadThrough(ResilientCache(backend), 60, replicated=True)
    cache.register("users", Value)
    await get(cache, table)  # cached: v1
    table.value = "v2 (its tombstone lost with the old primary)"
    backend.promote = True

    assert await get(cache, table) == table.value  # the lookup that found the promotion
    assert await get(cache, table) == table.value  # and one after
    assert table.loads == 3
    assert backend.stats.errors == 0

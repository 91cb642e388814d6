"""Keyset paging: every row exactly once, in (create_time, id) order, ties by id."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event

from repositories.base import Row
from repositories.database import Database
from repositories.users import UserRepository
from tests.integration.support import BASE_TIME, insert_rows, other_tenant, raw_row

pytestmark = pytest.mark.integration

# Offsets (microseconds from BASE_TIME) for 11 rows: runs of equal create_time
# at the start, in the middle and at the end, so page boundaries fall inside them.
OFFSETS = [0, 0, 0, 5, 7, 7, 9, 12, 12, 12, 12]


def _key(row: Any) -> tuple[Any, uuid.UUID]:
    return row["create_time"], row["id"]


async def _seed(database: Database, tenant: str, offsets: list[int]) -> list[dict[str, Any]]:
    rows = [
        raw_row(f"u{i}", BASE_TIME + timedelta(microseconds=offset))
        for i, offset in enumerate(offsets)
    ]
    # Insert out of order so that neither insertion order nor id order alone
    # matches the expected one.
    await insert_rows(database, tenant, rows[::-1])
    return sorted(rows, key=_key)


async def _walk(
    database: Database, tenant: str, limit: int, *, shift: timezone | None = None
) -> tuple[list[Row], list[bool]]:
    seen: list[Row] = []
    flags: list[bool] = []
    after: tuple[Any, ...] | None = None
    async with database.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        for _ in range(100):
            rows, more = await repo.page(limit, after)
            assert len(rows) <= limit
            seen += rows
            flags.append(more)
            if not more:
                break
            last = rows[-1]["create_time"]
            after = (last.astimezone(shift) if shift else last, rows[-1]["id"])
        else:
            pytest.fail("paging did not terminate")
    return seen, flags


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 10, 11, 12, 50])
async def test_walking_all_pages_returns_every_row_once_in_order(
    database: Database, tenant: str, limit: int
) -> None:
    expected = await _seed(database, tenant, OFFSETS)
    # Another tenant's rows with the very same times must not interleave.
    await _seed(database, other_tenant(), OFFSETS)

    seen, flags = await _walk(database, tenant, limit)

    assert [row["id"] for row in seen] == [row["id"] for row in expected]
    assert [row["create_time"] for row in seen] == [row["create_time"] for row in expected]
    assert len({row["id"] for row in seen}) == len(OFFSETS)
    pages = -(-len(OFFSETS) // limit)
    assert flags == [True] * (pages - 1) + [False]


async def test_rows_with_identical_create_time_are_ordered_by_id(
    database: Database, tenant: str
) -> None:
    count = 40
    ids = sorted(uuid.uuid4() for _ in range(count))
    # A fixed scramble of the insertion order: neither ascending nor descending.
    order = [(i * 17) % count for i in range(count)]
    assert sorted(order) == list(range(count))
    await insert_rows(database, tenant, [raw_row(f"s{i}", BASE_TIME, ids[i]) for i in order])

    for limit in (1, 3, 16):
        seen, _ = await _walk(database, tenant, limit)
        assert [row["id"] for row in seen] == ids
        assert {row["create_time"] for row in seen} == {BASE_TIME}


async def test_ties_are_broken_by_the_query_not_by_the_index(
    database: Database, tenant: str
) -> None:
    # The (tenant_id, create_time, id) index hands rows over in id order within a
    # tie, which hides a missing tie-breaker from the tests above; the statement
    # itself must order by id.
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    async with database.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        event.listen(database.engine.sync_engine, "before_cursor_execute", record)
        try:
            await repo.page(5)
            await repo.page(5, (BASE_TIME, uuid.uuid4()))
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", record)

    pages = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(pages) == 2
    for statement in pages:
        assert re.search(
            r"ORDER BY users\.create_time( ASC)?, users\.id( ASC)?\s+LIMIT", statement
        ), statement


async def test_ids_that_sort_differently_as_text_and_as_bytes(
    database: Database, tenant: str
) -> None:
    # Ids chosen to catch an order that is not the UUID's numeric order:
    # high bit set versus clear, and differences only in the last byte.
    ids = [
        uuid.UUID("00000000-0000-4000-8000-000000000001"),
        uuid.UUID("00000000-0000-4000-8000-0000000000ff"),
        uuid.UUID("7fffffff-ffff-4fff-bfff-ffffffffffff"),
        uuid.UUID("80000000-0000-4000-8000-000000000000"),
        uuid.UUID("ffffffff-ffff-4fff-bfff-fffffffffffe"),
    ]
    await insert_rows(
        database,
        tenant,
        [raw_row(f"b{i}", BASE_TIME, id_) for i, id_ in reversed(list(enumerate(ids)))],
    )
    seen, _ = await _walk(database, tenant, 2)
    assert [row["id"] for row in seen] == ids


async def test_a_cursor_in_another_utc_offset_means_the_same_instant(
    database: Database, tenant: str
) -> None:
    expected = await _seed(database, tenant, OFFSETS)
    for shift in (timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))):
        seen, _ = await _walk(database, tenant, 3, shift=shift)
        assert [row["id"] for row in seen] == [row["id"] for row in expected]


async def test_paging_an_empty_tenant(database: Database, tenant: str) -> None:
    async with database.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        assert await repo.page(10) == ([], False)
        assert await repo.page(10, (BASE_TIME, uuid.uuid4())) == ([], False)


async def test_a_cursor_past_the_last_row_is_an_empty_last_page(
    database: Database, tenant: str
) -> None:
    expected = await _seed(database, tenant, OFFSETS)
    last = expected[-1]
    async with database.unit_of_work(tenant, read_only=True) as uow:
        repo = uow.repository(UserRepository)
        assert await repo.page(5, (last["create_time"], last["id"])) == ([], False)
        # A cursor between two tied rows starts right after the first of them.
        tied = expected[1]
        rows, more = await repo.page(2, (tied["create_time"], tied["id"]))
    assert [row["id"] for row in rows] == [row["id"] for row in expected[2:4]]
    assert more is True


async def test_page_times_come_back_as_stored(database: Database, tenant: str) -> None:
    expected = await _seed(database, tenant, [0, 1])
    seen, _ = await _walk(database, tenant, 10)
    assert [row["create_time"] for row in seen] == [row["create_time"] for row in expected]
    assert all(row["create_time"].utcoffset() == timedelta(0) for row in seen)

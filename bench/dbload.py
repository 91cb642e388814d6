"""asyncpg alone, no gRPC: what PostgreSQL gives this machine for single-row INSERTs
and for executemany batches, into the same users table (and indexes) Repogate writes."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field

import asyncpg

from bench import pgsql


@dataclass
class DbResult:
    ops: int
    rows: int
    seconds: float
    latencies_us: list[float] = field(repr=False, default_factory=list)


async def _timed(
    pool: asyncpg.Pool, workers: int, seconds: float, batch: int, tenant: str
) -> DbResult:
    tag = uuid.uuid4().hex[:10]
    names = itertools.count()
    latencies: list[float] = []
    rows = 0
    until = time.perf_counter() + seconds

    def records(count: int) -> list[tuple[object, ...]]:
        created = pgsql.now()
        return [pgsql.record(tenant, f"a{tag}-{next(names)}", created) for _ in range(count)]

    async def work() -> None:
        nonlocal rows
        while time.perf_counter() < until:
            values = records(batch)
            started = time.perf_counter()
            async with pool.acquire() as conn:
                if batch == 1:
                    await conn.execute(pgsql.INSERT, *values[0])
                else:
                    async with conn.transaction():
                        await conn.executemany(pgsql.INSERT, values)
            latencies.append((time.perf_counter() - started) * 1e6)
            rows += batch

    started = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(workers)))
    return DbResult(len(latencies), rows, time.perf_counter() - started, latencies)


async def inserts(
    dsn: str, tenant: str, concurrency: int, pool_size: int, seconds: float
) -> DbResult:
    """Single-row INSERTs, each its own implicit transaction, `concurrency` at a time."""
    async with asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size) as pool:
        await _timed(pool, concurrency, min(1.0, seconds), 1, tenant)  # warm up
        return await _timed(pool, concurrency, seconds, 1, tenant)


async def executemany(
    dsn: str, tenant: str, concurrency: int, batch: int, seconds: float
) -> DbResult:
    """`batch`-row executemany INSERTs, one transaction each, `concurrency` at a time."""
    async with asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency) as pool:
        await _timed(pool, concurrency, min(1.0, seconds), batch, tenant)
        return await _timed(pool, concurrency, seconds, batch, tenant)

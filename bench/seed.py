"""The bench database and Redis keys: created, seeded, and removed again.

Users are written with asyncpg COPY straight into the table the migrations made, with
distinct create times, so the default keyset order is the seeding order. Tenants are
skewed, as real ones are: the first holds most users, so that its list is deep enough
for a page 1,000 pages in.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import redis

from bench import pgsql

TENANT_PREFIX = "bench-t"
REDIS_PATTERNS = ("rg:v1:*:bench-*", "bench:*")


@dataclass(frozen=True)
class SeedPlan:
    total: int = 100_000
    tenants: int = 10
    deep_share: float = 0.55  # of the users, in the first ("deep") tenant

    def counts(self) -> dict[str, int]:
        deep = round(self.total * self.deep_share) if self.tenants > 1 else self.total
        rest = self.total - deep
        counts = {f"{TENANT_PREFIX}0": deep}
        for i in range(1, self.tenants):
            counts[f"{TENANT_PREFIX}{i}"] = rest // (self.tenants - 1) + (
                1 if i <= rest % (self.tenants - 1) else 0
            )
        return counts


@dataclass(frozen=True)
class Seeded:
    rows: int
    seconds: float  # the whole seeding: building rows, COPY, ANALYZE
    copy_seconds: float  # COPY alone
    counts: dict[str, int]


def database_dsn(server_dsn: str, name: str) -> str:
    """`server_dsn` (postgresql://user@host:port/anydb) pointed at database `name`."""
    base = server_dsn.rsplit("/", 1)[0]
    return f"{base}/{name}"


async def create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def migrate(repogate: Path, env: dict[str, str]) -> None:
    subprocess.run([str(repogate), "migrate"], env=env, check=True, capture_output=True)


async def seed_users(dsn: str, plan: SeedPlan) -> Seeded:
    started = time.perf_counter()
    counts = plan.counts()
    start = pgsql.now() - timedelta(days=1)
    conn = await asyncpg.connect(dsn)
    copy_seconds = 0.0
    try:
        for tenant, count in counts.items():
            records = pgsql.seed_records(tenant, count, start)
            copy_started = time.perf_counter()
            await conn.copy_records_to_table("users", records=records, columns=pgsql.COLUMNS)
            copy_seconds += time.perf_counter() - copy_started
        await conn.execute("ANALYZE users")
    finally:
        await conn.close()
    return Seeded(sum(counts.values()), time.perf_counter() - started, copy_seconds, counts)


async def some_user_ids(dsn: str, tenant: str, count: int) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id FROM users WHERE tenant_id = $1 ORDER BY create_time LIMIT $2", tenant, count
        )
    finally:
        await conn.close()
    return [str(row["id"]) for row in rows]


def delete_keys(url: str) -> int:
    """Deletes every key the benchmark made in Redis: its tenants' and its own."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        for pattern in REDIS_PATTERNS:
            batch = list(client.scan_iter(match=pattern, count=1000))
            for i in range(0, len(batch), 1000):
                deleted += int(client.unlink(*batch[i : i + 1000]))
    finally:
        client.close()
    return deleted

"""The write group of `python -m bench`: CreateUser against a bare asyncpg INSERT RPC,
and BatchCreateUsers of 1,000 against asyncpg's executemany."""

from __future__ import annotations

import asyncio

from bench import dbload, stats
from bench.report import Row, judge
from bench.run import (
    WRITE_TENANT,
    Bench,
    alternated,
    by_rate,
)
from bench.scenarios import DriverScenario, Target, run_driver


def writes(bench: Bench, main: Target, noop: Target, pg: Target) -> None:
    """Each write scenario alternates with its baseline, `--repeat` times, and is
    judged by the runs with the median rate: single runs of either side drift by a
    fifth here."""
    args = bench.args
    inserts = asyncio.run(dbload.inserts(bench.dsn, WRITE_TENANT, 32, args.pool_size, args.seconds))
    bench.add(
        db_row("asyncpg single-row INSERT", f"asyncpg c32 p{args.pool_size}", inserts, "rows/s"),
        "inserts",
    )
    bench.drive(
        DriverScenario("bare no-op CreateUser (python ceiling)", "create", WRITE_TENANT, 32),
        noop,
    )
    bare = DriverScenario("bare asyncpg INSERT RPC", "create", WRITE_TENANT, 32)
    create = DriverScenario("CreateUser", "create", WRITE_TENANT, 32)
    bares, creates = [], []
    for _ in range(args.repeat):
        bares.append(run_driver(bare, pg, args.seconds))
        creates.append(run_driver(create, main, args.seconds))
    base = bench.add(by_rate(bares), "insert_rpc")
    row = bench.add(by_rate(creates))
    judge(row, base, "throughput", 0.8)
    alternated(base, bares, row, creates)
    bench.drive(
        DriverScenario(
            "bare no-op BatchCreateUsers (python ceiling)", "batch", WRITE_TENANT, 2, "rows/s"
        ),
        noop,
    )
    batch = DriverScenario("BatchCreateUsers of 1,000", "batch", WRITE_TENANT, 2, "rows/s")
    manys, batches = [], []
    for _ in range(args.repeat):
        many = asyncio.run(dbload.executemany(bench.dsn, WRITE_TENANT, 2, 1000, args.seconds))
        manys.append(db_row("asyncpg executemany, 1,000 rows", "asyncpg c2", many, "rows/s"))
        batches.append(run_driver(batch, main, args.seconds))
    base = bench.add(by_rate(manys), "many")
    row = bench.add(by_rate(batches))
    judge(row, base, "throughput", 0.5)
    alternated(base, manys, row, batches)


def db_row(name: str, generator: str, result: dbload.DbResult, unit: str) -> Row:
    p50 = stats.percentile(result.latencies_us, 50)
    p99 = stats.percentile(result.latencies_us, 99)
    row = Row(
        name,
        generator,
        unit=unit,
        rate=result.rows / result.seconds,
        p50_ms=None if p50 is None else p50 / 1000,
        p99_ms=None if p99 is None else p99 / 1000,
    )
    row.notes.append(f"{result.ops / result.seconds:,.0f} statements/s; no gRPC")
    return row

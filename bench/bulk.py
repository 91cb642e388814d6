"""`python -m bench.bulk`: queries over a million rows of one tenant, against the same
query in raw SQL.

It creates the `repogate_bench_bulk` database, the table bench/schemas/bulk declares
(with the indexes the schema's options create: the payload's GIN index, the tags'
when filterable arrays get one), fills it with `--rows` tasks of one tenant (and a
tenth as many of another) by one INSERT ... SELECT, and starts `repogate serve` on it.

Each query is timed as Repogate answers it (ListTasks and AggregateTasks calls, one at a
time from one client, the median of `--calls`) and as asyncpg answers the statement it
stands for on one connection (the same median). The deep rows ask for page 1,000 of 50:
the page token is found once by walking the pages, and the raw statement starts from the
same keyset position. The table prints both times, their ratio and the indexes the
raw statement's plan uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc import aio

from bench import seed
from bench.procs import Server, free_port
from bench.run import BIN, RESULTS, repogate_env
from repogate.v1.aggregate_pb2 import Aggregation

SCHEMA = Path(__file__).resolve().parent / "schemas" / "bulk"
PACKAGE = "benchmark.bulk.v1"
SERVICE = f"/{PACKAGE}.TaskService/"
DATABASE = "repogate_bench_bulk"
TABLE = "bulk_tasks"
TENANT = "bulk-t0"
OTHER = "bulk-t1"
PAGE = 50
DEEP = 1_000
COLUMNS = "tenant_id, id, version, create_time, update_time, title, project, priority, cost"
SEED = f"""
INSERT INTO {TABLE} ({COLUMNS}, tags, payload)
SELECT $1::text, md5($1::text || i::text)::uuid, 1, t, t, 'task ' || i, 'p' || (i % 100), i % 11,
       (i % 1000) / 10.0,
       jsonb_build_array('c' || (i % 10), 'k' || (i % 100)),
       jsonb_build_object('workspace', 'w' || (i % 10), 'n', i % 1000, 'done', i % 2 = 0)
FROM generate_series(1, $2) AS i,
     LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 millisecond' AS t) AS s
"""
LIVE = "tenant_id = $1::text AND delete_time IS NULL"
ORDER = "ORDER BY create_time, id"
AGGREGATE_SECONDS = 120


@dataclass(frozen=True)
class ListQuery:
    name: str
    filter: str  # as a client writes it
    where: str  # the same condition in SQL, its value as $2
    value: str


@dataclass(frozen=True)
class AggregateQuery:
    name: str
    filter: str
    group_by: tuple[str, ...]
    aggregations: tuple[tuple[str, str], ...]  # (function, field)
    sql: str  # the same in SQL over the tenant's live rows ($1), its groups in key order


def _aggregate_sql(key: str, values: str, where: str = "") -> str:
    return (
        f"SELECT {key} AS k, {values} FROM {TABLE} WHERE {LIVE}{where} "
        f"GROUP BY k ORDER BY k LIMIT {PAGE + 1}"
    )


AGGREGATES = (
    AggregateQuery(
        "group_by project: count, sum(cost), avg(priority)",
        "",
        ("project",),
        (("FUNCTION_COUNT", ""), ("FUNCTION_SUM", "cost"), ("FUNCTION_AVG", "priority")),
        _aggregate_sql("project", "count(*), sum(cost), avg(priority)"),
    ),
    AggregateQuery(
        "group_by payload.workspace: count, max(cost)",
        "",
        ("payload.workspace",),
        (("FUNCTION_COUNT", ""), ("FUNCTION_MAX", "cost")),
        _aggregate_sql("payload -> 'workspace'", "count(*), max(cost)"),
    ),
    AggregateQuery(
        "group_by create_time.day: count",
        "",
        ("create_time.day",),
        (("FUNCTION_COUNT", ""),),
        _aggregate_sql("date_trunc('day', create_time AT TIME ZONE 'UTC')", "count(*)"),
    ),
    AggregateQuery(
        'filter tags:"c3", group_by priority: count, sum(cost)',
        'tags:"c3"',
        ("priority",),
        (("FUNCTION_COUNT", ""), ("FUNCTION_SUM", "cost")),
        _aggregate_sql("priority", "count(*), sum(cost)", " AND tags @> '[\"c3\"]'::jsonb"),
    ),
)

LISTS = (
    ListQuery(
        "path payload.workspace",
        'payload.workspace = "w3"',
        "payload @> $2::jsonb",
        json.dumps({"workspace": "w3"}),
    ),
    ListQuery("tag", 'tags:"c3"', "tags @> $2::jsonb", json.dumps(["c3"])),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the measured tenant")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per list query")
    parser.add_argument(
        "--aggregate-calls", type=int, default=5, help="timed calls per aggregate (a second each)"
    )
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args(argv)


def messages() -> Any:
    from schema.loading import load

    load(SCHEMA)
    pool = descriptor_pool.Default()

    def cls(name: str) -> type[Message]:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))

    names = ("ListTasksRequest", "ListTasksResponse", "AggregateTasksRequest")
    return type("Messages", (), {n: cls(n) for n in (*names, "AggregateTasksResponse")})


async def fill(dsn: str, rows: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SEED, TENANT, rows)
        await conn.execute(SEED, OTHER, max(1, rows // 10))
        await conn.execute(f"VACUUM ANALYZE {TABLE}")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def median_ms(
    calls: int, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
) -> float:
    """The median milliseconds of `calls` awaits of call(*args), after three unmeasured."""
    for _ in range(min(3, calls)):
        await call(*args, **kwargs)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await call(*args, **kwargs)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


class Rows:
    """The printed table."""

    def __init__(self) -> None:
        self.lines = [
            "| query | Repogate ms/call | raw SQL ms/call | Repogate / raw | indexes in the plan |",
            "|---|---:|---:|---:|---|",
        ]

    def add(self, name: str, ours: float, raw: float, indexes: str) -> None:
        line = f"| {name} | {ours:.2f} | {raw:.2f} | {ours / raw:.2f} | {indexes} |"
        print(line, flush=True)
        self.lines.append(line)


async def plan_indexes(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node and node["Index Name"] not in found:
            found.append(node["Index Name"])
        for child in node.get("Plans", ()):
            walk(child)

    walk(json.loads(plan)[0]["Plan"])
    return ", ".join(found) or "none (sequential scan)"


async def measure(address: str, dsn: str, args: argparse.Namespace) -> Rows:
    m = messages()
    rows = Rows()
    metadata = (("x-tenant-id", TENANT),)
    conn = await asyncpg.connect(dsn)
    async with aio.insecure_channel(address) as channel:
        list_tasks = channel.unary_unary(
            SERVICE + "ListTasks",
            request_serializer=m.ListTasksRequest.SerializeToString,
            response_deserializer=m.ListTasksResponse.FromString,
        )

        async def page(filter_: str, token: str = "") -> Any:
            request = m.ListTasksRequest(page_size=PAGE, filter=filter_, page_token=token)
            reply = await list_tasks(request, metadata=metadata, timeout=60)
            assert len(reply.tasks) == PAGE, f"{filter_}: {len(reply.tasks)} rows"
            return reply

        try:
            # Each filter matches a tenth of the rows: page DEEP exists from 500,000 rows.
            deep_page = min(DEEP, args.rows // 10 // PAGE)
            for q in LISTS:
                first = f"SELECT * FROM {TABLE} WHERE {LIVE} AND {q.where} {ORDER} LIMIT {PAGE + 1}"
                ours = await median_ms(args.calls, page, q.filter)
                raw = await median_ms(args.calls, conn.fetch, first, TENANT, q.value)
                indexes = await plan_indexes(conn, first, TENANT, q.value)
                rows.add(f"ListTasks `{q.filter}`, first page", ours, raw, indexes)

                token, walked = "", time.perf_counter()
                for _ in range(deep_page - 1):
                    token = (await page(q.filter, token)).next_page_token
                walked = (time.perf_counter() - walked) / (deep_page - 1) * 1000
                print(f"  walked {deep_page - 1} pages of {q.filter!r}: {walked:.2f} ms a page")
                at = await conn.fetchrow(
                    f"SELECT create_time, id FROM {TABLE} WHERE {LIVE} AND {q.where} {ORDER} "
                    f"OFFSET {(deep_page - 1) * PAGE - 1} LIMIT 1",
                    TENANT,
                    q.value,
                )
                deep = (
                    f"SELECT * FROM {TABLE} WHERE {LIVE} AND {q.where} "
                    f"AND (create_time, id) > ($3, $4) {ORDER} LIMIT {PAGE + 1}"
                )
                assert at is not None, f"{q.filter}: fewer than {deep_page} pages"
                params = (TENANT, q.value, at["create_time"], at["id"])
                ours = await median_ms(args.calls, page, q.filter, token)
                raw = await median_ms(args.calls, conn.fetch, deep, *params)
                indexes = await plan_indexes(conn, deep, *params)
                rows.add(f"ListTasks `{q.filter}`, page {deep_page}", ours, raw, indexes)
            aggregate = channel.unary_unary(
                SERVICE + "AggregateTasks",
                request_serializer=m.AggregateTasksRequest.SerializeToString,
                response_deserializer=m.AggregateTasksResponse.FromString,
            )
            for a in AGGREGATES:
                request = m.AggregateTasksRequest(
                    filter=a.filter,
                    group_by=a.group_by,
                    aggregations=[
                        Aggregation(function=function, field=field, alias=f"v{i}")
                        for i, (function, field) in enumerate(a.aggregations)
                    ],
                    page_size=PAGE,
                )
                groups = (await aggregate(request, metadata=metadata, timeout=60)).groups
                expected = await conn.fetch(a.sql, TENANT)
                assert len(groups) == min(len(expected), PAGE), f"{a.name}: {len(groups)} groups"
                # The aggregate's own bound (REPOGATE_AGGREGATE_TIMEOUT) is raised for the bench.
                ours = await median_ms(
                    args.aggregate_calls,
                    aggregate,
                    request,
                    metadata=metadata,
                    timeout=AGGREGATE_SECONDS,
                )
                raw = await median_ms(args.aggregate_calls, conn.fetch, a.sql, TENANT)
                indexes = await plan_indexes(conn, a.sql, TENANT)
                rows.add(f"AggregateTasks {a.name}", ours, raw, indexes)
        finally:
            await conn.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dsn = seed.database_dsn(args.pg, DATABASE)
    asyncio.run(seed.create_database(args.pg, DATABASE))
    server = None
    try:
        address = f"127.0.0.1:{free_port()}"
        env = repogate_env(dsn, "", address, 10) | {
            "REPOGATE_SCHEMA": str(SCHEMA),
            "REPOGATE_AGGREGATE_TIMEOUT": str(AGGREGATE_SECONDS),
        }
        env.pop("REPOGATE_REDIS_URL")
        seed.migrate(BIN / "repogate", env)
        took = asyncio.run(fill(dsn, args.rows))
        print(
            f"filled {args.rows:,} + {max(1, args.rows // 10):,} rows in {took:.0f} s", flush=True
        )
        argv_server = [str(BIN / "repogate"), "serve", "--no-migrate"]
        server = Server("bulk", argv_server, address, env, RESULTS / "bulk" / "repogate.log")
        server.wait_serving()
        rows = asyncio.run(measure(address, dsn, args))
        print("\n".join(rows.lines))
        return 0
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            asyncio.run(seed.drop_database(args.pg, DATABASE))


if __name__ == "__main__":
    sys.exit(main())

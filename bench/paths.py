"""`python -m bench.paths`: ListTasks filtered by a path into a Struct and by a tag, and
AggregateTasks, over many tasks of one tenant, against the same query in raw SQL.

The tasks of tests/schemas/tasks (payload a `searchable` Struct with an index on
`payload.score`, tags a filterable repeated string: see docs/filtering.md) are copied
into a database of the benchmark's own, 1,000,000 by default, all of one tenant:
payload.score is n % 1000, tags [g<n % 10>] and, on one task in a thousand, "rare".
Then `repogate serve` answers ListTasks (page_size 50, the default order) for each
filter: the first page, and where 50,000 rows match, the page 1,000 pages in (its token
found by walking there). Each call is timed one at a time from a client on this
machine, and so is the statement the server runs for it, sent by asyncpg with the same
values on one connection: the difference is what the server adds (gRPC, the filter's
compilation, the rows' encoding). Medians of `--calls` calls each; the plan's indexes
come from EXPLAIN of the raw statement.

AggregateTasks is timed the same way (`--aggregate-calls`, each a scan of every row) against
the GROUP BY a user would write for it by hand, on the same connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from bench import seed
from bench.procs import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "schemas" / "tasks"
TENANT = "bench-paths"
DATABASE = "repogate_bench_paths"
PAGE = 50
DEEP = 1000
# (label, filter, deep): deep filters match at least PAGE * DEEP rows of a million.
FILTERS = [
    ("path range, 0.5 %", "payload.score >= 995", False),
    ("path range, 10 %", "payload.score < 100", True),
    ("path equality, 1 %", 'payload.workspace = "w7"', False),
    ("tag, 0.1 %", 'tags:"rare"', False),
    ("tag, 10 %", 'tags:"g3"', True),
    ("either tag, 10.1 %", 'tags:"g3" OR tags:"rare"', False),
]

# (label, filter, group_by, aggregations as (function, field), the same in SQL over $1's
# live tasks, its groups in key order): every row, or a tenth of them.
_LIVE = "FROM tasks WHERE tenant_id = $1::text AND delete_time IS NULL"
_SCORE = "(payload ->> 'score')::float8"
AGGREGATES = [
    (
        "by priority: count, sum and avg of payload.score",
        "",
        ["priority"],
        [
            ("FUNCTION_COUNT", ""),
            ("FUNCTION_SUM", "payload.score"),
            ("FUNCTION_AVG", "payload.score"),
        ],
        f"SELECT priority, count(*), sum({_SCORE}), avg({_SCORE}) {_LIVE} "
        "GROUP BY priority ORDER BY priority",
    ),
    (
        "by payload.workspace: count",
        "",
        ["payload.workspace"],
        [("FUNCTION_COUNT", "")],
        f"SELECT payload -> 'workspace' AS k, count(*) {_LIVE} GROUP BY k ORDER BY k LIMIT {PAGE}",
    ),
    (
        "by create_time.hour: count",
        "",
        ["create_time.hour"],
        [("FUNCTION_COUNT", "")],
        f"SELECT date_trunc('hour', create_time AT TIME ZONE 'UTC') AS k, count(*) {_LIVE} "
        "GROUP BY k ORDER BY k",
    ),
    (
        'tags:"g3", by priority: count',
        'tags:"g3"',
        ["priority"],
        [("FUNCTION_COUNT", "")],
        f"SELECT priority, count(*) {_LIVE} AND tags @> '[\"g3\"]' GROUP BY priority "
        "ORDER BY priority",
    ),
]
# The aggregate's own bound (REPOGATE_AGGREGATE_TIMEOUT, 10 s) is raised for a slow machine.
AGGREGATE_SECONDS = 120


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.paths", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=30, help="timed calls per query")
    parser.add_argument("--deep", type=int, default=DEEP, help="the deep page's number")
    parser.add_argument("--aggregate-calls", type=int, default=5, help="timed calls per aggregate")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args(argv)


def task_class(name: str) -> type[Message]:
    from schema.loading import load

    load(SCHEMA)
    found = descriptor_pool.Default().FindMessageTypeByName(f"acme.tasks.v1.{name}")
    return message_factory.GetMessageClass(found)


async def migrate_and_seed(dsn: str, rows: int) -> float:
    """The schema's tables, and `rows` tasks of TENANT; answers the seconds it took."""
    from repositories.database import create_engine
    from repositories.migrate import upgrade
    from schema.declared import declare
    from schema.loading import load

    started = time.perf_counter()
    engine = create_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        await upgrade(engine, declared=declare(load(SCHEMA)))
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(dsn)
    try:
        project = uuid.uuid4()
        start = datetime.now(UTC) - timedelta(days=30)
        await conn.execute(
            "INSERT INTO projects (tenant_id, id, version, create_time, update_time, name, "
            "description, code) VALUES ($1, $2, 1, $3, $3, 'bench', '', '')",
            TENANT,
            project,
            start,
        )
        columns = [
            *("tenant_id", "id", "version", "create_time", "update_time", "project_id"),
            *("title", "state", "priority", "tags", "payload", "attempts"),
        ]
        for first in range(0, rows, 100_000):
            records = []
            for n in range(first, min(rows, first + 100_000)):
                created = start + timedelta(milliseconds=n)
                tags = [f"g{n % 10}"] + (["rare"] if n % 1000 == 7 else [])
                payload = {"score": float(n % 1000), "workspace": f"w{n % 100}"}
                standard = (TENANT, uuid.uuid4(), 1, created, created)
                own = (project, f"task {n}", "open", n % 11, json.dumps(tags), json.dumps(payload))
                records.append((*standard, *own, 0))
            await conn.copy_records_to_table("tasks", records=records, columns=columns)
        await conn.execute("VACUUM ANALYZE tasks")
    finally:
        await conn.close()
    return time.perf_counter() - started


class Lister:
    """ListTasks of TENANT at `address`, and the statement it runs, for one filter."""

    def __init__(self, address: str, dsn: str) -> None:
        from repositories.filtering import Filters
        from schema.declared import declare
        from schema.loading import load

        self.channel = grpc.insecure_channel(address)
        self.request_cls = task_class("ListTasksRequest")
        response = task_class("ListTasksResponse")
        self.call = self.channel.unary_unary(
            "/acme.tasks.v1.TaskService/ListTasks",
            request_serializer=self.request_cls.SerializeToString,
            response_deserializer=response.FromString,
        )
        self.repository = declare(load(SCHEMA)).resources["acme.tasks.v1.Task"].repository
        self.filters = Filters(self.repository.entity.filter_fields())
        self.dsn = dsn

    def page(self, text: str, token: str = "") -> Any:
        request = self.request_cls(filter=text, page_size=PAGE, page_token=token)
        return self.call(request, metadata=(("x-tenant-id", TENANT),), timeout=60)

    def statement(self, text: str, after: Any = None) -> tuple[str, list[Any]]:
        """The SQL and values of the page the server reads for `text` after the row
        `after` (a ListTasks item), as repositories/base.py builds it."""
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        from repositories.ordering import after as keyset_after
        from repositories.scope import TENANT_PARAM, TenantScope

        entity = self.repository.entity
        scope = TenantScope(entity.table, TENANT)
        stmt = scope.select().where(
            self.filters.compile(text), entity.table.c.delete_time.is_(None)
        )
        order = entity.order
        if after is not None:
            position = [after.create_time.ToDatetime(tzinfo=UTC), uuid.UUID(after.id)]
            stmt = stmt.where(keyset_after(order, position))
        stmt = stmt.order_by(*(key.clause() for key in order)).limit(PAGE + 1)
        compiled = stmt.compile(dialect=dialect())
        params = {**compiled.params, TENANT_PARAM: TENANT}
        return str(compiled), [params[name] for name in compiled.positiontup or ()]


def median_ms(calls: int, once: Callable[[], Any]) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        once()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def raw(dsn: str, sql: str, values: list[Any], calls: int) -> tuple[float, int, list[str]]:
    """Median ms of `sql` on one asyncpg connection, the rows it reads, the indexes it uses."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(sql, *values)  # warm, as the server's connection is
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await conn.fetch(sql, *values)
            times.append((time.perf_counter() - started) * 1000)
        plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *values))
    finally:
        await conn.close()
    return statistics.median(times), len(rows), sorted(indexes(plan[0]["Plan"]))


def indexes(node: dict[str, Any]) -> set[str]:
    found = {node["Index Name"]} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        found |= indexes(child)
    return found


def measure(lister: Lister, dsn: str, calls: int, deepest: int) -> list[dict[str, Any]]:
    results = []
    for label, text, deep in FILTERS:
        for depth in (1, deepest) if deep else (1,):
            token, last = "", None
            for _ in range(depth - 1):
                page = lister.page(text, token)
                token, last = page.next_page_token, page.tasks[-1]
            first = lister.page(text, token)
            assert len(first.tasks) == PAGE, (text, depth, len(first.tasks))
            served = median_ms(calls, lambda t=text, k=token: lister.page(t, k))
            sql, values = lister.statement(text, last)
            direct, read, used = asyncio.run(raw(dsn, sql, values, calls))
            assert read == PAGE + 1, (text, depth, read)
            results.append(
                {"query": label, "filter": text, "page": depth, "listtasks_ms": served}
                | {"raw_sql_ms": direct, "indexes": used}
            )
            print(
                f"{label:<20} page {depth:>4}  ListTasks {served:7.2f} ms  "
                f"raw SQL {direct:7.2f} ms  {', '.join(used)}",
                flush=True,
            )
    return results


def aggregates(address: str, dsn: str, calls: int) -> list[dict[str, Any]]:
    from repogate.v1.aggregate_pb2 import Aggregation

    request_cls = task_class("AggregateTasksRequest")
    response_cls = task_class("AggregateTasksResponse")
    results = []
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/acme.tasks.v1.TaskService/AggregateTasks",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        for label, text, group_by, functions, sql in AGGREGATES:
            request = request_cls(
                filter=text,
                group_by=group_by,
                aggregations=[Aggregation(function=f, field=field) for f, field in functions],
                page_size=PAGE,
            )

            def once(r: Message = request) -> Any:
                metadata = (("x-tenant-id", TENANT),)
                return call(r, metadata=metadata, timeout=AGGREGATE_SECONDS)

            groups = once().groups
            served = median_ms(calls, once)
            direct, read, used = asyncio.run(raw(dsn, sql, [TENANT], calls))
            assert read == len(groups), (label, read, len(groups))
            results.append(
                {"query": label, "aggregatetasks_ms": served, "raw_sql_ms": direct}
                | {"groups": read, "indexes": used}
            )
            print(
                f"{label:<50} AggregateTasks {served:8.1f} ms  raw SQL {direct:8.1f} ms  "
                f"{read} groups  {', '.join(used) or 'sequential scan'}",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dsn = seed.database_dsn(args.pg, DATABASE)
    asyncio.run(seed.create_database(args.pg, DATABASE))
    server = None
    try:
        seconds = asyncio.run(migrate_and_seed(dsn, args.rows))
        print(f"seeded {args.rows:,} tasks of one tenant in {seconds:.0f} s", flush=True)
        address = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REPOGATE_", "OTEL_"))}
        env |= {
            "REPOGATE_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "REPOGATE_SCHEMA": str(SCHEMA),
            "REPOGATE_LISTEN": address,
            "REPOGATE_PURGE_INTERVAL": "0",
            "REPOGATE_ACCESS_LOG": "false",
            "REPOGATE_TRACE_EXPORTER": "none",
            "REPOGATE_AGGREGATE_TIMEOUT": str(AGGREGATE_SECONDS),
        }
        log = ROOT / "bench" / "results" / "logs" / "paths.log"
        argv_serve = [str(Path(sys.executable).parent / "repogate"), "serve", "--no-migrate"]
        server = Server("repogate", argv_serve, address, env, log)
        server.wait_serving()
        results = measure(Lister(address, dsn), dsn, args.calls, args.deep)
        grouped = aggregates(address, dsn, args.aggregate_calls)
        out = ROOT / "bench" / "results" / f"paths-{int(time.time())}.json"
        document = {"rows": args.rows, "results": results, "aggregates": grouped}
        out.write_text(json.dumps(document, indent=2))
        print(f"results: {out}")
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            asyncio.run(seed.drop_database(args.pg, DATABASE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Caches across processes (the `coherence` group): two Repogates on one database without
Redis, each caching in its own memory and reading the other's writes from the change
log (repositories/change_log.py, server/coherence.py).

- GetUser cache hits on one process while the other updates other rows at a steady
  rate, alternating with the same hits without the writes: the ratio is what
  following the log costs the reader.
- How stale a Get through one process is after a write through the other: the delay
  from the write's answer to the first Get that shows it, over many writes.
- What recording costs a write: UpdateUser (recorded) and CreateUser (inserts are
  not) with the change triggers enabled and disabled, alternating.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import asyncpg
import grpc

from bench import h2load, rpc, seed, stats
from bench.report import Row, judge
from bench.run import Bench, alternated, by_rate
from bench.scenarios import DriverScenario, H2Scenario, Target, run_driver, run_h2load
from repogate.v1 import user_pb2

# Each process keeps its own memory cache: REPOGATE_REDIS_URL empty means none.
NO_REDIS = {"REPOGATE_REDIS_URL": ""}
GET = "repogate.v1.UserService/GetUser"
UPDATE = "repogate.v1.UserService/UpdateUser"
WRITE_TENANT = "bench-coherence"


def scenarios(bench: Bench) -> None:
    tenant = f"{seed.TENANT_PREFIX}1"
    reader = bench.start_repogate("repogate-memory-reader", NO_REDIS)
    writer = bench.start_repogate("repogate-memory-writer", NO_REDIS)
    try:
        hit, other = asyncio.run(seed.some_user_ids(bench.dsn, tenant, 4))[2:]
        get_under_writes(bench, reader, writer, tenant, hit, other)
        staleness(bench, reader, writer, tenant, other)
        write_cost(bench, writer)
    finally:
        bench.stop(reader)
        bench.stop(writer)


def get_under_writes(
    bench: Bench, reader: Target, writer: Target, tenant: str, hit: str, other: str
) -> None:
    """Three runs alternate: no writes; the writes with the change triggers disabled (the
    same load on the machine, nothing for the reader to read); and the writes recorded.
    The last against the second is what following the log costs the reader."""
    args, rate = bench.args, bench.args.invalidation_rate
    request = user_pb2.GetUserRequest(id=hit)
    rpc.get_user(reader.address, tenant, hit)  # fills the reader's cache
    update = user_pb2.UpdateUserRequest(user=user_pb2.User(id=other, display_name="churn"))
    rpc.call(writer.address, "/" + UPDATE, update.SerializeToString(), tenant)  # answers OK
    runs: dict[str, list[Row]] = {"quiet": [], "unrecorded": [], "recorded": []}
    names = {
        "quiet": "GetUser hit, no writes elsewhere",
        "unrecorded": f"GetUser hit, {rate:g} updates/s elsewhere, triggers disabled",
        "recorded": f"GetUser hit, {rate:g} updates/s elsewhere, each read from the log",
    }
    written = 0.0
    try:
        for _ in range(args.repeat):
            scenario = H2Scenario(names["quiet"], GET, request, tenant)
            runs["quiet"].append(run_h2load(scenario, reader, bench.load)[0])
            for kind in ("unrecorded", "recorded"):
                asyncio.run(set_triggers(bench.dsn, enabled=kind == "recorded"))
                scenario = H2Scenario(names[kind], GET, request, tenant)
                row, rate_done = _while_writing(bench, scenario, reader, writer, update)
                runs[kind].append(row)
                written = max(written, rate_done)
    finally:
        asyncio.run(set_triggers(bench.dsn, enabled=True))
    quiet = bench.add(by_rate(runs["quiet"]))
    unrecorded = bench.add(by_rate(runs["unrecorded"]))
    recorded = bench.add(by_rate(runs["recorded"]))
    judge(unrecorded, quiet, "throughput")
    judge(recorded, unrecorded, "throughput")
    unrecorded.notes.append(
        f"two Repogates on PostgreSQL without Redis; the other one answered {written:,.0f} "
        "UpdateUser/s of another user (h2load, steady): the load the writes put on the machine"
    )
    recorded.notes.append(
        "the same writes, recorded: this one reads each from the change log and tombstones it "
        "in its memory cache; the ratio is what that costs its Gets"
    )
    for row in (unrecorded, recorded):
        if row.server_cpu_us and quiet.server_cpu_us:
            row.notes.append(
                f"server CPU per Get {row.server_cpu_us:.0f} us, "
                f"{row.server_cpu_us / quiet.server_cpu_us:.2f}x that without writes"
            )
    alternated(quiet, runs["quiet"], recorded, runs["recorded"])
    rates = ", ".join(f"{r.rate:,.0f}" for r in runs["unrecorded"] if r.rate is not None)
    unrecorded.notes.append(f"median of {args.repeat} alternating runs; req/s {rates}")


def _while_writing(
    bench: Bench,
    scenario: H2Scenario,
    reader: Target,
    writer: Target,
    update: user_pb2.UpdateUserRequest,
) -> tuple[Row, float]:
    """`scenario` on `reader` while `writer` answers `update` at a steady rate; the row,
    and the rate the writes ran at."""
    args = bench.args
    # The writes go on through the reader's warm-up and its measured run.
    steady = h2load.Load(1, 1, args.seconds + 3, rps_per_client=args.invalidation_rate)
    url = f"http://{writer.address}/{UPDATE}"
    writes = h2load.start(url, h2load.frame(update), [f"x-tenant-id: {scenario.tenant}"], steady)
    before = rpc.calls(reader.address, "UserService/GetUser")
    row = run_h2load(scenario, reader, bench.load)[0]
    after = rpc.calls(reader.address, "UserService/GetUser")
    done = writes.wait(timeout=args.seconds * 4 + 60)
    if after.cache_misses - before.cache_misses > 1:
        raise RuntimeError("the reader's Gets missed its cache while the writer wrote")
    return row, done.succeeded / done.seconds


def staleness(bench: Bench, reader: Target, writer: Target, tenant: str, id_: str) -> None:
    """Writes through `writer`, then Gets through `reader` until one shows the write."""
    delays = []
    with grpc.insecure_channel(reader.address) as r, grpc.insecure_channel(writer.address) as w:
        get = r.unary_unary("/" + GET)
        update = w.unary_unary("/" + UPDATE)
        metadata = (("x-tenant-id", tenant),)
        request = user_pb2.GetUserRequest(id=id_).SerializeToString()

        def fetch() -> user_pb2.User:
            return user_pb2.User.FromString(get(request, metadata=metadata, timeout=10))

        for i in range(bench.args.staleness_writes):
            # Not in step with the reader's reads of the log: each write lands anywhere
            # between two of them.
            time.sleep(random.uniform(0, 0.2))
            fetch()  # cached (again) before the write
            change = user_pb2.UpdateUserRequest(user=user_pb2.User(id=id_, display_name=f"s{i}"))
            etag = user_pb2.User.FromString(
                update(change.SerializeToString(), metadata=metadata, timeout=10)
            ).etag
            written = time.perf_counter()
            while (
                user_pb2.User.FromString(get(request, metadata=metadata, timeout=10)).etag != etag
            ):
                if time.perf_counter() - written > 30:
                    raise RuntimeError(f"the reader never showed write {i}")
            delays.append((time.perf_counter() - written) * 1e6)
    row = Row(
        "staleness: write through one process, Get through another",
        "python, polling",
        unit="ms",
        p50_ms=(stats.percentile(delays, 50) or 0) / 1000,
        p99_ms=(stats.percentile(delays, 99) or 0) / 1000,
    )
    row.notes.append(
        f"{len(delays)} UpdateUsers, each followed by Gets through the other process until one "
        f"answered its etag: max {max(delays) / 1000:.1f} ms, mean "
        f"{statistics.mean(delays) / 1000:.1f} ms (the documented bound is 1 s)"
    )
    bench.add(row)


def write_cost(bench: Bench, writer: Target) -> None:
    """UpdateUser and CreateUser with the change triggers enabled and disabled, alternating."""
    args = bench.args
    for kind, name in (("update", "UpdateUser"), ("create", "CreateUser")):
        scenario = DriverScenario(name, kind, WRITE_TENANT, 32)
        on: list[Row] = []
        off: list[Row] = []
        try:
            for _ in range(args.repeat):
                asyncio.run(set_triggers(bench.dsn, enabled=False))
                off.append(run_driver(scenario, writer, args.seconds))
                asyncio.run(set_triggers(bench.dsn, enabled=True))
                on.append(run_driver(scenario, writer, args.seconds))
        finally:
            asyncio.run(set_triggers(bench.dsn, enabled=True))
        base = by_rate(off)
        base.name = f"{name}, change triggers disabled"
        row = by_rate(on)
        row.name = f"{name}, change triggers enabled"
        bench.add(base)
        bench.add(row)
        judge(row, base, "throughput")
        row.notes.append(
            "one Repogate without Redis; each UPDATE also appends what it changed to the "
            "unlogged change log"
            if kind == "update"
            else "inserts record nothing"
        )
        alternated(base, off, row, on)


async def set_triggers(dsn: str, *, enabled: bool) -> None:
    """Enables or disables every change trigger (repositories/change_log.py) in the database."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND t.tgname LIKE '%\\_changes\\_%'"
        )
        if not rows:
            raise RuntimeError("no change triggers in the bench database: is it at 0005?")
        verb = "ENABLE" if enabled else "DISABLE"
        for row in rows:
            await conn.execute(f'ALTER TABLE "{row["relname"]}" {verb} TRIGGER "{row["tgname"]}"')
    finally:
        await conn.close()

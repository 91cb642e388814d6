"""`python -m bench`: the whole benchmark, from an empty bench database to the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import callgrind, facts, h2load, profile, report, rpc, seed
from bench.options import parse_args
from bench.procs import Server, free_port
from bench.report import Row
from bench.scenarios import DriverScenario, H2Scenario, Target, run_driver, run_h2load
from repogate.v1 import user_pb2

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
PAGE_SECRET = "repogate-bench-page-token-secret"
DEEP_TENANT, TENANT = f"{seed.TENANT_PREFIX}0", f"{seed.TENANT_PREFIX}1"
WRITE_TENANT = "bench-writes"
LIST_REQUEST = user_pb2.ListUsersRequest(
    page_size=50, filter="is_active = true", order_by="create_time desc"
)


def workers_supported() -> bool:
    out = subprocess.run(
        [str(BIN / "repogate"), "serve", "--help"], capture_output=True, text=True, check=False
    )
    return "--workers" in out.stdout


@dataclass
class Ids:
    hit: str = ""
    miss: str = ""
    deep_token: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = datetime.now(UTC)
        self.stamp = self.started.strftime("%Y%m%d-%H%M%S")
        self.logs = RESULTS / "logs" / self.stamp
        self.dsn = seed.database_dsn(args.pg, args.database)
        self.load = h2load.Load(args.clients, args.streams, args.seconds, warmup=args.warmup)
        self.rows: list[Row] = []
        self.found: dict[str, Row] = {}
        self.servers: list[Server] = []
        self.extra: dict[str, object] = {}
        self.ids = Ids()
        self.profile_text = ""

    # -- servers --------------------------------------------------------------

    def repogate_env(self, address: str, extra: dict[str, str]) -> dict[str, str]:
        args = self.args
        env = repogate_env(self.dsn, args.redis_url, address, args.pool_size)
        for setting in args.server_env:
            key, _, value = setting.partition("=")
            env[key] = value
        return env | extra

    def start_repogate(
        self, name: str, extra: dict[str, str], workers: int = 1, counted: Path | None = None
    ) -> Target:
        """`counted`: under callgrind, its counts dumped there (bench/callgrind.py)."""
        address = f"127.0.0.1:{free_port()}"
        argv = [str(BIN / "repogate"), "serve", "--no-migrate"]
        if workers > 1:
            argv += ["--workers", str(workers)]
        if counted is not None:
            # The interpreter itself first: callgrind does not follow a script's exec.
            argv = callgrind.wrap([sys.executable, *argv], counted)
        server = Server(name, argv, address, self.repogate_env(address, extra), self.log(name))
        self.servers.append(server)
        server.wait_serving(timeout=180 if counted else 60, workers=workers)
        return Target(server, repogate=True, workers=workers)

    def start_baseline(self, mode: str) -> Target:
        address = f"127.0.0.1:{free_port()}"
        dsn = seed.database_dsn(self.args.pg, self.args.database)
        argv = baseline_argv(mode, address, dsn, self.args.pool_size, self.args.redis_url)
        name = f"baseline-{mode}"
        server = Server(name, argv, address, dict(os.environ), self.log(name))
        self.servers.append(server)
        server.wait_serving()
        return Target(server)

    def start_otlp_sink(self) -> Target:
        address = f"127.0.0.1:{free_port()}"
        argv = [sys.executable, "-m", "bench.otlp_sink", "--listen", address]
        server = Server("otlp-sink", argv, address, dict(os.environ), self.log("otlp-sink"))
        self.servers.append(server)
        server.wait_serving()
        return Target(server)

    def stop(self, target: Target) -> None:
        """Stops a server; one that exited on its own before is a failed row."""
        server = target.server
        if server.proc.poll() is not None:
            row = Row(f"{server.name}: exited while serving", "-", verdict=report.FAILED)
            row.notes.append(f"exit code {server.proc.returncode}; its log: {server.log}")
            self.add(row)
        server.stop()
        self.servers.remove(server)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # -- rows -----------------------------------------------------------------

    def add(self, row: Row, key: str = "") -> Row:
        self.rows.append(row)
        if key:
            self.found[key] = row
        rate = "-" if row.rate is None else f"{row.rate:,.0f} {row.unit}"
        p50 = "-" if row.p50_ms is None else f"{row.p50_ms:.2f} ms"
        print(f"  {row.name}: {rate}, p50 {p50}", file=sys.stderr, flush=True)
        return row

    def h2(self, scenario: H2Scenario, target: Target, key: str = "") -> Row:
        return self.add(run_h2load(scenario, target, self.load)[0], key)

    def drive(self, scenario: DriverScenario, target: Target, key: str = "") -> Row:
        return self.add(run_driver(scenario, target, self.args.seconds), key)

    # -- the run --------------------------------------------------------------

    def run(self) -> int:
        if h2load.available() is None:
            print("h2load is missing: apt-get install nghttp2-client", file=sys.stderr)
            return 2
        machine = asyncio.run(facts.collect(self.args.pg, self.args.redis_url))
        machine["repogate_workers_flag"] = workers_supported()
        print_facts(machine)
        try:
            self.setup()
            self.measure()
        finally:
            self.cleanup()
        machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        self.extra["config"] = {k: v for k, v in vars(self.args).items() if k != "groups"}
        self.extra["duration_seconds"] = (datetime.now(UTC) - self.started).total_seconds()
        if self.profile_text:
            print(f"\n{self.profile_text}")
        self.extra["setup"] = setup = self.describe()
        print("\nhow:")
        print("\n".join(f"  {line}" for line in setup))
        print()
        if self.args.smoke:
            report.smoke(self.rows)
        print(report.table(self.rows))
        out = RESULTS / f"bench-{self.stamp}.json"
        report.write_json(out, machine, self.rows, self.extra)
        print(f"\nwritten: {out.relative_to(ROOT)} ({self.extra['duration_seconds']:.0f} s)")
        failed = report.failures(self.rows)
        for row in failed:
            why = [f"{row.errors} calls failed"] if row.errors else row.notes
            print(f"FAILED: {row.name}: {'; '.join(why)}", file=sys.stderr)
        return 1 if failed else 0

    def describe(self) -> list[str]:
        a, pool = self.args, self.args.pool_size
        return [
            f"Repogate on PostgreSQL ({a.database}) and Redis ({a.redis_url}), one process unless "
            f"stated; pool {pool} + {pool // 2} overflow per process, REPOGATE_MAX_TRANSACTIONS "
            f"{max(1, pool - 2)}, the one tenant's share the whole pool, pre-ping as configured "
            "(default on), access log, tracing, "
            "metrics and purge off unless stated" + (f"; {a.server_env}" if a.server_env else ""),
            f"bare baselines: grpc.aio on uvloop, same method paths and messages; asyncpg pool "
            f"{pool}; redis-py",
            f"h2load: {a.clients} connections x {a.streams} streams, {a.warmup} warm-up "
            f"requests, then {a.seconds:g} s; latencies from its per-request log; server CPU "
            "and peak RSS from psutil over the measured window (workers included)",
            "python driver (bench/driver.py): grpc.aio on uvloop, raw bytes, 4 channels, closed "
            f"loop, 1 s warm-up, then {a.seconds:g} s; used where every request must differ or "
            "calls chain; its ceiling is the no-op row above each of its scenarios",
            "ratios compare runs of this one invocation; absolute numbers drift +-25 % between "
            "runs on a shared machine",
        ]

    def setup(self) -> None:
        print("setting up the bench database", file=sys.stderr, flush=True)
        seed.delete_keys(self.args.redis_url)
        asyncio.run(seed.create_database(self.args.pg, self.args.database))
        seed.migrate(BIN / "repogate", self.repogate_env("127.0.0.1:0", {}))
        plan = seed.SeedPlan(self.args.users, self.args.tenants)
        seeded = asyncio.run(seed.seed_users(self.dsn, plan))
        row = Row(
            f"seed: COPY {seeded.rows:,} users, {len(seeded.counts)} tenants",
            "asyncpg COPY",
            unit="rows/s",
            rate=seeded.rows / seeded.copy_seconds,
        )
        row.notes.append(
            f"seeding took {seeded.seconds:.1f} s in all (rows built, COPY, ANALYZE); "
            f"{DEEP_TENANT} holds {seeded.counts[DEEP_TENANT]:,}"
        )
        self.add(row, "copy")
        self.extra["seed"] = {"seconds": seeded.seconds, "counts": seeded.counts}

    def measure(self) -> None:
        # The groups' modules build on this one.
        from bench import coherence, declared, footprint, interceptors, reads, transactions, writes

        groups = self.args.groups
        main = self.start_repogate("repogate", {})
        idle_start = max(main.server.rss())
        self.prepare(main)
        noop = self.start_baseline("noop")
        pg = self.start_baseline("pg")
        for group, run in (
            ("get", lambda: reads.gets(self, main, noop, pg)),
            ("list", lambda: reads.lists(self, main, pg)),
            ("write", lambda: writes.writes(self, main, noop, pg)),
            ("tx", lambda: transactions.transactions(self, main, noop, pg)),
            ("forward", lambda: transactions.forwarded(self, main)),
        ):
            if group in groups:
                self.guarded(group, run)
        self.stop(pg)
        self.stop(noop)
        if "declared" in groups:
            self.guarded("declared", lambda: declared.scenarios(self))
        if "coherence" in groups:
            self.guarded("coherence", lambda: coherence.scenarios(self))
        if "interceptors" in groups:
            self.guarded("interceptors", lambda: interceptors.scenarios(self, main))
        if "soak" in groups and self.args.soak > 0:
            self.guarded("soak", lambda: footprint.soak(self, main))
        time.sleep(1.0)
        footprint.idle_row(self, "Repogate idle RSS (1 worker)", main, idle_start)
        if "workers" in groups:
            self.guarded("workers", lambda: footprint.workers(self, main))
        if self.args.profile > 0:
            self.guarded("profile", lambda: self.profiles(main))
        self.stop(main)

    def guarded(self, group: str, run: Callable[[], None]) -> None:
        """Runs a group of scenarios; a failure is reported as a row, and the rest go on."""
        try:
            run()
        except Exception as exc:
            traceback.print_exc()
            row = Row(f"{group}: FAILED", "-", verdict=report.FAILED)
            row.notes.append(
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            row.notes += self.dead_servers()
            self.add(row)

    def dead_servers(self) -> list[str]:
        """Servers that exited while they should be serving, with where their log is."""
        return [
            f"{server.name} exited with {server.proc.returncode}; its log: {server.log}"
            for server in self.servers
            if server.proc.poll() is not None
        ]

    def prepare(self, main: Target) -> None:
        """Picks the users to read, pins a miss, warms a hit, walks to the deep page."""
        hit, miss = asyncio.run(seed.some_user_ids(self.dsn, TENANT, 2))
        self.ids.hit, self.ids.miss = hit, miss
        rpc.get_user(main.address, TENANT, hit)  # fills the cache
        key = rpc.pin_miss(self.args.redis_url, TENANT, miss)
        rpc.get_user(main.address, TENANT, miss)
        if rpc.cached(self.args.redis_url, key) != rpc.PINNED_MISS:
            raise RuntimeError("a GetUser replaced the pinned miss: the cache-miss path changed")
        if "list" in self.args.groups:
            started = time.perf_counter()
            self.ids.deep_token = rpc.page_token(
                main.address, DEEP_TENANT, LIST_REQUEST, self.args.deep_pages
            )
            self.extra["deep_walk_seconds"] = time.perf_counter() - started

    def get_request(self, id_: str) -> user_pb2.GetUserRequest:
        return user_pb2.GetUserRequest(id=id_)

    def profiles(self, main: Target) -> None:
        """py-spy over Repogate while each scenario runs again; nothing here is measured."""
        if profile.available() is None:
            print("--profile: py-spy is missing (.venv/bin/pip install py-spy)", file=sys.stderr)
            return
        seconds = self.args.profile
        out = RESULTS / f"profile-{self.stamp}"
        get = "repogate.v1.UserService/GetUser"
        deep = user_pb2.ListUsersRequest()
        deep.CopyFrom(LIST_REQUEST)
        deep.page_token = self.ids.deep_token
        scenarios: list[tuple[str, H2Scenario | DriverScenario]] = [
            ("getuser-miss", H2Scenario("", get, self.get_request(self.ids.miss), TENANT)),
            ("getuser-hit", H2Scenario("", get, self.get_request(self.ids.hit), TENANT)),
            ("createuser", DriverScenario("", "create", WRITE_TENANT, 32)),
            ("batchcreateusers", DriverScenario("", "batch", WRITE_TENANT, 2, "rows/s")),
        ]
        if deep.page_token:
            method = "repogate.v1.UserService/ListUsers"
            scenarios.append(("listusers-deep", H2Scenario("", method, deep, DEEP_TENANT)))
        load = h2load.Load(self.load.clients, self.load.streams, seconds, warmup=self.load.warmup)
        summaries = []
        for name, scenario in scenarios:
            raw = out / f"{name}.txt"
            spy = profile.start(main.server.proc.pid, seconds + 1, raw)
            time.sleep(0.5)  # py-spy attaches
            if isinstance(scenario, H2Scenario):
                run_h2load(scenario, main, load)
            else:
                run_driver(scenario, main, seconds)
            spy.wait(timeout=seconds + 60)
            summary = profile.render(name, profile.summarise(raw.read_text()))
            (out / f"{name}.summary.txt").write_text(summary + "\n")
            summaries.append(summary)
        self.extra["profiles"] = str(out.relative_to(ROOT))
        self.profile_text = "\n\n".join(summaries)

    def cleanup(self) -> None:
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:  # keep cleaning up
                print(f"stopping {server.name}: {exc}", file=sys.stderr)
        self.servers.clear()
        try:
            deleted = seed.delete_keys(self.args.redis_url)
            asyncio.run(seed.drop_database(self.args.pg, self.args.database))
            print(
                f"cleaned up: dropped {self.args.database}, deleted {deleted} Redis keys",
                file=sys.stderr,
            )
        except Exception as exc:
            print(f"cleanup failed: {exc}", file=sys.stderr)


def baseline_argv(mode: str, address: str, dsn: str, pool_size: int, redis_url: str) -> list[str]:
    """The command of bench.baseline's bare server of `mode` (noop, pg, redis)."""
    argv = [sys.executable, "-m", "bench.baseline", mode, "--listen", address, "--dsn", dsn]
    return [*argv, "--pool-size", str(pool_size), "--redis-url", redis_url]


def repogate_env(dsn: str, redis_url: str, address: str, pool_size: int) -> dict[str, str]:
    """A bench Repogate's settings: this environment without REPOGATE_ and OTEL_ ones, and
    everything optional off (access log, tracing, the purge)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPOGATE_", "OTEL_"))}
    return env | {
        "REPOGATE_DATABASE_URL": dsn,
        "REPOGATE_REDIS_URL": redis_url,
        "REPOGATE_LISTEN": address,
        "REPOGATE_PURGE_INTERVAL": "0",
        "REPOGATE_ACCESS_LOG": "false",
        "REPOGATE_TRACE_EXPORTER": "none",
        "REPOGATE_PAGE_TOKEN_SECRET": PAGE_SECRET,
        "REPOGATE_DB_POOL_SIZE": str(pool_size),
        "REPOGATE_DB_MAX_OVERFLOW": str(pool_size // 2),
        "REPOGATE_MAX_TRANSACTIONS": str(max(1, pool_size - 2)),
        # One tenant, as the baselines have: its share is the whole pool, so the bulkhead
        # is paid for but does not cap the concurrency the baselines get.
        "REPOGATE_TENANT_MAX_CONCURRENCY": str(pool_size + pool_size // 2),
        "REPOGATE_LOG_LEVEL": "INFO",
    }


def env_for(template: dict[str, str], sink: str = "") -> dict[str, str]:
    """The settings with a free port wherever one is wanted, and the OTLP sink's address."""
    return {key: value.format(port=free_port(), sink=sink) for key, value in template.items()}


def alternated(base: Row, bases: list[Row], row: Row, rows: list[Row]) -> None:
    """Notes the rates of alternating runs on the two rows chosen from them."""
    for each, runs in ((base, bases), (row, rows)):
        each.notes.append(alternation(runs))


def alternation(runs: list[Row]) -> str:
    """The rates of a row's alternating runs, as its note."""
    rates = ", ".join(f"{r.rate:,.0f}" for r in runs if r.rate is not None)
    return f"median of {len(runs)} alternating runs; {runs[0].unit} {rates}"


def by_rate(rows: list[Row]) -> Row:
    """The run with the median rate."""
    ordered = sorted(rows, key=lambda row: row.rate or 0.0)
    return ordered[(len(ordered) - 1) // 2]


def by_cpu(rows: list[Row]) -> Row:
    """The run with the median server CPU per call."""
    ordered = sorted(rows, key=lambda row: row.server_cpu_us or 0.0)
    return ordered[(len(ordered) - 1) // 2]


def print_facts(machine: dict[str, object]) -> None:
    print("machine:")
    for key, value in machine.items():
        print(f"  {key:24} {value}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    return Bench(parse_args(argv)).run()

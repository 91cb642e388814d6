"""`python -m bench.ab`: what one change costs, per call, as a paired A/B.

Two Repogate servers run side by side on one seeded database, A and B, each with its
own settings (`--a`, `--b`) or code (`--a-path`, `--b-path`: a checkout put first on
PYTHONPATH, e.g. a `git worktree` of the commit before). Rounds alternate ABAB, BABA,
each a few seconds of h2load on one server calling GetUser (a cached read; `--miss` pins a
tombstone so that every GetUser misses the cache: Redis GET, lookup, refused fill),
UpdateUser of one row (`--call UpdateUser`, a single-row write), or ListUsers (the first
page of 50), or of bench.driver creating a different user each call (`--call CreateUser`,
32 callers), and the report is the median of the rounds' differences in server CPU per
call. Single runs drift by a fifth on shared machines; a paired median holds to about ten
microseconds. `--profile SECONDS` then samples each server with py-spy (bench/profile.py)
through one more run of that length and prints where its CPU went.

    python -m bench.ab --b REPOGATE_ACCESS_LOG=true
    python -m bench.ab --a-path /tmp/before --a REPOGATE_CACHE_ENTITIES=false \\
        --b REPOGATE_CACHE_ENTITIES=false

`{sink}` in a value starts bench.otlp_sink and names its address; `{port}` is a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from bench import callgrind, h2load, profile, rpc, seed
from bench.procs import Server, free_port
from bench.run import BIN, RESULTS, baseline_argv, env_for, repogate_env
from bench.scenarios import DriverScenario, Target, run_driver
from repogate.v1 import user_pb2

TENANT = f"{seed.TENANT_PREFIX}0"


def _update_user(id_: str) -> Message:
    user = user_pb2.User(id=id_, display_name="ab")
    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    return user_pb2.UpdateUserRequest(user=user, update_mask=mask)


# Calls that can be repeated with one request body, by method: the request for a user id.
CALLS = {
    "GetUser": lambda id_: user_pb2.GetUserRequest(id=id_),
    "UpdateUser": _update_user,
    "ListUsers": lambda id_: user_pb2.ListUsersRequest(page_size=50),
}
# Calls whose every request must differ, by method: bench.driver's kind for them.
DRIVEN = {"CreateUser": "create"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--a", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--a-path", type=Path, help="checkout whose code A runs")
    parser.add_argument(
        "--a-baseline",
        choices=("pg", "redis", "noop"),
        help="A is bench.baseline's bare server of this mode, not Repogate",
    )
    parser.add_argument("--b-path", type=Path, help="checkout whose code B runs")
    parser.add_argument("--call", choices=sorted([*CALLS, *DRIVEN]), default="GetUser")
    parser.add_argument("--miss", action="store_true", help="every GetUser misses the cache")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8, help="h2load connections")
    parser.add_argument("--streams", type=int, default=4, help="h2load streams per connection")
    parser.add_argument("--seconds", type=float, default=3.0, help="per server per round")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="repogate_ab")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument(
        "--profile", type=float, default=0, metavar="SECONDS", help="py-spy each server after"
    )
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="CALLS",
        help="count instructions per call under callgrind over CALLS calls a round, "
        "instead of CPU time (bench/callgrind.py)",
    )
    args = parser.parse_args(argv)
    if args.instructions and (args.call in DRIVEN or args.profile):
        parser.error("--instructions counts h2load's calls, without --profile")
    if args.instructions and callgrind.available() is None:
        parser.error("--instructions needs valgrind: apt-get install valgrind")
    return args


def settings(pairs: list[str], path: Path | None) -> dict[str, str]:
    env = dict(pair.split("=", 1) for pair in pairs)
    if path is not None:
        env["PYTHONPATH"] = str(path.resolve())
    return env


def cpu_per_call(server: Server, url: str, body: bytes, load: h2load.Load) -> float:
    """Server CPU µs per call over one h2load run, after a short warm-up."""
    headers = [f"x-tenant-id: {TENANT}"]
    h2load.run(url, body, headers, h2load.Load(load.clients, load.streams, requests=500))
    before = server.cpu_seconds()
    result = h2load.run(url, body, headers, load)
    if result.failed or not result.done:
        raise RuntimeError(f"{server.name}: {result.failed} of {result.done} calls failed")
    return (server.cpu_seconds() - before) / result.done * 1e6


def driven_cpu_per_call(server: Server, kind: str, seconds: float) -> float:
    """Server CPU µs per call over one bench.driver run (it warms up first)."""
    row = run_driver(DriverScenario(kind, kind, TENANT, 32), Target(server), seconds)
    if row.errors or row.server_cpu_us is None:
        raise RuntimeError(f"{server.name}: {row.errors} calls failed; {row.notes}")
    return row.server_cpu_us


def profiled(server: Server, seconds: float, measure: Callable[[float], float]) -> str:
    """Where `server` spends its CPU through one `measure` run of `seconds`, per py-spy."""
    raw = RESULTS / "ab" / f"profile-{server.name}.txt"
    spy = profile.start(server.proc.pid, seconds, raw)
    try:
        measure(seconds)
    finally:
        spy.wait(timeout=seconds + 30)
    return profile.render(f"{server.name} ({raw})", profile.summarise(raw.read_text(), 25))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dsn = seed.database_dsn(args.pg, args.database)
    asyncio.run(seed.create_database(args.pg, args.database))
    servers: list[Server] = []
    try:
        migrate_env = repogate_env(dsn, args.redis_url, "127.0.0.1:0", args.pool_size)
        seed.migrate(BIN / "repogate", migrate_env)
        asyncio.run(seed.seed_users(dsn, seed.SeedPlan(total=1_000, tenants=1)))
        (user_id,) = asyncio.run(seed.some_user_ids(dsn, TENANT, 1))
        templates = {
            "A": settings(args.a, args.a_path),
            "B": settings(args.b, args.b_path),
        }
        sink = ""
        if any("{sink}" in value for env in templates.values() for value in env.values()):
            sink = f"127.0.0.1:{free_port()}"
            argv_sink = [sys.executable, "-m", "bench.otlp_sink", "--listen", sink]
            log = RESULTS / "ab" / "sink.log"
            servers.append(Server("otlp-sink", argv_sink, sink, dict(os.environ), log))
            servers[-1].wait_serving()
        started: dict[str, Server] = {}
        counters: dict[str, callgrind.Counter] = {}
        for name, template in templates.items():
            address = f"127.0.0.1:{free_port()}"
            env = repogate_env(dsn, args.redis_url, address, args.pool_size)
            argv_server = [str(BIN / "repogate"), "serve", "--no-migrate"]
            if name == "A" and args.a_baseline:
                argv_server = baseline_argv(
                    args.a_baseline, address, dsn, args.pool_size, args.redis_url
                )
            elif args.instructions:
                # The interpreter itself first: callgrind does not follow a script's exec.
                argv_server = [sys.executable, *argv_server]
            out = RESULTS / "ab" / f"callgrind-{name}"
            if args.instructions:
                argv_server = callgrind.wrap(argv_server, out)
            log = RESULTS / "ab" / f"{name}.log"
            server = Server(name, argv_server, address, env | env_for(template, sink), log)
            servers.append(server)
            server.wait_serving(timeout=180 if args.instructions else 60)
            started[name] = server
            if args.instructions:
                counters[name] = callgrind.Counter(server.proc.pid, out)

        # Pinned once the servers run (as python -m bench does), and checked after a call.
        pinned = rpc.pin_miss(args.redis_url, TENANT, user_id) if args.miss else None
        if args.call not in DRIVEN:
            # h2load sees HTTP statuses only: each server answers the request OK first.
            request = CALLS[args.call](user_id).SerializeToString()
            for server in started.values():
                rpc.call(server.address, f"/repogate.v1.UserService/{args.call}", request, TENANT)
        if pinned is not None and rpc.cached(args.redis_url, pinned) != rpc.PINNED_MISS:
            raise RuntimeError("a GetUser replaced the pinned miss: the cache-miss path changed")
        counted: dict[str, list[callgrind.Counted]] = {"A": [], "B": []}

        def measure(server: Server, seconds: float) -> float:
            if args.instructions:
                body = h2load.frame(CALLS[args.call](user_id))
                load = h2load.Load(args.clients, args.streams, requests=args.instructions)
                url = f"http://{server.address}/repogate.v1.UserService/{args.call}"
                headers = [f"x-tenant-id: {TENANT}"]
                counter = counters[server.name]
                found = callgrind.count_calls(server.name, counter, url, body, headers, load)
                counted[server.name].append(found)
                return found.calls.instructions / found.count
            if args.call in DRIVEN:
                return driven_cpu_per_call(server, DRIVEN[args.call], seconds)
            body = h2load.frame(CALLS[args.call](user_id))
            load = h2load.Load(args.clients, args.streams, seconds)
            url = f"http://{server.address}/repogate.v1.UserService/{args.call}"
            return cpu_per_call(server, url, body, load)

        costs: dict[str, list[float]] = {"A": [], "B": []}
        measured, unit = ("instructions", "") if args.instructions else ("server CPU", " µs")
        for round_ in range(args.rounds):
            order = "AB" if round_ % 2 == 0 else "BA"
            for name in order:
                costs[name].append(measure(started[name], args.seconds))
            print(
                f"round {round_ + 1}: A {costs['A'][-1]:,.0f}{unit}, B {costs['B'][-1]:,.0f}{unit}",
                flush=True,
            )
        if args.instructions:
            # What both run idle, at the rate of all their idle windows, taken off each; a
            # bare baseline runs other code idle, so each server's own rate then.
            idle = [each.idle for name in counted for each in counted[name]]
            rates = {name: callgrind.idle_rate(idle) for name in counted}
            if args.a_baseline:
                rates = {n: callgrind.idle_rate([c.idle for c in counted[n]]) for n in counted}
            print(
                f"raw per call (idle included): A {statistics.median(costs['A']):,.0f}, "
                f"B {statistics.median(costs['B']):,.0f}; idle a second: "
                f"A {rates['A']:,.0f}, B {rates['B']:,.0f} "
                f"(windows: {', '.join(f'{w.instructions / w.seconds:,.0f}' for w in idle)})"
            )
            costs = {n: [each.per_call(rates[n]) for each in counted[n]] for n in costs}
        differences = [b - a for a, b in zip(costs["A"], costs["B"], strict=True)]
        a, b = statistics.median(costs["A"]), statistics.median(costs["B"])
        print(f"A: {templates['A'] or 'defaults'}")
        print(f"B: {templates['B'] or 'defaults'}")
        print(
            f"{measured} per {args.call}: A {a:,.0f}{unit}, B {b:,.0f}{unit} "
            f"(B/A {b / a:.3f}, A/B {a / b:.3f}); "
            f"B - A per round {', '.join(f'{d:+,.0f}' for d in sorted(differences))}; "
            f"median {statistics.median(differences):+,.0f}{unit}"
        )
        if args.profile > 0:
            for server in started.values():
                print(profiled(server, args.profile, partial(measure, server)), flush=True)
        return 0
    finally:
        for server in servers:
            server.stop()
        asyncio.run(seed.drop_database(args.pg, args.database))
        seed.delete_keys(args.redis_url)


if __name__ == "__main__":
    sys.exit(main())

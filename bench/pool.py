"""`python -m bench.pool`: what a pool size buys one process, as an A/B of two servers.

Each side is a `repogate serve` on a database of its own (so PostgreSQL's count of a
database's connections is that server's), with its own settings (`--a`, `--b`).
Rounds alternate AB, BA; each is `--seconds` of the bench driver's closed loop
(`--kind create`: CreateUser; `tx`: Begin, two creates, Commit) from `--concurrency`
callers. Reported per side: the median calls/s, the median p99, the most connections
it held (sampled from pg_stat_activity every 50 ms), and any errors.

    python -m bench.pool --a REPOGATE_DB_POOL_SIZE=20 --a REPOGATE_DB_MAX_OVERFLOW=10 \\
        --b REPOGATE_DB_POOL_SIZE=10 --b REPOGATE_DB_MAX_OVERFLOW=0 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from collections import Counter
from typing import Any

import asyncpg

from bench import seed
from bench.procs import Server, free_port
from bench.run import BIN, RESULTS, repogate_env

SIDES = ("A", "B")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__)
    parser.add_argument("--a", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--kind", choices=("create", "tx"), default="create")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="per server per round")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    return parser.parse_args(argv)


async def drive(args: argparse.Namespace, server: Server, database: str, tenant: str) -> Any:
    """One round on `server`: the driver's results, plus the most connections held."""
    driver = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.driver", args.kind, "--target", server.address),
        *("--tenant", tenant, "--seconds", str(args.seconds)),
        *("--concurrency", str(args.concurrency)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert driver.stdin is not None
    assert driver.stdout is not None
    if (await driver.stdout.readline()).strip() != b"ready":
        raise RuntimeError(f"the driver did not warm up against {server.name}")
    admin = await asyncpg.connect(args.pg)
    try:
        driver.stdin.write(b"go\n")
        reply = asyncio.create_task(driver.stdout.readline())
        peak = 0
        while not reply.done():
            count = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
            )
            peak = max(peak, count)
            await asyncio.wait([reply], timeout=0.05)
    finally:
        await admin.close()
    await driver.wait()
    return json.loads(reply.result()) | {"peak_connections": peak}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    databases = {side: f"repogate_pool_{side.lower()}" for side in SIDES}
    settings = {side: dict(p.split("=", 1) for p in getattr(args, side.lower())) for side in SIDES}
    servers: dict[str, Server] = {}
    try:
        for side in SIDES:
            dsn = seed.database_dsn(args.pg, databases[side])
            asyncio.run(seed.create_database(args.pg, databases[side]))
            address = f"127.0.0.1:{free_port()}"
            env = repogate_env(dsn, "", address, 10) | settings[side]
            env.pop("REPOGATE_REDIS_URL")  # each its own memory cache: no Redis in the way
            for key in ("REPOGATE_DB_POOL_SIZE", "REPOGATE_DB_MAX_OVERFLOW"):
                if key not in settings[side]:
                    env.pop(key)  # unset: the defaults
            env.pop("REPOGATE_MAX_TRANSACTIONS")
            seed.migrate(BIN / "repogate", env)
            argv_server = [str(BIN / "repogate"), "serve", "--no-migrate"]
            log = RESULTS / "pool" / f"{side}.log"
            servers[side] = Server(side, argv_server, address, env, log)
            servers[side].wait_serving()
        results: dict[str, list[Any]] = {side: [] for side in SIDES}
        for round_ in range(args.rounds):
            for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                tenant = f"bench-pool-{side}-{round_}"
                result = asyncio.run(drive(args, servers[side], databases[side], tenant))
                results[side].append(result)
                print(f"round {round_ + 1} {side}: {_line([result])}", flush=True)
        for side in SIDES:
            print(f"{side} {settings[side] or 'defaults'}: {_line(results[side])}")
        return 0
    finally:
        for server in servers.values():
            server.stop()
        for database in databases.values():
            asyncio.run(seed.drop_database(args.pg, database))


def _line(results: list[Any]) -> str:
    rates = [r["ops"] / r["seconds"] for r in results]
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    return (
        f"{statistics.median(rates):.0f} calls/s, "
        f"p99 {statistics.median(r['p99_us'] for r in results) / 1000:.1f} ms, "
        f"at most {max(r['peak_connections'] for r in results)} connections"
        + (f", errors {dict(errors)}" if errors else "")
    )


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench.shutdown`: how calls end when a server is stopped under them.

Each run starts `repogate serve` on a database of its own, sends CreateUser calls,
SIGTERMs the server and counts how every call ended: OK, or its status code and
ErrorInfo reason. It also checks that the database holds exactly the users answered
OK. Two loads:

- `burst` (the default): `--calls` calls sent at random over the last `--spread`
  milliseconds before the signal, as the issue measured it.
- `steady`: `--clients` loops calling back to back (no backoff) from a second before
  the signal until the server has gone: what gRPC itself still cancels.

    python -m bench.shutdown --runs 20
    python -m bench.shutdown --workers 2 --runs 10
    python -m bench.shutdown --load steady --runs 3

Only processes it started are signalled, each by its own pid.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import seed
from repogate.v1 import user_pb2, user_pb2_grpc

BIN = Path(sys.executable).parent
LOGS = Path(__file__).resolve().parent / "results" / "shutdown"
DETAILS_KEY = "grpc-status-details-bin"
DEADLINE = 10.0  # seconds each call may take; one that takes them all hung


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.shutdown", description=__doc__)
    parser.add_argument("--load", choices=("burst", "steady"), default="burst")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=40, help="burst: calls per run")
    parser.add_argument("--spread", type=float, default=18.0, help="burst: milliseconds")
    parser.add_argument("--clients", type=int, default=8, help="steady: concurrent loops")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--grace", type=float, default=5.0, help="REPOGATE_SHUTDOWN_GRACE")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="repogate_shutdown")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="workers > 1")
    return parser.parse_args(argv)


@dataclass
class Tally:
    """How the calls of every run ended, and what went wrong beyond that."""

    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    mismatches: list[str] = field(default_factory=list)
    exits: collections.Counter[int | None] = field(default_factory=collections.Counter)


def outcome(error: aio.AioRpcError | None) -> str:
    if error is None:
        return "OK"
    raw = dict(error.trailing_metadata() or ()).get(DETAILS_KEY)
    if raw is not None:
        for detail in status_pb2.Status.FromString(raw).details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return f"{error.code().name} {info.reason}"
    # gRPC's own message, without the addresses that differ from run to run.
    return f"{error.code().name} (gRPC: {(error.details() or '').split(';')[0]})"


async def create(users: user_pb2_grpc.UserServiceStub, tenant: str, name: str) -> str:
    user = user_pb2.User(email=f"{name}@example.com", username=name)
    try:
        await users.CreateUser(
            user_pb2.CreateUserRequest(user=user),
            metadata=(("x-tenant-id", tenant),),
            timeout=DEADLINE,
        )
    except aio.AioRpcError as exc:
        return outcome(exc)
    return "OK"


async def serving(address: str, proc: asyncio.subprocess.Process) -> None:
    async with aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            if proc.returncode is not None:
                raise RuntimeError(f"repogate serve exited {proc.returncode}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"not serving at {address}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def one_run(args: argparse.Namespace, dsn: str, tally: Tally, run: int) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPOGATE_")}
    env |= {
        "REPOGATE_DATABASE_URL": dsn,
        "REPOGATE_LISTEN": address,
        "REPOGATE_SHUTDOWN_GRACE": str(args.grace),
        "REPOGATE_DB_POOL_SIZE": "3",
        "REPOGATE_DB_MAX_OVERFLOW": "2",
        "REPOGATE_ACCESS_LOG": "false",
        "REPOGATE_PURGE_INTERVAL": "0",
        "REPOGATE_WORKERS": str(args.workers),
    }
    if args.workers > 1:
        env["REPOGATE_REDIS_URL"] = args.redis_url
    log = LOGS / f"run-{run}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        # Started outside the checkout: workers (`python -m server.cli`) then import the code
        # PYTHONPATH or the install names, not whatever the current directory holds.
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "repogate"),
            *("serve", "--no-migrate"),
            env=env,
            stdout=out,
            stderr=out,
            cwd=LOGS,
        )
    try:
        await serving(address, proc)
        tenant = f"bench-shutdown-{uuid.uuid4().hex[:12]}"
        async with aio.insecure_channel(address) as channel:
            users = user_pb2_grpc.UserServiceStub(channel)
            first = await create(users, tenant, "first")  # the connection is up
            if first != "OK":
                raise RuntimeError(f"the first call failed: {first}")
            load = burst if args.load == "burst" else steady
            ended = await load(args, users, tenant, proc)
        tally.exits[await asyncio.wait_for(proc.wait(), args.grace + 30)] += 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    tally.outcomes.update(result for _, result in ended)
    written = await usernames(dsn, tenant)
    answered = {name for name, result in ended if result == "OK"} | {"first"}
    if written != answered:
        tally.mismatches.append(f"run {run}: {len(written)} written, {len(answered)} answered OK")


async def burst(
    args: argparse.Namespace,
    users: user_pb2_grpc.UserServiceStub,
    tenant: str,
    proc: asyncio.subprocess.Process,
) -> list[tuple[str, str]]:
    spread = args.spread / 1000

    async def call(name: str) -> tuple[str, str]:
        await asyncio.sleep(random.uniform(0, spread))
        return name, await create(users, tenant, name)

    calls = [asyncio.create_task(call(f"u{i}")) for i in range(args.calls)]
    await asyncio.sleep(spread)
    proc.send_signal(signal.SIGTERM)
    return list(await asyncio.gather(*calls))


async def steady(
    args: argparse.Namespace,
    users: user_pb2_grpc.UserServiceStub,
    tenant: str,
    proc: asyncio.subprocess.Process,
) -> list[tuple[str, str]]:
    ended: list[tuple[str, str]] = []

    async def loop(client: int) -> None:
        i = 0
        while proc.returncode is None:
            i += 1
            name = f"c{client}-{i}"
            ended.append((name, await create(users, tenant, name)))

    loops = [asyncio.create_task(loop(c)) for c in range(args.clients)]
    await asyncio.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    await asyncio.gather(*loops)
    return ended


async def usernames(dsn: str, tenant: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT username FROM users WHERE tenant_id = $1", tenant)
    finally:
        await conn.close()
    return {row["username"] for row in rows}


async def measure(args: argparse.Namespace) -> Tally:
    dsn = seed.database_dsn(args.pg, args.database)
    await seed.create_database(args.pg, args.database)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPOGATE_")}
        seed.migrate(BIN / "repogate", env | {"REPOGATE_DATABASE_URL": dsn})
        tally = Tally()
        for run in range(1, args.runs + 1):
            await one_run(args, dsn, tally, run)
            print(f"run {run}: {dict(tally.outcomes)}", flush=True)
        return tally
    finally:
        await seed.drop_database(args.pg, args.database)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tally = asyncio.run(measure(args))
    total = sum(tally.outcomes.values())
    print(f"{args.load}, {args.runs} runs, {args.workers} worker(s): {total} calls")
    for name, count in tally.outcomes.most_common():
        print(f"  {count:6d}  {name}")
    print(f"exit codes: {dict(tally.exits)}")
    print("database agrees with every OK" if not tally.mismatches else "\n".join(tally.mismatches))
    return 1 if tally.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

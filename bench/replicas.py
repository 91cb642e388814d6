"""`python -m bench.replicas`: what a read replica buys, and what a consistency token costs.

Starts a PostgreSQL primary and a streaming standby of its own (tests/replica.py:
initdb and pg_basebackup in temporary directories, on free ports, as the postgres
user), and two `repogate serve` processes on that primary: one alone, one with
REPOGATE_DATABASE_REPLICA_URLS naming the standby. Entity caching is off in both,
so every read reaches a database.

- Throughput: `--clients` concurrent GetUser callers over `--users` seeded rows, a
  few seconds against each server in turn, `--rounds` rounds alternating which goes
  first. Printed: each round's calls/s and the median ratio replicas / primary alone.
- Token cost, one caller on the replicas server: a GetUser without a token; one with
  an old token (a write the standby is known to hold: no extra work); and one just
  after its own UpdateUser, carrying that write's token (the standby asked first, or
  the primary). Medians in µs, and the fresh-token read's difference to a tokenless one.
- Replay delay: how long after a commit the standby has replayed it (polled on one
  connection, so to within a round trip): what a bounded wait for a token would wait.
- Write cost: UpdateUser latency, one caller, on each server; with replicas a write
  reads its WAL position after it commits (one more round trip), for its token.

On one machine both PostgreSQL servers share its cores with Repogate and the load
generator, so the throughput ratio measures routing's overhead and what spreading
buys there; on separate hosts the standby adds its own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from grpc import aio

from bench.procs import Server, free_port
from repogate.v1 import user_pb2, user_pb2_grpc
from repositories import wal
from server.consistency import KEY
from tests.replica import Pair, plain, running_pair  # the tests' own clusters

TENANT = "bench-replicas"


def _serve(name: str, env: dict[str, str], logs: Path) -> Server:
    address = f"127.0.0.1:{free_port()}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REPOGATE_")}
    environ |= {
        "REPOGATE_LISTEN": address,
        "REPOGATE_CACHE_ENTITIES": "false",
        "REPOGATE_ACCESS_LOG": "false",
        "REPOGATE_LOG_LEVEL": "WARNING",
        **env,
    }
    repogate = str(Path(sys.executable).parent / "repogate")
    server = Server(name, [repogate, "serve"], address, environ, logs / f"{name}.log")
    server.wait_serving()
    return server


async def _seed(address: str, count: int) -> list[str]:
    async with aio.insecure_channel(address) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        ids = []
        for n in range(count):
            user = user_pb2.User(username=f"r{n}", email=f"r{n}@example.com", display_name="x")
            made = await stub.CreateUser(
                user_pb2.CreateUserRequest(user=user), metadata=(("x-tenant-id", TENANT),)
            )
            ids.append(made.id)
        return ids


async def _rate(address: str, ids: list[str], clients: int, seconds: float) -> float:
    """GetUser calls/s that `clients` callers get from `address` over `seconds`."""
    async with aio.insecure_channel(address) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        metadata = (("x-tenant-id", TENANT),)
        done = 0
        end = time.monotonic() + seconds

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < end:
                request = user_pb2.GetUserRequest(id=random.choice(ids))
                await stub.GetUser(request, metadata=metadata)
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(clients)))
        return done / (time.monotonic() - started)


async def _token_cost(address: str, ids: list[str], calls: int) -> dict[str, float]:
    """Median µs of a GetUser without a token, with an old one, and with a fresh one."""
    async with aio.insecure_channel(address) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        tenant = (("x-tenant-id", TENANT),)
        user = await stub.GetUser(user_pb2.GetUserRequest(id=ids[0]), metadata=tenant)
        user.ClearField("etag")

        async def write() -> str:
            user.display_name = str(time.monotonic())
            call = stub.UpdateUser(user_pb2.UpdateUserRequest(user=user), metadata=tenant)
            user.CopyFrom(await call)
            token = dict(await call.trailing_metadata() or ()).get(KEY)
            assert isinstance(token, str)
            return token

        async def timed(metadata: tuple[tuple[str, str], ...]) -> float:
            started = time.perf_counter()
            await stub.GetUser(user_pb2.GetUserRequest(id=ids[1]), metadata=metadata)
            return (time.perf_counter() - started) * 1e6

        old = await write()
        await asyncio.sleep(2)  # the standby's probe has seen it replayed since
        took: dict[str, list[float]] = {"none": [], "old": [], "fresh": []}
        for _ in range(calls):
            took["none"].append(await timed(tenant))
            took["old"].append(await timed((*tenant, (KEY, old))))
            fresh = await write()
            took["fresh"].append(await timed((*tenant, (KEY, fresh))))
        return {label: statistics.median(values) for label, values in took.items()}


async def _write_latency(address: str, id_: str, calls: int) -> float:
    """Median µs of an UpdateUser, one at a time."""
    async with aio.insecure_channel(address) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        tenant = (("x-tenant-id", TENANT),)
        user = await stub.GetUser(user_pb2.GetUserRequest(id=id_), metadata=tenant)
        took = []
        user.ClearField("etag")  # read from a standby, perhaps before the last round's writes
        for n in range(calls):
            user.display_name = str(n)
            started = time.perf_counter()
            user.CopyFrom(
                await stub.UpdateUser(user_pb2.UpdateUserRequest(user=user), metadata=tenant)
            )
            took.append((time.perf_counter() - started) * 1e6)
        return statistics.median(took)


async def _replay_delay(pair: Pair, commits: int) -> list[float]:
    """Seconds from each commit's answer to the standby's replay of it."""
    primary = await asyncpg.connect(plain(pair.primary_url))
    replica = await asyncpg.connect(plain(pair.replica_url))
    try:
        # A row written: a transaction that writes nothing but its xid commits
        # asynchronously, and reaches the standby only at the WAL writer's next round.
        await primary.execute("CREATE TABLE IF NOT EXISTS bench_replay (n int)")
        delays = []
        for _ in range(commits):
            await primary.execute("INSERT INTO bench_replay VALUES (1)")
            committed = time.perf_counter()
            position = await primary.fetchval(wal.INSERTED)
            while await replica.fetchval(wal.REPLAYED) < position:
                pass
            delays.append(time.perf_counter() - committed)
        return delays
    finally:
        await primary.close()
        await replica.close()


async def measure(args: argparse.Namespace, pair: Pair, alone: Server, spread: Server) -> None:
    ids = await _seed(alone.address, args.users)
    await asyncio.sleep(1)  # the standby replays the seed
    for server in (alone, spread):
        await _rate(server.address, ids, args.clients, 1)  # warm up
    rates: dict[str, list[float]] = {"alone": [], "spread": []}
    cpu: dict[str, list[float]] = {"alone": [], "spread": []}
    for r in range(args.rounds):
        order = (("alone", alone), ("spread", spread))
        for label, server in order if r % 2 == 0 else order[::-1]:
            before = server.cpu_seconds()
            rate = await _rate(server.address, ids, args.clients, args.seconds)
            rates[label].append(rate)
            cpu[label].append((server.cpu_seconds() - before) / (rate * args.seconds) * 1e6)
    ratios = [s / a for a, s in zip(rates["alone"], rates["spread"], strict=True)]
    print(f"GetUser, {args.clients} callers, cache off (calls/s; Repogate CPU µs/call):")
    for label, values in rates.items():
        print(
            f"  {label:>6}: "
            + ", ".join(f"{v:.0f}" for v in values)
            + f"; CPU {statistics.median(cpu[label]):.0f} µs/call"
        )
    print(f"  primary + 1 replica / primary alone: median {statistics.median(ratios):.2f}")
    cost = await _token_cost(spread.address, ids, args.token_calls)
    print(f"GetUser latency, one caller, replicas configured (median of {args.token_calls}):")
    for label, micros in cost.items():
        print(f"  token {label:>5}: {micros:.0f} µs")
    print(f"  a fresh token costs {cost['fresh'] - cost['none']:+.0f} µs over no token")
    delays = sorted(await _replay_delay(pair, args.token_calls))
    print(
        f"Standby replay after a commit: median {statistics.median(delays) * 1e3:.2f} ms, "
        f"p99 {delays[int(len(delays) * 0.99)] * 1e3:.2f} ms"
    )
    writes = {label: [] for label in ("alone", "spread")}
    for r in range(args.rounds):
        order = (("alone", alone), ("spread", spread))
        for label, server in order if r % 2 == 0 else order[::-1]:
            latency = await _write_latency(server.address, ids[2], args.token_calls // 2)
            writes[label].append(latency)
    alone_us, spread_us = (statistics.median(writes[k]) for k in ("alone", "spread"))
    print(
        f"UpdateUser latency, one caller: alone {alone_us:.0f} µs, with replicas "
        f"{spread_us:.0f} µs ({spread_us - alone_us:+.0f} µs: the WAL position read)"
    )


def main(args: argparse.Namespace) -> None:

    with running_pair() as pair, tempfile.TemporaryDirectory(prefix="bench-replicas-") as logs:
        common = {"REPOGATE_DATABASE_URL": pair.primary_url}
        alone = _serve("alone", common, Path(logs))
        spread = None
        try:
            spread = _serve(
                "spread", {**common, "REPOGATE_DATABASE_REPLICA_URLS": pair.replica_url}, Path(logs)
            )
            asyncio.run(measure(args, pair, alone, spread))
        finally:
            for server in (spread, alone):
                if server is not None:
                    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0, help="per server per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--token-calls", type=int, default=300)
    main(parser.parse_args())

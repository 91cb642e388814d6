"""A closed-loop Python gRPC driver for scenarios h2load cannot express: every request
different (CreateUser, CreateMember of bench/schemas/members, BatchCreateUsers,
UpdateUser of a user of each caller's own), calls chained (a transaction), or calls
in transactions of their own, begun on one server and read through another (txget).

Runs as its own process: `python -m bench.driver KIND --target HOST:PORT ...`. It
connects, warms up, prints `ready`, waits for a line on stdin (the caller samples the
server's CPU then), runs for `--seconds` and prints one JSON line of results. Requests
and responses are raw bytes over grpc.aio on uvloop: the driver serializes requests
but never parses a response, except BeginTransaction's id and the user each UpdateUser
caller creates for itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from grpc import aio

from bench import stats
from repogate.v1 import transaction_pb2, user_pb2

KINDS = ("create", "create-member", "batch", "update", "tx", "txget")
USERS = "/repogate.v1.UserService/"
TRANSACTIONS = "/repogate.v1.TransactionService/"

Op = Callable[[], Awaitable[int]]  # one operation; answers the rows it wrote


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tenant = (("x-tenant-id", args.tenant),)
        self.channels = [aio.insecure_channel(args.target) for _ in range(args.channels)]
        self.names = itertools.count()
        self.tag = uuid.uuid4().hex[:10]
        # txget: where its transactions are begun and rolled back, and each loop's one.
        self.owner = aio.insecure_channel(args.owner or args.target)
        self.transactions: dict[int, str] = {}
        # For "update": caller index -> the id of the user it alone updates.
        self.owned: dict[int, str] = {}
        if args.kind == "create-member":
            from bench import declared

            declared.messages()  # compiles the schema now, not in the timed phases

    def call(self, index: int, path: str) -> aio.UnaryUnaryMultiCallable:
        channel = self.channels[index % len(self.channels)]
        return channel.unary_unary(path)  # no serializers: bytes in, bytes out

    def user(self) -> user_pb2.CreateUserRequest:
        name = f"d{self.tag}-{next(self.names)}"
        return user_pb2.CreateUserRequest(
            user=user_pb2.User(email=f"{name}@bench.example", username=name)
        )

    def op(self, index: int) -> Op:
        if self.args.kind == "txget":
            return self.read_in_transaction(index)
        if self.args.kind == "create-member":
            return self.create_member(index)
        create = self.call(index, USERS + "CreateUser")
        if self.args.kind == "create":

            async def create_one() -> int:
                await create(self.user().SerializeToString(), metadata=self.tenant)
                return 1

            return create_one
        if self.args.kind == "update":
            update = self.call(index, USERS + "UpdateUser")

            async def update_own() -> int:
                if index not in self.owned:  # no two callers wait on one row's lock
                    reply = await create(self.user().SerializeToString(), metadata=self.tenant)
                    self.owned[index] = user_pb2.User.FromString(reply).id
                name = f"n{next(self.names)}"
                request = user_pb2.UpdateUserRequest(
                    user=user_pb2.User(id=self.owned[index], display_name=name)
                )
                await update(request.SerializeToString(), metadata=self.tenant)
                return 1

            return update_own
        if self.args.kind == "batch":
            batch = self.call(index, USERS + "BatchCreateUsers")
            size = self.args.batch

            async def create_batch() -> int:
                request = user_pb2.BatchCreateUsersRequest(
                    requests=[self.user() for _ in range(size)]
                )
                await batch(request.SerializeToString(), metadata=self.tenant)
                return size

            return create_batch
        begin = self.call(index, TRANSACTIONS + "BeginTransaction")
        commit = self.call(index, TRANSACTIONS + "Commit")
        rollback = self.call(index, TRANSACTIONS + "Rollback")

        async def transaction() -> int:
            reply = await begin(b"", metadata=self.tenant)
            tx = transaction_pb2.Transaction.FromString(reply).id
            inside = (*self.tenant, ("x-transaction-id", tx))
            try:
                for _ in range(2):
                    await create(self.user().SerializeToString(), metadata=inside)
            except aio.AioRpcError:
                # Give the transaction back now rather than at its idle timeout.
                end = transaction_pb2.RollbackRequest(transaction_id=tx).SerializeToString()
                await rollback(end, metadata=self.tenant)
                raise
            done = transaction_pb2.CommitRequest(transaction_id=tx).SerializeToString()
            await commit(done, metadata=self.tenant)
            return 2

        return transaction

    def create_member(self, index: int) -> Op:
        """CreateMember of bench/schemas/members, with the names `user` gives users."""
        from bench import declared

        create = self.call(index, f"/{declared.SERVICE}/CreateMember")

        async def create_one() -> int:
            name = f"d{self.tag}-{next(self.names)}"
            await create(declared.create_request(name).SerializeToString(), metadata=self.tenant)
            return 1

        return create_one

    def read_in_transaction(self, index: int) -> Op:
        """GetUser of one user inside a read-only transaction of this loop's own, begun
        once on the owner; the calls go to the target, which may be another server."""
        get = self.call(index, USERS + "GetUser")
        begin = self.owner.unary_unary(TRANSACTIONS + "BeginTransaction")
        options = transaction_pb2.TransactionOptions(read_only=True)
        begin_request = transaction_pb2.BeginTransactionRequest(options=options)
        request = user_pb2.GetUserRequest(id=self.args.user_id).SerializeToString()

        async def read() -> int:
            tx = self.transactions.get(index)
            if tx is None:
                reply = await begin(begin_request.SerializeToString(), metadata=self.tenant)
                tx = self.transactions[index] = transaction_pb2.Transaction.FromString(reply).id
            await get(request, metadata=(*self.tenant, ("x-transaction-id", tx)))
            return 1

        return read

    async def close(self) -> None:
        """Rolls back txget's transactions, then closes every channel."""
        rollback = self.owner.unary_unary(TRANSACTIONS + "Rollback")
        for tx in self.transactions.values():
            end = transaction_pb2.RollbackRequest(transaction_id=tx).SerializeToString()
            await rollback(end, metadata=self.tenant)
        for channel in (*self.channels, self.owner):
            await channel.close()

    async def loop(self, op: Op, until: float, latencies: list[float], tally: Counter[str]) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                rows = await op()  # awaited before the += : no lost updates
                tally["rows"] += rows
                tally["ok"] += 1
                latencies.append((time.perf_counter() - started) * 1e6)
            except aio.AioRpcError as exc:
                tally[exc.code().name] += 1

    async def phase(self, seconds: float) -> tuple[list[float], Counter[str], float]:
        latencies: list[float] = []
        tally: Counter[str] = Counter()
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(
            *(self.loop(self.op(i), until, latencies, tally) for i in range(self.args.concurrency))
        )
        return latencies, tally, time.perf_counter() - started


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> dict[str, Any]:
    driver = Driver(args)
    for channel in driver.channels:
        await asyncio.wait_for(channel.channel_ready(), 10)
    _, warm, _ = await driver.phase(args.warmup)
    if warm["ok"] == 0:
        raise SystemExit(f"no operation succeeded while warming up: {dict(warm)}")
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu = cpu_seconds()
    latencies, tally, elapsed = await driver.phase(args.seconds)
    cpu = cpu_seconds() - cpu
    await driver.close()
    ok, rows = tally.pop("ok", 0), tally.pop("rows", 0)
    return {
        "ops": ok,
        "rows": rows,
        "errors": dict(tally),
        "seconds": elapsed,
        "p50_us": stats.percentile(latencies, 50),
        "p99_us": stats.percentile(latencies, 99),
        "driver_cpu_seconds": cpu,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.driver", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--owner", help="txget: host:port that begins the transactions (default: the target)"
    )
    parser.add_argument("--user-id", default="", help="txget: the user to read")
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = json.dumps(uvloop.run(main(parse_args())))
    # The event loop may leave stdout non-blocking: a long line would then be cut short.
    os.set_blocking(sys.stdout.fileno(), True)
    print(result, flush=True)

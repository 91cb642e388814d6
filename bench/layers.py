"""`python -m bench.layers`: what each layer of a call costs, in process, in CPU µs per call.

Every layer runs on its own, on uvloop, as a server runs it. The interceptors wrap a
handler that does nothing (with a stand-in for grpc.aio's ServicerContext), 8 calls at a
time, each a task. The unit of work runs around work that does nothing, then with a pool
checkout, then with the GetUser statement; then validation and mapping of a GetUser and
a CreateUser, and a Redis GET. Each figure is CPU over `--calls` calls, the lowest of
`--repeat` runs: the least a busy machine let it cost. Differences between rows are the
layers' costs; gRPC itself is priced by bench.ab and the bare no-op server of
`python -m bench`, not here.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench import seed
from bench.procs import Server, free_port
from bench.run import BIN, RESULTS, repogate_env
from repogate.v1 import user_pb2
from server import access, auth, context
from server.app import Repogate as App
from server.call_stats import CallStats
from server.forwarding import ForwardingInterceptor
from server.interceptors import RequestInterceptor
from server.metrics import Metrics
from server.page_tokens import PageTokens
from server.resources import StandardMethods
from server.services.users import USER
from server.settings import Settings
from server.tracing import Tracing
from server.wrapping import Behaviour, BehaviourInterceptor

TENANT = f"{seed.TENANT_PREFIX}0"
METHOD = "/repogate.v1.UserService/GetUser"
KEY = "rg_bench_layers_key_0123456789abcdef"
# Calls run together, as tasks: a loaded server ends several in a turn of its event loop.
TOGETHER = 8


class Ctx:
    """What the interceptors ask of grpc.aio's ServicerContext."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None

    def code(self) -> grpc.StatusCode | None:
        return None

    def details(self) -> str:
        return ""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"


def cpu_us(
    run: Callable[[int], Awaitable[None]],
    calls: int,
    repeat: int,
    clock: Callable[[], float] = time.process_time,
) -> float:
    """The lowest CPU µs per call of `repeat` runs of `calls` calls. `clock`: the
    process's CPU (the span exporter's thread included), or the event loop's thread's
    alone once a server runs in the process (gRPC's threads poll)."""
    best = float("inf")
    loop = asyncio.get_event_loop()
    loop.run_until_complete(run(calls // 10))  # warm-up
    for _ in range(repeat):
        started = clock()
        loop.run_until_complete(run(calls))
        best = min(best, (clock() - started) / calls * 1e6)
    return best


def stacked(interceptors: list[BehaviourInterceptor], behaviour: Behaviour) -> Behaviour:
    """`behaviour` wrapped by `interceptors`, outermost first, as grpc.aio chains them."""
    for interceptor in reversed(interceptors):
        behaviour = interceptor.wrap(behaviour, METHOD)
    return behaviour


def flushed(behaviour: Behaviour, ctx: Ctx, traced: Tracing) -> Callable[[int], Awaitable[None]]:
    """Calls in batches of 256, each batch's spans exported before the next: a loop
    faster than a server would fill the processor's queue, which drops what overflows."""
    request = user_pb2.GetUserRequest(id=str(uuid.uuid4()))

    async def run(n: int) -> None:
        for start in range(0, n, 256):
            await turns(behaviour, request, ctx, min(256, n - start))
            await traced.flush()

    return run


async def turns(behaviour: Behaviour, request: Any, ctx: Ctx, n: int) -> None:
    """`n` calls, each a task of its own as grpc.aio runs them, TOGETHER at a time: the
    calls that end in one turn of the event loop."""
    for start in range(0, n, TOGETHER):
        await asyncio.gather(*(behaviour(request, ctx) for _ in range(min(TOGETHER, n - start))))


def calls_of(behaviour: Behaviour, ctx: Ctx) -> Callable[[int], Awaitable[None]]:
    request = user_pb2.GetUserRequest(id=str(uuid.uuid4()))

    async def run(n: int) -> None:
        await turns(behaviour, request, ctx, n)

    return run


async def nothing(request: Any, ctx: Any) -> Any:
    return request


@contextmanager
def bound(tenant: str = TENANT) -> Iterator[None]:
    token = context.bind(context.RequestContext(tenant=tenant, request_id="bench"))
    try:
        yield
    finally:
        context.unbind(token)


def chain_us(args: argparse.Namespace, interceptors: list[Any]) -> float:
    """What grpc.aio's per-call walk through `interceptors`' intercept_service costs."""
    handler = grpc.unary_unary_rpc_method_handler(nothing)

    async def last(details: Any) -> Any:
        return handler

    continuation: Callable[[Any], Awaitable[Any]] = last
    for interceptor in reversed(interceptors):
        continuation = functools.partial(interceptor.intercept_service, continuation)
    details = Details(METHOD, ((context.TENANT_KEY, TENANT),))

    async def run(n: int) -> None:
        for _ in range(n):
            await continuation(details)

    return cpu_us(run, args.calls, args.repeat)


class Details(grpc.HandlerCallDetails):  # type: ignore[misc]
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


def tracing(ratio: float, sink: str) -> Tracing:
    """A server's tracing, OTLP to `sink`, keeping `ratio` of new traces as docs/observability.md
    advises (OTEL_TRACES_SAMPLER=parentbased_traceidratio)."""
    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(ratio)
    settings = Settings(trace_exporter="otlp", otlp_endpoint=f"http://{sink}")
    return Tracing.from_settings(settings)


def interceptor_rows(args: argparse.Namespace, keys: Path) -> list[tuple[str, float]]:
    plain = Ctx(((context.TENANT_KEY, TENANT),))
    keyed = Ctx(((context.TENANT_KEY, TENANT), ("authorization", f"ApiKey {KEY}")))
    request = RequestInterceptor(["repogate.v1.UserService"], calls=CallStats())
    forwarding = ForwardingInterceptor(None, ("repogate.v1.UserService",))  # type: ignore[arg-type]
    settings = Settings(auth_mode="keys", api_keys_file=keys)
    (authn,) = auth.interceptors(settings)
    # With metrics kept, the request interceptor also counts each call's latency bucket.
    calls = Metrics.from_settings(Settings(metrics_listen="127.0.0.1:0")).calls()
    counted = RequestInterceptor(["repogate.v1.UserService"], calls=calls)
    devnull = open(os.devnull, "w")  # noqa: SIM115 (open for the whole run)

    def measure(layers: list[BehaviourInterceptor], ctx: Ctx = plain) -> float:
        return cpu_us(calls_of(stacked(layers, nothing), ctx), args.calls, args.repeat)

    rows = [("handler alone (a no-op, as a task, 8 at a time)", measure([]))]
    access.configure(False)
    rows.append(("request context (RequestInterceptor, access log off)", measure([request])))
    rows.append(
        (
            "grpc.aio's handler lookup through 5 interceptors",
            chain_us(args, [request, request, authn, forwarding, request]),
        )
    )
    rows.append(("  + auth (API key)", measure([request, authn], keyed)))
    access.configure(True, devnull)
    rows.append(("  + access log", measure([request])))
    access.configure(False)
    rows.append(("  + metrics", measure([counted])))
    sink = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "bench.otlp_sink", "--listen", sink]
    collector = Server("otlp-sink", argv, sink, dict(os.environ), RESULTS / "layers-sink.log")
    try:
        collector.wait_serving()
        for name, ratio in (("unsampled", 0.0), ("10 % sampled", 0.1), ("every call", 1.0)):
            traced = tracing(ratio, sink)
            spanning = RequestInterceptor(
                ["repogate.v1.UserService"], calls=CallStats(), spans=traced.calls()
            )
            behaviour = stacked([spanning], nothing)
            cost = cpu_us(flushed(behaviour, plain, traced), args.calls, args.repeat)
            rows.append((f"  + tracing (OTLP), {name}", cost))
            asyncio.get_event_loop().run_until_complete(traced.shutdown())
    finally:
        collector.stop()
    devnull.close()
    return rows


async def started_app(dsn: str, redis_url: str) -> App:
    env = repogate_env(dsn, redis_url, "127.0.0.1:0", 4) | {"REPOGATE_CACHE_ENTITIES": "false"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("REPOGATE_")})
    app = App(Settings(), migrate=False)
    await app.start()
    return app


def database_rows(args: argparse.Namespace, dsn: str) -> list[tuple[str, float]]:
    loop = asyncio.get_event_loop()
    app = loop.run_until_complete(started_app(dsn, args.redis_url))
    units, read_through = app.units, app.read_through
    assert units is not None
    assert read_through is not None
    (user_id,) = loop.run_until_complete(seed.some_user_ids(dsn, TENANT, 1))
    key = uuid.UUID(user_id)
    users = StandardMethods(USER, units, PageTokens("x" * 32), app_policy(app), read_through)
    repo_cls = USER.repository
    get = user_pb2.GetUserRequest(id=user_id)
    create = user_pb2.CreateUserRequest(user=user_pb2.User(email="a@b.example", username="ab"))

    def looped(body: Callable[[], Awaitable[Any]]) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            with bound():
                for _ in range(n):
                    await body()

        return run

    async def none(_: Any = None) -> None:
        return None

    def m(body: Callable[[], Awaitable[Any]]) -> float:
        return cpu_us(looped(body), args.calls // 4, args.repeat, time.thread_time)

    row = loop.run_until_complete(
        looped_once(lambda: units.read(lambda uow: uow.repository(repo_cls).get(key)))
    )
    rows = [
        ("units: guard (timeout, breaker) around no work", m(lambda: units.guarded(none))),
        ("units: retry set-up around no work", m(lambda: units.retrying(none))),
        (
            "units: read with a unit of work (pool checkout, no statement)",
            m(lambda: units.read(none)),
        ),
        (
            "units: read running GetUser's statement",
            m(lambda: units.read(lambda uow: uow.repository(repo_cls).get(key))),
        ),
        ("asyncpg alone: the same SELECT, prepared", asyncpg_get(args, dsn, key)),
        ("GetUser: validation (id, read mask, expand)", sync_us(lambda: checks(users, get), args)),
        ("GetUser: mapping row -> message", sync_us(lambda: USER.mapping.to_message(row), args)),
        (
            "CreateUser: validation and values",
            sync_us(lambda: users.create_values(create.user, "user"), args),
        ),
        ("GetUser through StandardMethods, cache off", m(lambda: users.get(get))),
    ]
    loop.run_until_complete(app.stop(0))
    return rows


def app_policy(app: App) -> Any:
    from server.app import _policy

    return _policy(app.settings)


async def looped_once(body: Callable[[], Awaitable[Any]]) -> Any:
    with bound():
        return await body()


def checks(users: StandardMethods[Any], request: Any) -> None:
    from server import read_masks, validation

    validation.resource_id(request.id, "id")
    read_masks.of(request, USER.mapping.message_cls)
    users._expander.names(request)


def sync_us(body: Callable[[], Any], args: argparse.Namespace) -> float:
    best = float("inf")
    with bound():
        for _ in range(args.repeat):
            started = time.thread_time()
            for _ in range(args.calls):
                body()
            best = min(best, (time.thread_time() - started) / args.calls * 1e6)
    return best


def asyncpg_get(args: argparse.Namespace, dsn: str, key: uuid.UUID) -> float:
    import asyncpg

    async def go() -> float:
        conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg", "postgresql"))
        statement = await conn.prepare("SELECT * FROM users WHERE tenant_id = $1 AND id = $2")

        async def run(n: int) -> None:
            for _ in range(n):
                await statement.fetchrow(TENANT, key)

        best = float("inf")
        for _ in range(args.repeat):
            started = time.thread_time()
            await run(args.calls // 4)
            best = min(best, (time.thread_time() - started) / (args.calls // 4) * 1e6)
        await conn.close()
        return best

    return asyncio.get_event_loop().run_until_complete(go())


def redis_rows(args: argparse.Namespace) -> list[tuple[str, float]]:
    from server import cache

    settings = Settings(redis_url=args.redis_url)
    backend = cache.build(settings)

    async def run(n: int) -> None:
        for _ in range(n):
            await backend.get("bench-layers:absent")

    cost = cpu_us(run, args.calls // 4, args.repeat, time.thread_time)
    return [("cache client: one Redis GET (the pipelined connection)", cost)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="repogate_layers")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument(
        "--interceptors-only", action="store_true", help="no database, no Redis: quicker"
    )
    args = parser.parse_args(argv)
    asyncio.set_event_loop(uvloop.new_event_loop())
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.json"
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        keys.write_text(json.dumps({"keys": {"bench": {"sha256": digest, "tenants": [TENANT]}}}))
        rows += interceptor_rows(args, keys)
    if args.interceptors_only:
        show(rows)
        return 0
    dsn = seed.database_dsn(args.pg, args.database)
    asyncio.get_event_loop().run_until_complete(seed.create_database(args.pg, args.database))
    try:
        seed.migrate(BIN / "repogate", repogate_env(dsn, args.redis_url, "127.0.0.1:0", 4))
        asyncio.get_event_loop().run_until_complete(
            seed.seed_users(dsn, seed.SeedPlan(total=100, tenants=1))
        )
        rows += database_rows(args, dsn)
        rows += redis_rows(args)
    finally:
        # What was measured, even when a later layer failed (a Redis GET timing out).
        show(rows)
        asyncio.get_event_loop().run_until_complete(seed.drop_database(args.pg, args.database))
    return 0


def show(rows: list[tuple[str, float]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.1f} µs")


if __name__ == "__main__":
    raise SystemExit(main())

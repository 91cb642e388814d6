"""Bare grpc.aio servers the scenarios are judged against, on uvloop.

Each serves the same method paths and messages as Repogate, so one request body fits
both, and does the least that the scenario needs:

- `noop`: answers at once (GetUser and CreateUser: a fixed user; BatchCreateUsers: an
  empty response; BeginTransaction, Commit and Rollback: fixed answers).
- `pg`: asyncpg's default pool, as many connections as Repogate's pool holds. GetUser
  is one primary-key lookup; ListUsers (first pages) runs the SELECT Repogate runs for
  the bench's list request (bench/pgsql.py) and answers the page with a signed
  next_page_token; CreateUser is one INSERT. BeginTransaction takes a connection from
  the pool and runs BEGIN on it, answering an id; CreateUser with that id as
  `x-transaction-id` INSERTs on that connection; Commit (or Rollback) ends it there
  and gives the connection back.
- `redis`: GetUser is one redis-py GET of a ~300-byte serialized user.

Run as `python -m bench.baseline MODE --listen 127.0.0.1:PORT [--dsn ...] [--redis-url ...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import uvloop
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench import pgsql
from repogate.v1 import transaction_pb2, user_pb2

USER_SERVICE = "repogate.v1.UserService"
TRANSACTION_SERVICE = "repogate.v1.TransactionService"
REDIS_KEY_PREFIX = "bench:baseline:user:"
CANNED = user_pb2.User(
    id="00000000-0000-4000-8000-000000000000",
    email="u0000000@bench-t0.bench.example",
    username="u0000000",
    display_name="Bench User u0000000",
    is_active=True,
    etag="1",
)

Handler = Callable[[Any, aio.ServicerContext], Awaitable[Any]]


def tenant_of(context: aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-tenant-id" and isinstance(value, str):
            return value
    return ""


def unary(handler: Handler, request_cls: Any, response_cls: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_cls.FromString,
        response_serializer=response_cls.SerializeToString,
    )


def noop_handlers() -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    async def get_user(request: user_pb2.GetUserRequest, ctx: aio.ServicerContext) -> Any:
        return CANNED

    async def create_user(request: user_pb2.CreateUserRequest, ctx: aio.ServicerContext) -> Any:
        return CANNED

    async def batch(request: user_pb2.BatchCreateUsersRequest, ctx: aio.ServicerContext) -> Any:
        return user_pb2.BatchCreateUsersResponse()

    async def begin(request: Any, ctx: aio.ServicerContext) -> Any:
        return transaction_pb2.Transaction(id="noop.transaction")

    async def commit(request: Any, ctx: aio.ServicerContext) -> Any:
        return transaction_pb2.CommitResponse()

    async def rollback(request: Any, ctx: aio.ServicerContext) -> Any:
        return transaction_pb2.RollbackResponse()

    return {
        USER_SERVICE: {
            "GetUser": unary(get_user, user_pb2.GetUserRequest, user_pb2.User),
            "CreateUser": unary(create_user, user_pb2.CreateUserRequest, user_pb2.User),
            "BatchCreateUsers": unary(
                batch, user_pb2.BatchCreateUsersRequest, user_pb2.BatchCreateUsersResponse
            ),
        },
        TRANSACTION_SERVICE: transaction_methods(begin, commit, rollback),
    }


def metadata_of(context: aio.ServicerContext) -> tuple[str, str]:
    """The call's tenant and transaction id (empty when absent), in one pass."""
    tenant = transaction = ""
    for key, value in context.invocation_metadata() or ():
        if key == "x-tenant-id" and isinstance(value, str):
            tenant = value
        elif key == "x-transaction-id" and isinstance(value, str):
            transaction = value
    return tenant, transaction


async def pg_handlers(dsn: str, pool_size: int) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    # Open transactions by id: each holds a pooled connection from Begin to Commit.
    transactions: dict[str, Any] = {}
    token_key = secrets.token_bytes(32)

    async def get_user(request: user_pb2.GetUserRequest, ctx: aio.ServicerContext) -> Any:
        row = await pool.fetchrow(pgsql.SELECT_BY_ID, tenant_of(ctx), uuid.UUID(request.id))
        if row is None:
            await ctx.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        return pgsql.to_user(row)

    async def list_users(request: user_pb2.ListUsersRequest, ctx: aio.ServicerContext) -> Any:
        if request.page_token:
            await ctx.abort(grpc.StatusCode.UNIMPLEMENTED, "first pages only")
        size = request.page_size or 50
        rows = await pool.fetch(pgsql.LIST_PAGE, tenant_of(ctx), True, size + 1)
        page = user_pb2.ListUsersResponse(users=[pgsql.to_user(row) for row in rows[:size]])
        if len(rows) > size:
            page.next_page_token = pgsql.page_token(token_key, rows[size - 1])
        return page

    async def create_user(request: user_pb2.CreateUserRequest, ctx: aio.ServicerContext) -> Any:
        tenant, transaction = metadata_of(ctx)
        values = pgsql.record(tenant, request.user.username, pgsql.now())
        if transaction:
            conn = transactions.get(transaction)
            if conn is None:
                await ctx.abort(grpc.StatusCode.NOT_FOUND, "no such transaction")
            await conn.execute(pgsql.INSERT, *values)
        else:
            await pool.execute(pgsql.INSERT, *values)
        return pgsql.to_user(dict(zip(pgsql.COLUMNS, values, strict=True)))

    async def begin(request: Any, ctx: aio.ServicerContext) -> Any:
        conn = await pool.acquire()
        try:
            await conn.execute("BEGIN")
        except BaseException:
            await pool.release(conn)
            raise
        transaction = uuid.uuid4().hex
        transactions[transaction] = conn
        return transaction_pb2.Transaction(id=transaction)

    async def end(transaction: str, statement: str, ctx: aio.ServicerContext) -> None:
        conn = transactions.pop(transaction, None)
        if conn is None:
            await ctx.abort(grpc.StatusCode.NOT_FOUND, "no such transaction")
        try:
            await conn.execute(statement)
        finally:
            await pool.release(conn)

    async def commit(request: transaction_pb2.CommitRequest, ctx: aio.ServicerContext) -> Any:
        await end(request.transaction_id, "COMMIT", ctx)
        return transaction_pb2.CommitResponse()

    async def rollback(request: transaction_pb2.RollbackRequest, ctx: aio.ServicerContext) -> Any:
        await end(request.transaction_id, "ROLLBACK", ctx)
        return transaction_pb2.RollbackResponse()

    return {
        USER_SERVICE: {
            "GetUser": unary(get_user, user_pb2.GetUserRequest, user_pb2.User),
            "ListUsers": unary(list_users, user_pb2.ListUsersRequest, user_pb2.ListUsersResponse),
            "CreateUser": unary(create_user, user_pb2.CreateUserRequest, user_pb2.User),
        },
        TRANSACTION_SERVICE: transaction_methods(begin, commit, rollback),
    }


def transaction_methods(
    begin: Handler, commit: Handler, rollback: Handler
) -> dict[str, grpc.RpcMethodHandler]:
    return {
        "BeginTransaction": unary(
            begin, transaction_pb2.BeginTransactionRequest, transaction_pb2.Transaction
        ),
        "Commit": unary(commit, transaction_pb2.CommitRequest, transaction_pb2.CommitResponse),
        "Rollback": unary(
            rollback, transaction_pb2.RollbackRequest, transaction_pb2.RollbackResponse
        ),
    }


def redis_handlers(url: str) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    from redis import asyncio as aioredis

    client = aioredis.Redis.from_url(url)

    async def get_user(request: user_pb2.GetUserRequest, ctx: aio.ServicerContext) -> Any:
        value = await client.get(REDIS_KEY_PREFIX + request.id)
        if value is None:
            await ctx.abort(grpc.StatusCode.NOT_FOUND, "no such key")
        return user_pb2.User.FromString(value)

    return {USER_SERVICE: {"GetUser": unary(get_user, user_pb2.GetUserRequest, user_pb2.User)}}


async def serve(args: argparse.Namespace) -> None:
    if args.mode == "pg":
        services = await pg_handlers(args.dsn, args.pool_size)
    elif args.mode == "redis":
        services = redis_handlers(args.redis_url)
    else:
        services = noop_handlers()
    server = aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, methods) for name, methods in services.items()]
    )
    await serve_until_stopped(server, args.listen)


async def serve_until_stopped(server: aio.Server, listen: str) -> None:
    """Serves on `listen`, health saying SERVING, until SIGTERM or SIGINT."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("mode", choices=("noop", "pg", "redis"))
    parser.add_argument("--listen", required=True)
    parser.add_argument("--dsn", help="asyncpg DSN (pg)")
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--redis-url", help="redis:// URL (redis)")
    uvloop.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()

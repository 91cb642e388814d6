"""Helpers shared by the end-to-end tests: calling UserService and reading failures."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from grpc import aio

from repogate.v1 import user_pb2, user_pb2_grpc
from repositories.held import pool_counts
from server.app import Repogate
from server.settings import Settings
from tests.conftest import Running
from tests.pgbouncer import fresh_database
from tests.polling import eventually
from tests.rpc import ErrorDetails, details, md

__all__ = ["eventually"]  # re-exported for the e2e tests

Stub = user_pb2_grpc.UserServiceStub


@dataclass
class Dedicated:
    """A Repogate started by a test for itself (the `start_repogate` fixture)."""

    app: Repogate
    channel: aio.Channel
    users: Stub


StartRepogate = Callable[..., Awaitable[Dedicated]]


async def fails(call: Awaitable[Any]) -> ErrorDetails:
    """Awaits `call`, which must fail with a status; returns its AIP-193 details."""
    with pytest.raises(aio.AioRpcError) as err:
        await call
    return details(err.value)


async def create(stub: Stub, tenant: str, **fields: Any) -> user_pb2.User:
    """Creates a user; email and username default to values derived from username/email."""
    name = fields.setdefault("username", "user")
    fields.setdefault("email", f"{name}@example.com")
    return await stub.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(**fields)), metadata=md(tenant)
    )


async def get(stub: Stub, tenant: str, id_: str) -> user_pb2.User:
    return await stub.GetUser(user_pb2.GetUserRequest(id=id_), metadata=md(tenant))


async def update(
    stub: Stub, tenant: str, user: user_pb2.User, paths: list[str] | None = None
) -> user_pb2.User:
    return await stub.UpdateUser(update_request(user, paths), metadata=md(tenant))


def update_request(
    user: user_pb2.User, paths: list[str] | None = None
) -> user_pb2.UpdateUserRequest:
    if paths is None:
        return user_pb2.UpdateUserRequest(user=user)
    return user_pb2.UpdateUserRequest(user=user, update_mask=field_mask_pb2.FieldMask(paths=paths))


async def list_page(
    stub: Stub, tenant: str, page_size: int = 0, page_token: str = ""
) -> user_pb2.ListUsersResponse:
    return await stub.ListUsers(
        user_pb2.ListUsersRequest(page_size=page_size, page_token=page_token),
        metadata=md(tenant),
    )


async def walk(stub: Stub, tenant: str, page_size: int) -> list[user_pb2.ListUsersResponse]:
    """Every page of the tenant's users, first to last."""
    pages = [await list_page(stub, tenant, page_size)]
    while pages[-1].next_page_token:
        assert len(pages) < 10_000, "pagination does not terminate"
        pages.append(await list_page(stub, tenant, page_size, pages[-1].next_page_token))
    return pages


async def all_users(stub: Stub, tenant: str) -> list[user_pb2.User]:
    return [user for page in await walk(stub, tenant, 1000) for user in page.users]


@contextlib.asynccontextmanager
async def serving_schema(
    backend: str, tmp_path_factory: pytest.TempPathFactory, schema: Path, extensions: str = ""
) -> AsyncIterator[Running]:
    """A Repogate serving `schema` (and `extensions`) on a database of its own, SQLite or
    PostgreSQL, with the default (memory) cache of entities."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgresql":
            url = await stack.enter_async_context(fresh_database())
        else:
            url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp(schema.name) / 'schema.db'}"
        settings = Settings(
            listen="127.0.0.1:0",
            database_url=url,
            schema_path=str(schema),
            extensions=extensions,
            shutdown_grace=1,
            purge_interval=0,
            cache_timeout=5,
        )
        app = await stack.enter_async_context(Repogate(settings))
        channel = await stack.enter_async_context(aio.insecure_channel(app.address))
        yield Running(app, channel)


def in_use(app: Dedicated) -> int:
    """The connections of `app`'s pool in use by calls and transactions (those kept idle
    for the next call are not: repositories/held.py)."""
    assert app.app.units is not None
    counts = pool_counts(app.app.units._db.engine)
    assert counts is not None
    return counts.checked_out

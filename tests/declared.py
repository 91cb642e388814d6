"""Calling a schema's services the way a client with no generated code does: messages
from the descriptor pool the schema was loaded into, methods by name; and serving one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, descriptor_pool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from repogate.v1 import transaction_pb2, transaction_pb2_grpc
from schema.loading import load
from server.app import Repogate
from server.settings import Settings
from tests.conftest import Running
from tests.pgbouncer import fresh_database
from tests.rpc import md

TASKS = Path(__file__).parent / "schemas" / "tasks"
PACKAGE = "acme.tasks.v1"


def message(type_name: str, /, **fields: Any) -> Message:
    """A message of the loaded schema by its name in PACKAGE (or full name)."""
    full = type_name if "." in type_name else f"{PACKAGE}.{type_name}"
    cls = GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(full))
    return cls(**fields)


@contextlib.asynccontextmanager
async def serving(
    backend: str, directory: Path, schema: Path = TASKS, extensions: str = ""
) -> AsyncIterator[Running]:
    """A Repogate serving `schema` (its methods beyond the standard ones served by the
    `extensions` modules) on a new database of `backend`: a SQLite file in `directory`, or
    a PostgreSQL database dropped after. The cache of entities is the default (memory)."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgresql":
            url = await stack.enter_async_context(fresh_database())
        else:
            url = f"sqlite+aiosqlite:///{directory / 'schema.db'}"
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


class Client:
    """Calls `<Service>/<Method>` of `package` (declared in `schema`) on `channel` as
    `tenant`, and as `actor` (x-actor-id) when given."""

    def __init__(
        self,
        channel: aio.Channel,
        tenant: str | None = None,
        transaction_id: str = "",
        *,
        schema: Path = TASKS,
        package: str = PACKAGE,
        actor: str = "",
    ) -> None:
        load(schema)  # the messages a client of this schema has
        self.channel = channel
        self.tenant = tenant or f"t-{uuid.uuid4().hex[:16]}"
        self.transaction_id = transaction_id
        self.schema = schema
        self.package = package
        self.actor = actor

    def as_tenant(self, tenant: str) -> Client:
        return Client(self.channel, tenant, schema=self.schema, package=self.package)

    def as_actor(self, actor: str) -> Client:
        """This tenant's calls made by `actor` (x-actor-id: created_by, updated_by)."""
        return Client(
            self.channel, self.tenant, schema=self.schema, package=self.package, actor=actor
        )

    def inside(self, transaction_id: str) -> Client:
        """This tenant's calls in the transaction `transaction_id` (x-transaction-id)."""
        return Client(
            self.channel, self.tenant, transaction_id, schema=self.schema, package=self.package
        )

    def message(self, type_name: str, /, **fields: Any) -> Message:
        """A message of this client's package by its name."""
        return message(f"{self.package}.{type_name}", **fields)

    async def __call__(self, method: str, request: Message | None = None, **fields: Any) -> Any:
        """`method` as "TaskService/CreateTask"; the request built from `fields` when not given."""
        service, name = method.split("/")
        pool = descriptor_pool.Default()
        descriptor = pool.FindServiceByName(f"{self.package}.{service}").methods_by_name[name]
        if request is None:
            request = GetMessageClass(descriptor.input_type)(**fields)
        output = GetMessageClass(descriptor.output_type)
        call = self.channel.unary_unary(
            f"/{self.package}.{service}/{name}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=output.FromString,
        )
        extra = {"x_transaction_id": self.transaction_id} if self.transaction_id else {}
        if self.actor:
            extra["x_actor_id"] = self.actor
        return await call(request, metadata=md(self.tenant, **extra), timeout=20)

    async def transact(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Each `(method, request fields)` of `calls` in one TransactionService.Transact: one
        round trip and one snapshot (REPEATABLE_READ); their responses, unpacked."""
        packed, outputs = [], []
        pool = descriptor_pool.Default()
        for method, fields in calls:
            service, name = method.split("/")
            full = f"{self.package}.{service}"
            rpc = pool.FindServiceByName(full).methods_by_name[name]
            request = any_pb2.Any()
            request.Pack(GetMessageClass(rpc.input_type)(**fields))
            packed.append(transaction_pb2.TransactCall(method=f"{full}/{name}", request=request))
            outputs.append(GetMessageClass(rpc.output_type))
        response = await transaction_pb2_grpc.TransactionServiceStub(self.channel).Transact(
            transaction_pb2.TransactRequest(
                calls=packed, isolation_level=transaction_pb2.ISOLATION_LEVEL_REPEATABLE_READ
            ),
            metadata=md(self.tenant),
            timeout=20,
        )
        answers = []
        for output, answer in zip(outputs, response.responses, strict=True):
            unpacked = output()
            assert answer.Unpack(unpacked)
            answers.append(unpacked)
        return answers

    async def project(self, name: str | None = None, **fields: Any) -> Any:
        project = message("Project", name=name or f"p-{uuid.uuid4().hex[:8]}", **fields)
        return await self("ProjectService/CreateProject", project=project)

    async def task(self, project_id: str, title: str = "a task", **fields: Any) -> Any:
        task = message("Task", project_id=project_id, title=title, **fields)
        return await self("TaskService/CreateTask", task=task)

    async def walk(self, method: str, field: str, **fields: Any) -> AsyncIterator[Any]:
        """Every item of a List method, page by page."""
        token = ""
        while True:
            page = await self(method, page_token=token, **fields)
            for item in getattr(page, field):
                yield item
            token = page.next_page_token
            if not token:
                return


def ids(items: Iterable[Any]) -> list[str]:
    return [item.id for item in items]

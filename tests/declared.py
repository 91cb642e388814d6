"""Calling a schema's services the way a client with no generated code does: messages
from the descriptor pool the schema was loaded into, methods by name."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from schema.loading import load
from tests.rpc import md

TASKS = Path(__file__).parent / "schemas" / "tasks"
PACKAGE = "acme.tasks.v1"


def message(type_name: str, /, **fields: Any) -> Message:
    """A message of the loaded schema by its name in PACKAGE (or full name)."""
    full = type_name if "." in type_name else f"{PACKAGE}.{type_name}"
    cls = GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(full))
    return cls(**fields)


@functools.cache
def _loaded(schema: Path) -> None:
    load(schema)  # the messages a client of this schema has


class Client:
    """Calls `<Service>/<Method>` of `package` (a package of the schema at `schema`; by
    default the suite's tasks schema) on `channel` as `tenant`, and as `actor`
    (x-actor-id) when given."""

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
        _loaded(schema)
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

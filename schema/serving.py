"""Serving a schema's services: each method, bound to a standard method of one
resource (schema/shapes.py), run by the same StandardMethods as the built-in
services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import SimpleNamespace
from typing import Any, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from repositories.errors import InvalidArgument
from schema.declared import Declared
from schema.extensions import Api, Extension
from schema.repository import DeclaredRepository
from schema.shapes import Binding, method_name
from server import validation
from server.mapping import parse_etag
from server.resources import StandardMethods
from server.units import Units

Handler = Callable[[Any, Any], Awaitable[Any]]


class _Query:
    """A List or Count request with the fields it lacks at their defaults."""

    __slots__ = (
        "count_mode",
        "expand",
        "filter",
        "order_by",
        "page_size",
        "page_token",
        "read_mask",
        "show_deleted",
        "skip",
    )

    def __init__(self, request: Any) -> None:
        self.page_size = getattr(request, "page_size", 0)
        self.page_token = getattr(request, "page_token", "")
        self.filter = getattr(request, "filter", "")
        self.order_by = getattr(request, "order_by", "")
        self.skip = getattr(request, "skip", 0)
        self.show_deleted = getattr(request, "show_deleted", False)
        self.count_mode = getattr(request, "count_mode", 0)
        self.expand = getattr(request, "expand", ())
        self.read_mask = getattr(request, "read_mask", None)


def handlers(bindings: list[Binding], runs: dict[str, Handler]) -> dict[str, grpc.RpcMethodHandler]:
    """A gRPC handler per bound method, running its behaviour (`runs`, by method name)."""
    out = {}
    for b in bindings:
        request_cls = GetMessageClass(b.method.input_type)
        response_cls = GetMessageClass(b.method.output_type)
        out[b.method.name] = grpc.unary_unary_rpc_method_handler(
            runs[b.method.name],
            request_deserializer=request_cls.FromString,
            response_serializer=response_cls.SerializeToString,
        )
    return out


def behaviours(
    bindings: list[Binding],
    methods: dict[str, StandardMethods[Any]],
    api: Api,
    extensions: Mapping[str, Extension],
) -> dict[str, Handler]:
    """Each bound method's behaviour, by method name: a standard method of its resource
    (`methods`, by message full name), or its extension."""
    runs = {}
    for b in bindings:
        if b.spec is None:
            runs[b.method.name] = extensions[method_name(b.method)](api)
        else:
            runs[b.method.name] = _behaviour(b, methods[b.spec.message.full_name])
    return runs


def _behaviour(b: Binding, std: StandardMethods[Any]) -> Handler:
    out = GetMessageClass(b.method.output_type)
    verb = b.verb
    if verb == "create":
        return lambda request, ctx: std.create(request)
    if verb == "get":
        return lambda request, ctx: std.get(request)
    if verb == "update":
        return lambda request, ctx: std.update(request)
    if verb == "delete":
        return lambda request, ctx: std.delete(request)
    if verb == "undelete":
        return lambda request, ctx: std.undelete(request)
    if verb == "batch_get":
        holder = out.DESCRIPTOR.fields[0].name

        async def batch_get(request: Any, ctx: Any) -> Message:
            return out(**{holder: await std.batch_get(request)})

        return batch_get
    if verb == "batch_create":
        return lambda request, ctx: std.batch_create(request, out)
    if verb == "batch_update":
        return lambda request, ctx: std.batch_update(request, out)
    if verb == "batch_delete":
        return lambda request, ctx: std.batch_delete(request, out)
    if verb == "list":
        return _lister(b, std, out)
    if verb == "count":
        return _counter(std, out)
    if verb == "aggregate":
        return lambda request, ctx: std.aggregate(request, out)
    if verb == "rank":
        return _ranker(std, out)
    return _incrementer(b, std)


def _lister(b: Binding, std: StandardMethods[Any], out: type[Message]) -> Handler:
    fields = out.DESCRIPTOR.fields_by_name
    assert b.spec is not None  # a standard method
    items = b.spec.plural
    totals = "total_size" in fields
    exact = "total_size_exact" in fields
    complete = all(
        name in b.method.input_type.fields_by_name
        for name in ("filter", "order_by", "skip", "show_deleted", "count_mode")
    )

    async def run(request: Any, ctx: Any) -> Message:
        page = await std.page(request if complete else _Query(request))
        answer: dict[str, Any] = {items: page.items, "next_page_token": page.next_page_token}
        if totals and page.total_size is not None:
            answer["total_size"] = page.total_size
        if exact:
            answer["total_size_exact"] = page.total_size_exact
        return out(**answer)

    return run


def _counter(std: StandardMethods[Any], out: type[Message]) -> Handler:
    exact_field = "total_size_exact" in out.DESCRIPTOR.fields_by_name

    async def run(request: Any, ctx: Any) -> Message:
        total, exact = await std.count(_Query(request))
        answer: dict[str, Any] = {"total_size": total}
        if exact_field:
            answer["total_size_exact"] = exact
        return out(**answer)

    return run


def _ranker(std: StandardMethods[Any], out: type[Message]) -> Handler:
    totals = "total_size" in out.DESCRIPTOR.fields_by_name

    async def run(request: Any, ctx: Any) -> Message:
        rank, total = await std.rank(request)
        answer: dict[str, Any] = {"rank": rank}
        if totals:
            answer["total_size"] = total
        return out(**answer)

    return run


def _incrementer(b: Binding, std: StandardMethods[Any]) -> Handler:
    deltas = [
        f.name for f in b.method.input_type.fields if f.name not in ("id", "etag", "request_id")
    ]

    async def run(request: Any, ctx: Any) -> Any:
        key = validation.resource_id(request.id, "id")
        version = parse_etag(getattr(request, "etag", ""), "etag")
        changes = {name: getattr(request, name) for name in deltas if getattr(request, name)}
        if not changes:
            raise InvalidArgument.field(deltas[0], "no counter changes: every delta is 0")

        def work(repo: Any) -> Awaitable[Any]:
            return cast(DeclaredRepository, repo).increment(key, changes, version)

        return await std.write_one(request, work)

    return run


def register(
    declared: Declared,
    services: list[tuple[str, list[Binding]]],
    server: Any,
    make: Callable[[Any], StandardMethods[Any]],
    units: Units,
    extensions: Mapping[str, Extension],
) -> list[tuple[ServiceDescriptor, object]]:
    """Adds the schema's services to `server` (as generic handlers: see server/handlers.py),
    with `make(resource)` building each resource's StandardMethods. Returns each service
    and an object with its behaviours as attributes, for Transact."""
    methods = {name: make(resource) for name, resource in declared.resources.items()}
    named = {declared.spec(name).message.name: std for name, std in methods.items()}
    api = Api(units, {**methods, **named})
    by_name = {service.full_name: service for service in declared.schema.services}
    served: list[tuple[ServiceDescriptor, object]] = []
    for name, bindings in services:
        runs = behaviours(bindings, methods, api, extensions)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(name, handlers(bindings, runs))]
        )
        served.append((by_name[name], SimpleNamespace(**runs)))
    return served

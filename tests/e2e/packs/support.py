"""What the packs' end-to-end tests share: where the packs are, timestamps, masks and
Transact calls built from a pack client's messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, descriptor_pool, field_mask_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from repogate.v1 import transaction_pb2 as tx_pb
from repogate.v1 import transaction_pb2_grpc
from tests.declared import Client
from tests.rpc import md

PACKS = Path(__file__).parents[3] / "schemas"


def at(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def when(stamp: timestamp_pb2.Timestamp) -> str:
    """A Timestamp as a filter literal."""
    return f'"{stamp.ToJsonString()}"'


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=paths)


def struct(**fields: Any) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(fields)
    return value


def moment(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime()


def call(c: Client, method: str, request: Message) -> tx_pb.TransactCall:
    """A Transact call of `method` ("Service/Method") of the client's package."""
    packed = any_pb2.Any()
    packed.Pack(request)
    return tx_pb.TransactCall(method=f"{c.package}.{method}", request=packed)


async def transact(c: Client, *calls: tx_pb.TransactCall) -> list[Any]:
    """Runs `calls` in one transaction as the client's tenant; their responses, unpacked."""
    stub = transaction_pb2_grpc.TransactionServiceStub(c.channel)
    answer = await stub.Transact(tx_pb.TransactRequest(calls=calls), metadata=md(c.tenant))
    return list(answer.responses)


def unpacked(calls: Sequence[tx_pb.TransactCall], answers: Sequence[any_pb2.Any]) -> list[Any]:
    """Each of `transact`'s answers as the response message of its call's method."""
    pool = descriptor_pool.Default()
    out = []
    for each, answer in zip(calls, answers, strict=True):
        service, name = each.method.split("/")
        response = GetMessageClass(
            pool.FindServiceByName(service).methods_by_name[name].output_type
        )()
        assert answer.Unpack(response)
        out.append(response)
    return out


def _method(c: Client, resource: str, verb: str) -> Any:
    """The method of `<resource>Service` named `verb` and the resource's singular (Create,
    Get, ...) or plural (List, Count: the service's one method starting so)."""
    service = descriptor_pool.Default().FindServiceByName(f"{c.package}.{resource}Service")
    if verb in ("List", "Count"):
        (found,) = [m for m in service.methods if m.name.startswith(verb)]
        return found
    return service.methods_by_name[f"{verb}{resource}"]


def plural(c: Client, resource: str) -> str:
    """The resource's plural in method names ("Sessions", "UserStatistics")."""
    return str(_method(c, resource, "List").name.removeprefix("List"))


async def create(c: Client, resource: str, **fields: Any) -> Any:
    """Create<resource> with a resource message of `fields`."""
    method = _method(c, resource, "Create")
    (holder,) = [f.name for f in method.input_type.fields if f.name != "request_id"]
    request = {holder: c.message(resource, **fields)}
    return await c(f"{resource}Service/{method.name}", **request)


async def listed(c: Client, resource: str, **request: Any) -> list[Any]:
    """Every row List<resources> answers to `request`, page by page."""
    method = _method(c, resource, "List")
    items = method.output_type.fields[0].name
    return [item async for item in c.walk(f"{resource}Service/{method.name}", items, **request)]


async def counted(c: Client, resource: str, text: str) -> int:
    method = _method(c, resource, "Count")
    return int((await c(f"{resource}Service/{method.name}", filter=text)).total_size)


async def begin(c: Client) -> str:
    """A transaction of the client's tenant across calls: its id."""
    stub = transaction_pb2_grpc.TransactionServiceStub(c.channel)
    answer = await stub.BeginTransaction(tx_pb.BeginTransactionRequest(), metadata=md(c.tenant))
    return str(answer.id)


async def commit(c: Client, transaction: str) -> None:
    stub = transaction_pb2_grpc.TransactionServiceStub(c.channel)
    await stub.Commit(tx_pb.CommitRequest(transaction_id=transaction), metadata=md(c.tenant))


async def rollback(c: Client, transaction: str) -> None:
    stub = transaction_pb2_grpc.TransactionServiceStub(c.channel)
    await stub.Rollback(tx_pb.RollbackRequest(transaction_id=transaction), metadata=md(c.tenant))

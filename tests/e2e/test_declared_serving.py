"""How a schema's services are served (tests/schemas/tasks), on SQLite and PostgreSQL:
in Transact and in transactions across calls like the built-in services, seen by
reflection, and a schema with a method Repogate cannot serve refused at start."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, descriptor_pb2
from google.protobuf.message import Message
from grpc import aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from repogate.v1 import transaction_pb2 as pb
from schema.model import SchemaError
from tests.conftest import Running
from tests.declared import PACKAGE, Client, ids, message
from tests.e2e.support import StartRepogate, fails
from tests.e2e.test_transactions import TxStub, begin, commit, rollback
from tests.rpc import md

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(tasks_server: Running) -> Client:
    return Client(tasks_server.channel)


@pytest.fixture
def txs(tasks_server: Running) -> TxStub:
    return TxStub(tasks_server.channel)


def call(method: str, request: Message) -> pb.TransactCall:
    packed = any_pb2.Any()
    packed.Pack(request)
    return pb.TransactCall(method=f"{PACKAGE}.{method}", request=packed)


def creating_project(name: str) -> pb.TransactCall:
    project = message("Project", name=name)
    return call("ProjectService/CreateProject", message("CreateProjectRequest", project=project))


def creating_task(project_id: str, title: str, **fields: Any) -> pb.TransactCall:
    task = message("Task", project_id=project_id, title=title, **fields)
    return call("TaskService/CreateTask", message("CreateTaskRequest", task=task))


async def transact(txs: TxStub, c: Client, *calls: pb.TransactCall) -> pb.TransactResponse:
    return await txs.Transact(pb.TransactRequest(calls=calls), metadata=md(c.tenant))


async def names(c: Client) -> list[str]:
    return sorted(p.name for p in (await c("ProjectService/ListProjects")).projects)


# ---------------------------------------------------------------- Transact


async def test_transact_creates_a_project_and_a_task_together(txs: TxStub, client: Client) -> None:
    home = await client.project("home")

    response = await transact(txs, client, creating_project("new"), creating_task(home.id, "t"))

    project, task = message("Project"), message("Task")
    assert response.responses[0].Unpack(project)
    assert response.responses[1].Unpack(task)
    assert (project.name, task.title, task.project_id) == ("new", "t", home.id)
    assert await client("ProjectService/GetProject", id=project.id) == project
    assert ids((await client("TaskService/ListTasks")).tasks) == [task.id]


async def test_a_failing_second_step_leaves_nothing(txs: TxStub, client: Client) -> None:
    home = await client.project("home")
    theirs = await client.as_tenant(f"t-{uuid.uuid4().hex[:16]}").project()

    invalid = await fails(
        transact(txs, client, creating_project("new"), creating_task(home.id, "", priority=3))
    )
    assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(invalid.violations) == ["calls[1].request.task.title"]
    missing = await fails(
        transact(txs, client, creating_project("new"), creating_task(theirs.id, "t"))
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert missing.metadata["call_index"] == "1"

    assert await names(client) == ["home"]
    assert (await client("TaskService/CountTasks", show_deleted=True)).total_size == 0


# ---------------------------------------------------------------- across calls


async def test_a_transaction_across_calls_commits_declared_writes(
    txs: TxStub, client: Client
) -> None:
    tx = await begin(txs, client.tenant)
    inside = client.inside(tx.id)

    project = await inside.project("inside")
    task = await inside.task(project.id, "t")
    counted = await inside("TaskService/IncrementTaskCounters", id=task.id, attempts=1)
    assert await inside("TaskService/GetTask", id=task.id) == counted
    assert await names(client) == []
    assert (
        await fails(client("TaskService/GetTask", id=task.id))
    ).code == grpc.StatusCode.NOT_FOUND

    await commit(txs, client.tenant, tx)

    assert await names(client) == ["inside"]
    assert (await client("TaskService/GetTask", id=task.id)).attempts == 1


async def test_a_rolled_back_transaction_leaves_nothing(txs: TxStub, client: Client) -> None:
    home = await client.project("home")
    tx = await begin(txs, client.tenant)
    inside = client.inside(tx.id)
    task = await inside.task(home.id, "gone")
    await inside("ProjectService/UpdateProject", project=message("Project", id=home.id, name="x"))
    await inside("TaskService/CreateTask", task=message("Task", project_id=home.id, title="t2"))

    await rollback(txs, client.tenant, tx)

    assert await names(client) == ["home"]
    assert (
        await fails(client("TaskService/GetTask", id=task.id))
    ).code == grpc.StatusCode.NOT_FOUND
    assert (await client("TaskService/CountTasks")).total_size == 0


# ---------------------------------------------------------------- reflection


async def _reflect(
    channel: aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (response,) = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
    return response


async def test_reflection_lists_and_resolves_the_schemas_services(tasks_server: Running) -> None:
    listed = await _reflect(
        tasks_server.channel, reflection_pb2.ServerReflectionRequest(list_services="")
    )
    services = {s.name for s in listed.list_services_response.service}
    assert {
        f"{PACKAGE}.{s}" for s in ("ProjectService", "TaskService", "CommentService")
    } <= services

    found = await _reflect(
        tasks_server.channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=f"{PACKAGE}.TaskService"),
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    (task_file,) = [f for f in files if f.name == "acme/tasks/v1/task.proto"]
    assert task_file.package == PACKAGE
    (service,) = task_file.service
    assert "IncrementTaskCounters" in {m.name for m in service.method}
    assert "repogate/options/v1/options.proto" in task_file.dependency


# ---------------------------------------------------------------- unservable schemas


BAD_SCHEMA = """\
syntax = "proto3";

package {package};

import "repogate/options/v1/options.proto";

message Widget {{
  option (repogate.options.v1.resource) = {{}};

  string id = 1;
  string etag = 2;
  string name = 3;
}}

service WidgetService {{
  rpc CreateWidget(CreateWidgetRequest) returns (Widget);
  rpc GetWidget(LookUp) returns (Widget);
  rpc FrobWidget(CreateWidgetRequest) returns (Widget);
}}

message CreateWidgetRequest {{
  Widget widget = 1;
}}

message LookUp {{
  string name = 1;
}}
"""


async def test_a_method_repogate_cannot_serve_stops_the_start(
    tmp_path: Path, start_repogate: StartRepogate
) -> None:
    # Names of the test's own: the process-wide descriptor pool keeps every file loaded.
    package = f"odd{uuid.uuid4().hex[:8]}.v1"
    directory = tmp_path / "schema" / package.replace(".", "/")
    directory.mkdir(parents=True)
    (directory / "widget.proto").write_text(BAD_SCHEMA.format(package=package))

    with pytest.raises(SchemaError) as refused:
        await start_repogate(schema_path=str(tmp_path / "schema"))

    text = str(refused.value)
    assert f"{package}.WidgetService.FrobWidget" in text
    assert f"{package}.WidgetService.GetWidget: LookUp needs a field `string id`" in text
    assert "CreateWidget" not in text

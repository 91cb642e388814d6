"""Field masks on schema-declared resources (tests/schemas/tasks), end to end on SQLite
and PostgreSQL: `read_mask` (AIP-157) on Get, List and BatchGet, with bad input, the
read-through cache and other tenants."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from tests.conftest import Running
from tests.declared import Client, message
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PAYLOAD = {"theme": "light", "ui": {"font": "serif", "size": 12}, "my key": 1, "a.b": True}


@pytest.fixture
def client(tasks_server: Running) -> Client:
    return Client(tasks_server.channel)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=paths)


def plain(item: Any) -> dict[str, Any]:
    """A message as JSON, without its unset fields: what a masked answer holds."""
    return json_format.MessageToDict(item, preserving_proto_field_name=True)


async def a_task(c: Client, **fields: Any) -> Any:
    project = await c.project()
    task = message("Task", project_id=project.id, title="masked", priority=3, tags=["x"])
    task.payload.update(fields.pop("payload", PAYLOAD))
    for name, value in fields.items():
        setattr(task, name, value)
    return await c("TaskService/CreateTask", task=task)


async def update(c: Client, task_id: str, paths: list[str], **fields: Any) -> Any:
    payload = fields.pop("payload", None)
    task = message("Task", id=task_id, **fields)
    if payload is not None:
        task.payload.update(payload)
    return await c("TaskService/UpdateTask", task=task, update_mask=mask(*paths))


# ------------------------------------------------------------------ read_mask


async def test_read_mask_answers_with_the_fields_and_keys_named(client: Client) -> None:
    task = await a_task(client)

    got = await client(
        "TaskService/GetTask", id=task.id, read_mask=mask("title", "payload.ui.font")
    )
    assert plain(got) == {"title": "masked", "payload": {"ui": {"font": "serif"}}}
    quoted = await client(
        "TaskService/GetTask", id=task.id, read_mask=mask("id", "payload.`my key`", "payload.`a.b`")
    )
    assert plain(quoted) == {"id": task.id, "payload": {"my key": 1, "a.b": True}}
    # A key the document lacks leaves the Struct empty; a parent path wins over a child.
    absent = await client("TaskService/GetTask", id=task.id, read_mask=mask("payload.nope"))
    assert absent.HasField("payload")
    assert plain(absent) == {"payload": {}}
    both = await client(
        "TaskService/GetTask", id=task.id, read_mask=mask("payload", "payload.theme", "etag")
    )
    assert plain(both) == {"payload": PAYLOAD, "etag": task.etag}

    for every in (mask(), mask("*")):
        assert await client("TaskService/GetTask", id=task.id, read_mask=every) == task

    listed = await client(
        "TaskService/ListTasks",
        filter=f'project_id = "{task.project_id}"',
        read_mask=mask("id", "priority", "payload.theme"),
    )
    assert [plain(t) for t in listed.tasks] == [
        {"id": task.id, "priority": 3, "payload": {"theme": "light"}}
    ]
    batch = await client("TaskService/BatchGetTasks", ids=[task.id], read_mask=mask("tags"))
    assert [plain(t) for t in batch.tasks] == [{"tags": ["x"]}]


async def test_read_mask_pages_by_the_order_it_leaves_out(client: Client) -> None:
    project = await client.project()
    for n in range(5):
        await client.task(project.id, title=f"t{n}", priority=n)
    seen = []
    async for item in client.walk(
        "TaskService/ListTasks",
        "tasks",
        filter=f'project_id = "{project.id}"',
        order_by="priority desc",
        page_size=2,
        read_mask=mask("title"),
    ):
        seen.append(plain(item))
    assert seen == [{"title": f"t{n}"} for n in (4, 3, 2, 1, 0)]


async def test_a_masked_get_fills_and_reads_the_cache_with_whole_rows(client: Client) -> None:
    task = await a_task(client)
    # The first read fills the cache; a whole Get after it must not see a masked row.
    first = await client("TaskService/GetTask", id=task.id, read_mask=mask("title"))
    assert plain(first) == {"title": "masked"}
    assert await client("TaskService/GetTask", id=task.id) == task
    again = await client("TaskService/GetTask", id=task.id, read_mask=mask("priority"))
    assert plain(again) == {"priority": 3}
    changed = await update(client, task.id, ["priority"], priority=7)
    after = await client("TaskService/GetTask", id=task.id, read_mask=mask("priority", "etag"))
    assert plain(after) == {"priority": 7, "etag": changed.etag}


@pytest.mark.parametrize(
    ("paths", "complaint"),
    [
        (["nope"], "no field 'nope'"),
        (["title.x"], "only a google.protobuf.Struct"),
        (["payload..x"], "is not a path"),
        (["payload.`x"], "is not a path"),
        (["payload.*"], "'*'"),
        (["*", "title"], "stands alone"),
    ],
)
async def test_a_read_mask_naming_what_is_not_there_is_invalid(
    client: Client, paths: list[str], complaint: str
) -> None:
    task = await a_task(client)
    calls = [
        client("TaskService/GetTask", id=task.id, read_mask=mask(*paths)),
        client("TaskService/ListTasks", read_mask=mask(*paths)),
        client("TaskService/BatchGetTasks", ids=[task.id], read_mask=mask(*paths)),
    ]
    for call in calls:
        error = await fails(call)
        assert error.code == INVALID
        assert list(error.violations) == ["read_mask"]
        assert complaint in error.violations["read_mask"]


async def test_a_read_mask_shows_nothing_of_another_tenant(client: Client) -> None:
    task = await a_task(client)
    other = client.as_tenant(f"other-{client.tenant}")
    read_mask = mask("id", "title", "payload.theme")

    error = await fails(other("TaskService/GetTask", id=task.id, read_mask=read_mask))
    assert error.code == NOT_FOUND
    error = await fails(other("TaskService/BatchGetTasks", ids=[task.id], read_mask=read_mask))
    assert error.code == NOT_FOUND
    assert list((await other("TaskService/ListTasks", read_mask=read_mask)).tasks) == []
    mine = await client("TaskService/GetTask", id=task.id, read_mask=read_mask)
    assert plain(mine) == {"id": task.id, "title": "masked", "payload": {"theme": "light"}}

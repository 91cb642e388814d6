"""Field masks on schema-declared resources (tests/schemas/tasks), end to end on SQLite
and PostgreSQL: `read_mask` (AIP-157) on Get, List and BatchGet, and `update_mask`
paths into Struct fields (AIP-161), with bad input, the read-through cache, other
tenants, and concurrent updates of one document."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from tests.conftest import Running
from tests.declared import Client, message
from tests.e2e.holding import begin, commit, until_waiting
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


# ------------------------------------------------------------------ update_mask sub-paths


async def test_update_mask_paths_set_and_remove_keys_and_keep_the_rest(client: Client) -> None:
    task = await a_task(client)

    # theme is set; ui.size, absent from the request, is removed; the rest stays.
    done = await update(
        client,
        task.id,
        ["payload.theme", "payload.ui.size", "title"],
        title="renamed",
        payload={"theme": "dark", "ignored": 1},
    )
    expected = {"theme": "dark", "ui": {"font": "serif"}, "my key": 1, "a.b": True}
    assert (done.title, plain(done)["payload"]) == ("renamed", expected)
    # Keys on a missing way are made objects; a quoted key holds the path's characters.
    deep = await update(
        client,
        task.id,
        ["payload.new.deep.x", "payload.`a.b`"],
        payload={"new": {"deep": {"x": [1, "two"], "y": 0}}},
    )
    expected = {**expected, "new": {"deep": {"x": [1, "two"]}}}
    del expected["a.b"]
    assert plain(deep)["payload"] == expected
    assert plain(await client("TaskService/GetTask", id=task.id))["payload"] == expected
    assert int(deep.etag) == int(task.etag) + 2

    # A task without a payload gets one from a set, and keeps none after a removal.
    bare = await client.task((await client.project()).id)
    assert not bare.HasField("payload")
    removed = await update(client, bare.id, ["payload.theme"])
    assert not removed.HasField("payload")
    made = await update(client, bare.id, ["payload.theme"], payload={"theme": "dark"})
    assert plain(made)["payload"] == {"theme": "dark"}

    # Read and write agree (AIP-161): a read with the mask, written back with it, is a no-op.
    read = await client("TaskService/GetTask", id=task.id, read_mask=mask("payload.ui.font"))
    read.id = task.id
    back = await client("TaskService/UpdateTask", task=read, update_mask=mask("payload.ui.font"))
    assert back.payload == deep.payload


async def test_batch_update_items_take_paths_into_structs(client: Client) -> None:
    first, second = await a_task(client), await a_task(client)
    requests = []
    for item, theme in ((first, "dark"), (second, "light")):
        task = message("Task", id=item.id)
        task.payload.update({"theme": theme})
        requests.append(
            message("UpdateTaskRequest", task=task, update_mask=mask("payload.theme", "payload.ui"))
        )
    done = await client("TaskService/BatchUpdateTasks", requests=requests)
    assert [plain(t)["payload"] for t in done.tasks] == [
        {"theme": "dark", "my key": 1, "a.b": True},
        {"theme": "light", "my key": 1, "a.b": True},
    ]


@pytest.mark.parametrize(
    ("paths", "complaint"),
    [
        (["payload", "payload.theme"], "inside 'payload'"),
        (["payload.ui", "payload.ui.font"], "inside 'payload.ui'"),
        (["title.x"], "only a google.protobuf.Struct"),
        (["project_id.x"], "cannot change after create"),
        (["attempts"], "not an updatable field"),
        (["nope.x"], "not an updatable field"),
        (["payload..x"], "is not a path"),
        (["payload.theme", "*"], "stands alone"),
        (["*", "title"], "stands alone"),
    ],
)
async def test_bad_update_mask_paths_are_invalid_and_write_nothing(
    client: Client, paths: list[str], complaint: str
) -> None:
    task = await a_task(client)
    error = await fails(update(client, task.id, paths, title="x", payload={"theme": "dark"}))
    assert error.code == INVALID
    assert list(error.violations) == ["update_mask"]
    assert complaint in error.violations["update_mask"]
    assert await client("TaskService/GetTask", id=task.id) == task


async def test_rules_and_checks_judge_the_document_as_it_would_be_written(
    client: Client,
) -> None:
    project = await client.project()
    settings = message("Project", id=project.id)
    settings.settings.update({"theme": "blue"})
    error = await fails(
        client("ProjectService/UpdateProject", project=settings, update_mask=mask("settings.theme"))
    )
    assert error.code == INVALID
    assert list(error.violations) == ["project.settings"]

    # The field's checks (what a JSON column may store) judge the document too.
    task = await a_task(client)
    error = await fails(
        update(client, task.id, ["payload.ui.font"], payload={"ui": {"font": "a\x00b"}})
    )
    assert error.code == INVALID
    assert list(error.violations) == ["task.payload"]
    assert "NUL" in error.violations["task.payload"]
    assert await client("TaskService/GetTask", id=task.id) == task


async def test_a_path_update_of_another_tenants_row_is_not_found(client: Client) -> None:
    task = await a_task(client)
    other = client.as_tenant(f"other-{client.tenant}")
    error = await fails(update(other, task.id, ["payload.theme"], payload={"theme": "dark"}))
    assert error.code == NOT_FOUND
    assert await client("TaskService/GetTask", id=task.id) == task


async def test_concurrent_path_updates_of_one_document_all_land(client: Client) -> None:
    task = await a_task(client, payload={})
    keys = [f"k{n}" for n in range(8)]
    await asyncio.gather(
        *(update(client, task.id, [f"payload.{key}"], payload={key: key}) for key in keys)
    )
    got = await client("TaskService/GetTask", id=task.id)
    assert plain(got)["payload"] == {key: key for key in keys}
    assert int(got.etag) == int(task.etag) + len(keys)


async def test_a_path_update_waiting_on_a_transaction_keeps_what_it_wrote(
    client: Client, tasks_server: Running
) -> None:
    """One update holds the row in an open transaction; another, of another key, waits
    for it and then writes on top of what it committed."""
    task = await a_task(client, payload={"a": 0, "b": 0})
    inside = await begin(client)
    await update(inside, task.id, ["payload.a"], payload={"a": 1})
    second = asyncio.ensure_future(update(client, task.id, ["payload.b"], payload={"b": 2}))
    await until_waiting(tasks_server.app.settings.database_url)
    assert not second.done()
    await commit(inside)
    done = await second
    assert plain(done)["payload"] == {"a": 1, "b": 2}
    assert int(done.etag) == int(task.etag) + 2

"""Resources declared in protobuf alone (tests/schemas/tasks), end to end through a real
server on SQLite and PostgreSQL: every standard and batch method of Project, Task and
Comment, the schema's validation rules, uniqueness, references, soft delete, etags and
the read-through cache."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from tests.conftest import Running
from tests.declared import Client, ids, message
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
Fields = Callable[[int], dict[str, Any]]
TASK_STATE_OPEN, TASK_STATE_DONE = 1, 2


@pytest.fixture
def client(tasks_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(tasks_server.channel)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=paths)


async def comment(c: Client, task_id: str, body: str = "a remark") -> Any:
    return await c(
        "CommentService/CreateComment", comment=message("Comment", task_id=task_id, body=body)
    )


async def names(c: Client) -> list[str]:
    return [p.name for p in (await c("ProjectService/ListProjects")).projects]


# What each resource's methods are called with: the fields of the n-th new one (its
# parents created first), and a field an update changes.
async def _project_fields(c: Client) -> Fields:
    tag = uuid.uuid4().hex[:6]
    return lambda n: {"name": f"project {tag} {n}", "code": "AB"}


async def _task_fields(c: Client) -> Fields:
    project = await c.project()
    return lambda n: {"project_id": project.id, "title": f"task {n}", "tags": [f"t{n}"]}


async def _comment_fields(c: Client) -> Fields:
    task = await c.task((await c.project()).id)
    return lambda n: {"task_id": task.id, "body": f"remark {n}"}


KINDS: dict[str, tuple[Callable[[Client], Awaitable[Fields]], str]] = {
    "Project": (_project_fields, "description"),
    "Task": (_task_fields, "title"),
    "Comment": (_comment_fields, "body"),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_every_standard_and_batch_method(client: Client, kind: str) -> None:
    make, changed = KINDS[kind]
    fields = await make(client)
    one, many = kind.lower(), f"{kind.lower()}s"
    service = f"{kind}Service"

    async def call(method: str, **request: Any) -> Any:
        return await client(f"{service}/{method}", **request)

    created = await call(f"Create{kind}", **{one: message(kind, **fields(0))})
    assert created.id
    assert created.etag
    assert created.HasField("create_time")
    assert await call(f"Get{kind}", id=created.id) == created

    edit = message(kind, id=created.id, etag=created.etag, **{changed: "changed"})
    updated = await call(f"Update{kind}", **{one: edit}, update_mask=mask(changed))
    assert getattr(updated, changed) == "changed"
    assert updated.etag != created.etag
    assert await call(f"Get{kind}", id=created.id) == updated

    listed = await call(f"List{kind}s")
    assert ids(getattr(listed, many)) == [created.id]
    assert (await call(f"Count{kind}s")).total_size == 1

    deleted = await call(f"Delete{kind}", id=created.id, etag=updated.etag)
    assert deleted.HasField("delete_time")
    assert ids(getattr(await call(f"List{kind}s"), many)) == []
    shown = await call(f"List{kind}s", show_deleted=True)
    assert ids(getattr(shown, many)) == [created.id]
    assert (await call(f"Count{kind}s")).total_size == 0
    assert (await call(f"Count{kind}s", show_deleted=True)).total_size == 1
    restored = await call(f"Undelete{kind}", id=created.id, etag=deleted.etag)
    assert not restored.HasField("delete_time")
    assert ids(getattr(await call(f"List{kind}s"), many)) == [created.id]

    requests = [
        message(f"Create{kind}Request", **{one: message(kind, **fields(n))}) for n in (1, 2, 3)
    ]
    batch = getattr(await call(f"BatchCreate{many.capitalize()}", requests=requests), many)
    assert len(batch) == 3
    assert len(set(ids(batch))) == 3
    wanted = [batch[2].id, created.id, batch[0].id]
    got = getattr(await call(f"BatchGet{many.capitalize()}", ids=wanted), many)
    assert ids(got) == wanted

    updates = [
        message(
            f"Update{kind}Request",
            **{one: message(kind, id=item.id, etag=item.etag, **{changed: f"batch {n}"})},
            update_mask=mask(changed),
        )
        for n, item in enumerate(batch[:2])
    ]
    changed_items = getattr(await call(f"BatchUpdate{many.capitalize()}", requests=updates), many)
    assert [getattr(item, changed) for item in changed_items] == ["batch 0", "batch 1"]
    assert ids(changed_items) == ids(batch[:2])

    deletes = [message(f"Delete{kind}Request", id=item.id) for item in batch[1:]]
    gone = getattr(await call(f"BatchDelete{many.capitalize()}", requests=deletes), many)
    assert ids(gone) == ids(batch[1:])
    assert all(item.HasField("delete_time") for item in gone)
    assert (await call(f"Count{kind}s")).total_size == 2


# ---------------------------------------------------------------- tasks' own fields


async def test_a_task_keeps_tags_struct_enum_and_optional_fields(client: Client) -> None:
    project = await client.project()
    payload = struct_pb2.Struct()
    payload.update({"size": 3, "labels": ["x", "y"], "nested": {"ok": True}})
    due = timestamp_pb2.Timestamp(seconds=1_900_000_000)

    task = await client.task(
        project.id,
        "full",
        tags=["a", "b"],
        payload=payload,
        priority=7,
        state="TASK_STATE_DONE",
        due_time=due,
        assignee="ann",
    )

    got = await client("TaskService/GetTask", id=task.id)
    assert got == task
    assert (list(got.tags), got.payload, got.priority) == (["a", "b"], payload, 7)
    assert got.state == TASK_STATE_DONE
    assert (got.due_time, got.assignee) == (due, "ann")
    bare = await client.task(project.id, "bare")
    # The schema's default, and absent optionals.
    assert bare.state == TASK_STATE_OPEN
    assert not bare.HasField("due_time")
    assert not bare.HasField("assignee")
    # Masked fields with presence left unset are cleared, not set to their zero values.
    edit = message("Task", id=task.id)
    clear = mask("due_time", "assignee", "payload")
    cleared = await client("TaskService/UpdateTask", task=edit, update_mask=clear)
    assert await client("TaskService/GetTask", id=task.id) == cleared
    assert [f for f in ("due_time", "assignee", "payload") if cleared.HasField(f)] == []
    assert (cleared.priority, list(cleared.tags)) == (7, ["a", "b"])


async def test_counters_change_only_by_increment(client: Client) -> None:
    project = await client.project()
    # Counters and output-only fields sent on create are ignored.
    task = await client.task(project.id, attempts=9, created_by="mallory")
    assert task.attempts == 0
    assert task.created_by != "mallory"

    once = await client("TaskService/IncrementTaskCounters", id=task.id, attempts=2)
    twice = await client("TaskService/IncrementTaskCounters", id=task.id, attempts=3)

    assert (once.attempts, twice.attempts) == (2, 5)
    assert twice.etag != once.etag
    assert (await client("TaskService/GetTask", id=task.id)).attempts == 5
    error = await fails(client("TaskService/IncrementTaskCounters", id=task.id, attempts=0))
    assert error.code == INVALID
    assert "attempts" in error.violations
    edit = message("Task", id=task.id, attempts=100, title="t")
    updated = await client("TaskService/UpdateTask", task=edit)
    assert (updated.attempts, updated.title) == (5, "t")


# ---------------------------------------------------------------- validation


async def test_the_schemas_rules_name_the_fields_they_refuse(client: Client) -> None:
    project = await client.project()

    error = await fails(client.task(project.id, "", priority=11))

    assert error.code == INVALID
    assert set(error.violations) == {"task.title", "task.priority"}
    good = message("CreateTaskRequest", task=message("Task", project_id=project.id, title="ok"))
    bad = message(
        "CreateTaskRequest", task=message("Task", project_id=project.id, title="x", priority=-1)
    )
    error = await fails(client("TaskService/BatchCreateTasks", requests=[good, bad]))
    assert error.code == INVALID
    assert list(error.violations) == ["requests[1].task.priority"]
    repeated = await fails(client.task(project.id, tags=["a", "a"]))
    assert list(repeated.violations) == ["task.tags"]
    beyond = timestamp_pb2.Timestamp(seconds=253402300800)  # year 10000
    late = await fails(client.task(project.id, due_time=beyond))
    assert (late.code, late.violations) == (INVALID, {"task.due_time": "is not a valid timestamp"})
    assert ids((await client("TaskService/ListTasks")).tasks) == []


async def test_an_update_checks_only_the_masked_fields(client: Client) -> None:
    project = await client.project()
    task = await client.task(project.id, "kept", priority=4)

    # The title left out of the mask is empty in the request, and not checked.
    ok = await client(
        "TaskService/UpdateTask",
        task=message("Task", id=task.id, priority=9),
        update_mask=mask("priority"),
    )
    assert (ok.title, ok.priority) == ("kept", 9)
    error = await fails(
        client(
            "TaskService/UpdateTask",
            task=message("Task", id=task.id, priority=12),
            update_mask=mask("priority"),
        )
    )
    assert list(error.violations) == ["task.priority"]
    batch = [
        message(
            "UpdateTaskRequest",
            task=message("Task", id=task.id, title="new"),
            update_mask=mask("title"),
        ),
    ]
    bad = message(
        "UpdateTaskRequest", task=message("Task", id=task.id, title=""), update_mask=mask("title")
    )
    error = await fails(client("TaskService/BatchUpdateTasks", requests=[*batch, bad]))
    assert list(error.violations) == ["requests[1].task.title"]
    assert (await client("TaskService/GetTask", id=task.id)).title == "kept"


async def test_required_and_immutable_fields(client: Client) -> None:
    project = await client.project(code="AB")

    missing = await fails(client("TaskService/CreateTask", task=message("Task", title="orphan")))
    assert missing.code == INVALID
    assert "task.project_id" in missing.violations
    nameless = await fails(client("ProjectService/CreateProject", project=message("Project")))
    assert "project.name" in nameless.violations
    pattern = await fails(client.project(code="lower"))
    assert list(pattern.violations) == ["project.code"]

    immutable = await fails(
        client(
            "ProjectService/UpdateProject",
            project=message("Project", id=project.id, code="CD"),
            update_mask=mask("code"),
        )
    )
    assert immutable.code == INVALID
    assert "update_mask" in immutable.violations
    # Without a mask an immutable field sent along is ignored.
    kept = await client(
        "ProjectService/UpdateProject",
        project=message("Project", id=project.id, code="CD", description="d"),
    )
    assert (kept.code, kept.description) == ("AB", "d")


# ---------------------------------------------------------------- uniqueness, references


async def test_project_names_are_unique_ignoring_case_until_deleted(client: Client) -> None:
    first = await client.project("Alpha")

    taken = await fails(client.project("ALPHA"))
    assert taken.code == grpc.StatusCode.ALREADY_EXISTS
    twice = [
        message("CreateProjectRequest", project=message("Project", name=n)) for n in ("b", "B")
    ]
    assert (
        await fails(client("ProjectService/BatchCreateProjects", requests=twice))
    ).code == INVALID
    # Another tenant has names of its own.
    assert (await client.as_tenant(f"t-{uuid.uuid4().hex[:16]}").project("alpha")).name == "alpha"

    beta = await client.project("beta")
    rename = message("Project", id=beta.id, name="alpha")
    renamed = await fails(client("ProjectService/UpdateProject", project=rename))
    assert renamed.code == grpc.StatusCode.ALREADY_EXISTS

    await client("ProjectService/DeleteProject", id=first.id)
    again = await client.project("alpha")
    assert again.id != first.id
    # The name is taken again: the first cannot come back under it.
    back = await fails(client("ProjectService/UndeleteProject", id=first.id))
    assert back.code == grpc.StatusCode.ALREADY_EXISTS
    assert await names(client) == ["alpha", "beta"]


async def test_references_stay_inside_the_tenant(client: Client) -> None:
    other = client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    theirs = await other.project()
    their_task = await other.task(theirs.id)

    assert (await fails(client.task(theirs.id))).code == NOT_FOUND
    assert (await fails(comment(client, their_task.id))).code == NOT_FOUND
    assert (await fails(client("TaskService/GetTask", id=their_task.id))).code == NOT_FOUND
    edit = message("Task", id=their_task.id, title="mine")
    assert (await fails(client("TaskService/UpdateTask", task=edit))).code == NOT_FOUND
    assert (await fails(client("TaskService/DeleteTask", id=their_task.id))).code == NOT_FOUND
    batch = client("TaskService/BatchGetTasks", ids=[their_task.id])
    assert (await fails(batch)).code == NOT_FOUND
    assert await other("TaskService/GetTask", id=their_task.id) == their_task
    assert ids((await client("TaskService/ListTasks")).tasks) == []


async def test_a_deleted_project_takes_no_new_tasks(client: Client) -> None:
    project = await client.project()
    await client("ProjectService/DeleteProject", id=project.id)

    error = await fails(client.task(project.id))

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    await client("ProjectService/UndeleteProject", id=project.id)
    assert (await client.task(project.id)).project_id == project.id


async def test_a_task_of_a_deleted_project_cannot_be_restored(client: Client) -> None:
    project = await client.project()
    task = await client.task(project.id)
    await client("TaskService/DeleteTask", id=task.id)
    await client("ProjectService/DeleteProject", id=project.id)

    error = await fails(client("TaskService/UndeleteTask", id=task.id))

    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESOURCE_DELETED")
    assert (await client("TaskService/GetTask", id=task.id)).HasField("delete_time")
    await client("ProjectService/UndeleteProject", id=project.id)
    restored = await client("TaskService/UndeleteTask", id=task.id)
    assert not restored.HasField("delete_time")


async def test_force_deleting_a_project_deletes_its_tasks(client: Client) -> None:
    project = await client.project()
    tasks = [await client.task(project.id, f"t{n}") for n in range(3)]
    # Read once: the cache holds it when the cascade removes the row.
    await client("TaskService/GetTask", id=tasks[0].id)

    await client("ProjectService/DeleteProject", id=project.id, force=True)

    assert (await fails(client("ProjectService/GetProject", id=project.id))).code == NOT_FOUND
    assert (await client("TaskService/CountTasks", show_deleted=True)).total_size == 0
    for task in tasks:
        assert (await fails(client("TaskService/GetTask", id=task.id))).code == NOT_FOUND


async def test_a_task_with_comments_cannot_be_purged(client: Client) -> None:
    project = await client.project()
    task = await client.task(project.id)
    await comment(client, task.id)

    error = await fails(client("TaskService/DeleteTask", id=task.id, force=True))

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert await client("TaskService/GetTask", id=task.id) == task
    project_purge = client("ProjectService/DeleteProject", id=project.id, force=True)
    assert (await fails(project_purge)).code == grpc.StatusCode.FAILED_PRECONDITION
    assert (await client("TaskService/CountTasks")).total_size == 1


# ---------------------------------------------------------------- soft delete, etags, cache


async def test_etags_guard_every_write(client: Client) -> None:
    project = await client.project()
    task = await client.task(project.id)
    changed = await client("TaskService/UpdateTask", task=message("Task", id=task.id, title="b"))

    for call in (
        client(
            "TaskService/UpdateTask", task=message("Task", id=task.id, etag=task.etag, title="c")
        ),
        client("TaskService/DeleteTask", id=task.id, etag=task.etag),
    ):
        assert (await fails(call)).code == grpc.StatusCode.ABORTED
    deleted = await client("TaskService/DeleteTask", id=task.id, etag=changed.etag)
    stale = client("TaskService/UndeleteTask", id=task.id, etag=changed.etag)
    assert (await fails(stale)).code == grpc.StatusCode.ABORTED
    restored = await client("TaskService/UndeleteTask", id=task.id, etag=deleted.etag)
    assert restored.title == "b"


async def test_a_get_after_an_update_sees_the_update(tasks_server: Running, client: Client) -> None:
    cache = tasks_server.app.cache
    assert tasks_server.app.settings.cache_entities
    assert cache is not None
    project = await client.project()
    task = await client.task(project.id)
    first = await client("TaskService/GetTask", id=task.id)
    before = cache.stats.hits

    again = await client("TaskService/GetTask", id=task.id)

    assert again == first
    assert cache.stats.hits == before + 1
    updated = await client("TaskService/UpdateTask", task=message("Task", id=task.id, title="new"))
    after = await client("TaskService/GetTask", id=task.id)
    assert (after.etag, after.title) == (updated.etag, "new")
    deleted = await client("TaskService/DeleteTask", id=task.id)
    assert (await client("TaskService/GetTask", id=task.id)).etag == deleted.etag

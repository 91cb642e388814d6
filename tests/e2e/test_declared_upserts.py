"""`allow_missing` (AIP-134) on schema-declared resources (tests/schemas/tasks), end to
end on SQLite and PostgreSQL: an Update that creates the row it does not find, with
the id the client gave, as a Create would; racing upserts of one id; another tenant
holding the same id; soft-deleted and purged rows; the read-through cache."""

from __future__ import annotations

import asyncio
import uuid
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
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
TASK_STATE_OPEN = 1


@pytest.fixture
def client(tasks_server: Running) -> Client:
    return Client(tasks_server.channel)


def upsert_request(task_id: str, paths: tuple[str, ...] = (), **fields: Any) -> Any:
    payload = fields.pop("payload", None)
    task = message("Task", id=task_id, **fields)
    if payload is not None:
        task.payload.update(payload)
    return message(
        "UpdateTaskRequest",
        task=task,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        allow_missing=True,
    )


async def upsert(c: Client, task_id: str, paths: tuple[str, ...] = (), **fields: Any) -> Any:
    return await c("TaskService/UpdateTask", upsert_request(task_id, paths, **fields))


async def test_an_upsert_creates_the_missing_row_then_updates_it(client: Client) -> None:
    project = await client.project()
    key = str(uuid.uuid4())
    # The mask is ignored for the create: every field given is written, defaults apply.
    created = await upsert(
        client,
        key,
        ("title",),
        project_id=project.id,
        title="first",
        priority=4,
        tags=["a"],
        payload={"theme": "dark"},
    )
    assert (created.id, created.etag, created.title, created.priority) == (key, "1", "first", 4)
    assert (list(created.tags), created.state) == (["a"], TASK_STATE_OPEN)
    assert json_format.MessageToDict(created.payload) == {"theme": "dark"}
    assert created.HasField("create_time")
    assert await client("TaskService/GetTask", id=key) == created

    # Now it exists: the mask decides, and priority (not in it) stays.
    updated = await upsert(
        client, key, ("title",), project_id=project.id, title="second", priority=9
    )
    assert (updated.etag, updated.title, updated.priority) == ("2", "second", 4)
    assert updated.create_time == created.create_time
    assert await client("TaskService/GetTask", id=key) == updated
    listed = await client("TaskService/ListTasks", filter=f'project_id = "{project.id}"')
    assert [t.id for t in listed.tasks] == [key]


async def test_an_upsert_create_is_judged_as_a_create(client: Client) -> None:
    project = await client.project()
    key = str(uuid.uuid4())

    missing = await fails(upsert(client, key, ("title",), title="no project"))
    assert missing.code == INVALID
    assert list(missing.violations) == ["task.project_id"]
    # priority is outside the mask, but a create writes it: its rule applies.
    bad = await fails(
        upsert(client, key, ("title",), project_id=project.id, title="t", priority=12)
    )
    assert bad.code == INVALID
    assert list(bad.violations) == ["task.priority"]
    # The project it names must exist in this tenant: NOT_FOUND names the project.
    nowhere = str(uuid.uuid4())
    orphan = await fails(upsert(client, key, project_id=nowhere, title="t"))
    assert orphan.code == NOT_FOUND
    assert (orphan.metadata["resource_type"], orphan.metadata["id"]) == ("project", nowhere)
    malformed = await fails(upsert(client, "not-a-uuid", project_id=project.id, title="t"))
    assert list(malformed.violations) == ["task.id"]
    assert (await fails(client("TaskService/GetTask", id=key))).code == NOT_FOUND

    # Without allow_missing an update of a missing row stays NOT_FOUND; with an etag too,
    # since no version of a missing row can match.
    plain = upsert_request(key, project_id=project.id, title="t")
    plain.allow_missing = False
    assert (await fails(client("TaskService/UpdateTask", plain))).code == NOT_FOUND
    pinned = upsert_request(key, project_id=project.id, title="t", etag="1")
    assert (await fails(client("TaskService/UpdateTask", pinned))).code == NOT_FOUND
    assert (await fails(client("TaskService/GetTask", id=key))).code == NOT_FOUND


async def test_an_upsert_never_touches_nor_shows_another_tenants_row(client: Client) -> None:
    """Ids are per tenant: another tenant's row with the id is as good as missing."""
    theirs = await client.task((await client.project()).id, title="theirs", priority=2)
    other = client.as_tenant(f"other-{client.tenant}")
    project = await other.project()

    pinned = upsert_request(theirs.id, project_id=project.id, title="mine", etag=theirs.etag)
    assert (await fails(other("TaskService/UpdateTask", pinned))).code == NOT_FOUND
    mine = await upsert(other, theirs.id, ("title",), project_id=project.id, title="mine")
    assert (mine.id, mine.etag, mine.title, mine.priority) == (theirs.id, "1", "mine", 0)
    assert mine.project_id == project.id
    again = await upsert(other, theirs.id, ("priority",), project_id=project.id, priority=5)
    assert (again.etag, again.title, again.priority) == ("2", "mine", 5)

    assert await client("TaskService/GetTask", id=theirs.id) == theirs
    assert await other("TaskService/GetTask", id=theirs.id) == again
    assert [t.title for t in (await client("TaskService/ListTasks")).tasks] == ["theirs"]
    assert [t.title for t in (await other("TaskService/ListTasks")).tasks] == ["mine"]


async def test_an_upsert_naming_a_missing_row_it_refers_to_is_not_found(client: Client) -> None:
    """The NOT_FOUND of a referred row is not taken for the row's own: nothing is created."""
    task = await client.task((await client.project()).id)
    made = await client(
        "CommentService/CreateComment", comment=message("Comment", task_id=task.id, body="hi")
    )
    nowhere = str(uuid.uuid4())
    # The comment exists (and the request lacks what a create needs), or it does not.
    for comment in (
        message("Comment", id=made.id, reply_to=nowhere),
        message("Comment", id=str(uuid.uuid4()), task_id=task.id, body="b", reply_to=nowhere),
    ):
        request = message(
            "UpdateCommentRequest",
            comment=comment,
            update_mask=field_mask_pb2.FieldMask(paths=["reply_to"]),
            allow_missing=True,
        )
        error = await fails(client("CommentService/UpdateComment", request))
        assert (error.code, error.metadata["id"]) == (NOT_FOUND, nowhere)
    assert await client("CommentService/GetComment", id=made.id) == made
    listed = await client("CommentService/ListComments", filter=f'task_id = "{task.id}"')
    assert [c.id for c in listed.comments] == [made.id]


async def test_soft_deleted_and_purged_rows(client: Client) -> None:
    project = await client.project()
    task = await client.task(project.id, title="deleted")
    await client("TaskService/DeleteTask", id=task.id)
    # The id is taken by a soft-deleted row: refused as an update of it is.
    error = await fails(upsert(client, task.id, project_id=project.id, title="back"))
    assert (error.code, error.reason) == (FAILED_PRECONDITION, "RESOURCE_DELETED")
    shown = await client("TaskService/GetTask", id=task.id)
    assert (shown.title, shown.HasField("delete_time")) == ("deleted", True)

    # Purged, the id is free: the upsert creates a new row, which a Get (whose cache
    # entry the purge left as a tombstone) answers with.
    cached = await client.task(project.id, title="cached")
    assert (await client("TaskService/GetTask", id=cached.id)) == cached
    await client("TaskService/DeleteTask", id=cached.id, force=True)
    reborn = await upsert(client, cached.id, project_id=project.id, title="reborn")
    assert (reborn.etag, reborn.title) == ("1", "reborn")
    assert await client("TaskService/GetTask", id=cached.id) == reborn


async def test_batch_update_items_may_create(client: Client) -> None:
    project = await client.project()
    existing = await client.task(project.id, title="old")
    key = str(uuid.uuid4())
    done = await client(
        "TaskService/BatchUpdateTasks",
        requests=[
            upsert_request(existing.id, ("title",), title="renamed"),
            upsert_request(key, ("title",), project_id=project.id, title="new", priority=1),
        ],
    )
    assert [(t.id, t.etag, t.title) for t in done.tasks] == [
        (existing.id, "2", "renamed"),
        (key, "1", "new"),
    ]
    # One bad item writes nothing of the batch.
    other = str(uuid.uuid4())
    error = await fails(
        client(
            "TaskService/BatchUpdateTasks",
            requests=[
                upsert_request(existing.id, ("title",), title="again"),
                upsert_request(other, ("title",), title="no project"),
            ],
        )
    )
    assert list(error.violations) == ["requests[1].task.project_id"]
    assert (await client("TaskService/GetTask", id=existing.id)).title == "renamed"


async def test_racing_upserts_of_one_id_create_it_once(client: Client) -> None:
    project = await client.project()
    key = str(uuid.uuid4())
    count = 8
    done = await asyncio.gather(
        *(
            upsert(client, key, ("priority",), project_id=project.id, title="t", priority=n)
            for n in range(count)
        )
    )
    assert sorted(int(t.etag) for t in done) == list(range(1, count + 1))
    listed = await client("TaskService/ListTasks", filter=f'project_id = "{project.id}"')
    assert [(t.id, t.etag) for t in listed.tasks] == [(key, str(count))]


async def test_an_upsert_of_an_id_another_tenant_is_creating_makes_its_own_row(
    client: Client, tasks_server: Running, backend: str
) -> None:
    """Another tenant's uncommitted row with the id holds no key of this tenant's: on
    PostgreSQL the upsert does not wait for it, and on both it creates its own row."""
    key = str(uuid.uuid4())
    other = client.as_tenant(f"other-{client.tenant}")
    their_project, my_project = await client.project(), await other.project()
    theirs = await begin(client)
    made = await upsert(theirs, key, project_id=their_project.id, title="theirs")
    mine = asyncio.ensure_future(upsert(other, key, project_id=my_project.id, title="mine"))
    if backend == "postgresql":
        await mine
    else:
        await until_waiting(tasks_server.app.settings.database_url)
    await commit(theirs)
    created = await mine
    assert (created.id, created.etag, created.title) == (key, "1", "mine")
    assert await client("TaskService/GetTask", id=key) == made
    assert await other("TaskService/GetTask", id=key) == created


async def test_an_upsert_racing_a_create_in_a_transaction_updates_what_it_made(
    client: Client, tasks_server: Running
) -> None:
    """The transaction creates the row and holds it uncommitted; an upsert of the same id
    outside finds no row, waits on the key, and once the transaction commits, updates."""
    project = await client.project()
    key = str(uuid.uuid4())
    inside = await begin(client)
    made = await upsert(inside, key, project_id=project.id, title="inside")
    assert made.etag == "1"
    outside = asyncio.ensure_future(
        upsert(client, key, ("title",), project_id=project.id, title="outside")
    )
    await until_waiting(tasks_server.app.settings.database_url)
    assert not outside.done()
    await commit(inside)
    done = await outside
    assert (done.id, done.etag, done.title) == (key, "2", "outside")
    assert await client("TaskService/GetTask", id=key) == done

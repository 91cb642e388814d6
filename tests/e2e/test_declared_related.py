"""Related resources (`expand`) of schema-declared resources end to end, on SQLite and
PostgreSQL: a project with its tasks, a task with its project and its latest comments,
on Get, List and BatchGet; the per-parent and per-call caps, bad names, one statement per
expanded field, and other tenants' rows."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from repogate.v1 import transaction_pb2 as tx_pb
from repogate.v1 import transaction_pb2_grpc
from server.tracing import DB_STATEMENT
from tests.conftest import Running
from tests.declared import TASKS, Client, ids, message
from tests.e2e.support import StartRepogate, eventually, fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PROJECT = "acme.tasks.v1.Project"


@pytest.fixture
def client(tasks_server: Running) -> Client:
    return Client(tasks_server.channel)


def create_task(project_id: str, title: str) -> Any:
    return message("CreateTaskRequest", task=message("Task", project_id=project_id, title=title))


async def tasks(c: Client, project_id: str, count: int) -> list[Any]:
    if not count:
        return []
    requests = [create_task(project_id, f"task {n:03}") for n in range(count)]
    return list((await c("TaskService/BatchCreateTasks", requests=requests)).tasks)


async def comments(c: Client, task_id: str, count: int) -> list[Any]:
    requests = [
        message("CreateCommentRequest", comment=message("Comment", task_id=task_id, body=f"c{n}"))
        for n in range(count)
    ]
    return list((await c("CommentService/BatchCreateComments", requests=requests)).comments)


async def listed_tasks(c: Client, project_id: str) -> list[str]:
    """The project's live tasks, in Task's default order, as ListTasks gives them."""
    walked = c.walk("TaskService/ListTasks", "tasks", filter=f'project_id = "{project_id}"')
    return [task.id async for task in walked]


async def test_a_project_with_its_live_tasks_in_one_get(client: Client) -> None:
    project, other = await client.project(), await client.project()
    made = await tasks(client, project.id, 3)
    await tasks(client, other.id, 2)
    await client("TaskService/DeleteTask", id=made[1].id)

    got = await client("ProjectService/GetProject", id=project.id, expand=["tasks"])

    assert ids(got.tasks) == await listed_tasks(client, project.id)
    assert sorted(ids(got.tasks)) == sorted([made[0].id, made[2].id])
    assert not got.more_tasks
    for task in got.tasks:
        assert task == await client("TaskService/GetTask", id=task.id)
    plain = await client("ProjectService/GetProject", id=project.id)
    assert not plain.tasks
    got.ClearField("tasks")
    assert got == plain


async def test_a_task_with_its_project_and_latest_comments(client: Client) -> None:
    project = await client.project()
    busy, quiet = await tasks(client, project.id, 2)
    made = await comments(client, busy.id, 5)
    await client("CommentService/DeleteComment", id=made[4].id)
    await comments(client, quiet.id, 2)
    both = ["project", "comments"]

    got = await client("TaskService/GetTask", id=busy.id, expand=both)
    calm = await client("TaskService/GetTask", id=quiet.id, expand=both)

    assert got.project == await client("ProjectService/GetProject", id=project.id)
    # Declared: the latest 3 live comments (number desc), and a flag when there are more.
    assert [c.number for c in got.comments] == [4, 3, 2]
    assert got.more_comments
    assert [c.number for c in calm.comments] == [2, 1]
    assert not calm.more_comments
    only_project = await client("TaskService/GetTask", id=busy.id, expand=["project"])
    assert only_project.HasField("project")
    assert not only_project.comments
    # Named twice, filled once.
    twice = await client("TaskService/GetTask", id=quiet.id, expand=["comments", "comments"])
    assert [c.number for c in twice.comments] == [2, 1]


async def test_a_soft_deleted_parent_is_not_shown(client: Client) -> None:
    project = await client.project()
    (task,) = await tasks(client, project.id, 1)
    live = await client("TaskService/GetTask", id=task.id, expand=["project"])
    await client("ProjectService/DeleteProject", id=project.id)

    got = await client("TaskService/GetTask", id=task.id, expand=["project"])

    assert live.project.id == project.id
    assert got.project_id == project.id
    assert not got.HasField("project")


async def test_list_and_batch_get_expand_every_row(client: Client) -> None:
    c = client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    projects = [await c.project(f"p{n}") for n in range(4)]
    made = {p.id: ids(await tasks(c, p.id, n)) for n, p in enumerate(projects)}

    walked = [
        p
        async for p in c.walk(
            "ProjectService/ListProjects", "projects", page_size=3, expand=["tasks"]
        )
    ]
    batch = await c("ProjectService/BatchGetProjects", ids=ids(projects[::-1]), expand=["tasks"])
    listed = await c("TaskService/ListTasks", expand=["project"], page_size=100)

    assert ids(walked) == ids(projects)  # by name, the declared default order
    for got in [*walked, *batch.projects]:
        assert ids(got.tasks) == await listed_tasks(c, got.id)
        assert sorted(ids(got.tasks)) == sorted(made[got.id])
    assert ids(batch.projects) == ids(projects[::-1])
    names = {p.id: p.name for p in projects}
    assert len(listed.tasks) == 6
    assert all(task.project.name == names[task.project_id] for task in listed.tasks)


async def test_at_most_the_declared_limit_of_children_per_parent(client: Client) -> None:
    project = await client.project()
    await tasks(client, project.id, 101)

    got = await client("ProjectService/GetProject", id=project.id, expand=["tasks"])
    listed = await client("ProjectService/ListProjects", expand=["tasks"])

    first = (await listed_tasks(client, project.id))[:100]
    assert ids(got.tasks) == first
    assert got.more_tasks
    (shown,) = [p for p in listed.projects if p.id == project.id]
    assert ids(shown.tasks) == first
    assert shown.more_tasks


async def test_an_expanded_call_reads_at_most_10000_children_per_field(client: Client) -> None:
    c = client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    requests = [
        message("CreateProjectRequest", project=message("Project", name=f"p{n:03}"))
        for n in range(101)
    ]
    projects = (await c("ProjectService/BatchCreateProjects", requests=requests)).projects

    expanded = await c("ProjectService/ListProjects", page_size=500, expand=["tasks"])
    plain = await c("ProjectService/ListProjects", page_size=500)
    rest = await c(
        "ProjectService/ListProjects",
        page_size=500,
        expand=["tasks"],
        page_token=expanded.next_page_token,
    )
    error = await fails(c("ProjectService/BatchGetProjects", ids=ids(projects), expand=["tasks"]))

    # 100 tasks each at most: 100 projects a page; page_size is a maximum (AIP-158).
    assert len(expanded.projects) == 100
    assert ids(expanded.projects) + ids(rest.projects) == ids(plain.projects)
    assert len(plain.projects) == 101
    assert not rest.next_page_token
    assert (error.code, error.reason, list(error.violations)) == (
        INVALID,
        "INVALID_EXPAND",
        ["ids"],
    )
    batch = await c("ProjectService/BatchGetProjects", ids=ids(projects)[:100], expand=["tasks"])
    assert len(batch.projects) == 100


async def test_an_unknown_expand_is_invalid_argument_naming_expand(client: Client) -> None:
    project = await client.project()
    (task,) = await tasks(client, project.id, 1)
    calls = [
        client("ProjectService/GetProject", id=project.id, expand=["nope"]),
        client("ProjectService/ListProjects", expand=["tasks", "more_tasks"]),
        client("TaskService/BatchGetTasks", ids=[task.id], expand=["tasks"]),
        client("TaskService/ListTasks", expand=["title"]),
        client("TaskService/GetTask", id=task.id, expand=["Project"]),
    ]
    for call in calls:
        error = await fails(call)
        assert (error.code, error.reason, list(error.violations)) == (
            INVALID,
            "INVALID_EXPAND",
            ["expand"],
        )
    error = await fails(client("TaskService/GetTask", id=task.id, expand=["x" * 10_000]))
    assert "related fields: comments, project" in error.violations["expand"]
    assert len(error.message) < 300


async def test_other_tenants_rows_never_show(client: Client, tasks_server: Running) -> None:
    """Another tenant's project made to hold the very id of ours: its tasks refer to that
    id too, and neither tenant sees the other's rows through expand."""
    ours, theirs = client, client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    project = await ours.project("ours")
    (mine,) = await tasks(ours, project.id, 1)
    await comments(ours, mine.id, 1)
    other = await theirs.project("theirs")
    await _move(tasks_server, theirs.tenant, other.id, project.id)
    (foreign,) = await tasks(theirs, project.id, 1)
    await comments(theirs, foreign.id, 2)

    our_project = await ours("ProjectService/GetProject", id=project.id, expand=["tasks"])
    their_project = await theirs("ProjectService/GetProject", id=project.id, expand=["tasks"])
    our_tasks = await ours("TaskService/ListTasks", expand=["project", "comments"])
    their_task = await theirs("TaskService/GetTask", id=foreign.id, expand=["project"])
    listed = await ours("ProjectService/ListProjects", expand=["tasks"])

    assert ids(our_project.tasks) == [mine.id]
    assert ids(their_project.tasks) == [foreign.id]
    assert ids(our_tasks.tasks) == [mine.id]
    assert our_tasks.tasks[0].project.name == "ours"
    assert [c.body for c in our_tasks.tasks[0].comments] == ["c0"]
    assert their_task.project.name == "theirs"
    assert [ids(p.tasks) for p in listed.projects] == [[mine.id]]
    gone = await fails(ours("TaskService/GetTask", id=foreign.id, expand=["project"]))
    assert gone.code == grpc.StatusCode.NOT_FOUND


async def _move(server: Running, tenant: str, id_: str, to: str) -> None:
    """Gives `tenant`'s project `id_` the id `to`, behind the server's back."""
    declared = server.app.declared
    assert declared is not None
    table = declared.tables[PROJECT]
    engine = create_async_engine(server.app.settings.database_url)
    try:
        async with engine.begin() as conn:
            moved = await conn.execute(
                update(table)
                .where(table.c.tenant_id == tenant, table.c.id == uuid.UUID(id_))
                .values(id=uuid.UUID(to))
            )
            assert moved.rowcount == 1
    finally:
        await engine.dispose()


async def test_one_statement_per_expanded_field_whatever_the_page(
    start_repogate: StartRepogate, fresh_url: str, tenant: str
) -> None:
    spans = InMemorySpanExporter()
    app = await start_repogate(database_url=fresh_url, schema_path=str(TASKS), span_exporter=spans)
    c = Client(app.channel, tenant)
    projects = [await c.project() for _ in range(5)]
    for project in projects:
        (task,) = await tasks(c, project.id, 1)
        await comments(c, task.id, 2)
    spans.clear()

    page = await c("ProjectService/ListProjects", expand=["tasks"])
    listed = await c("TaskService/ListTasks", expand=["project", "comments"])

    assert [len(p.tasks) for p in page.projects] == [1] * 5
    assert [len(t.comments) for t in listed.tasks] == [2] * 5
    assert all(t.HasField("project") for t in listed.tasks)

    def statements() -> list[str]:
        found = [s.attributes or {} for s in spans.get_finished_spans()]
        return [str(a[DB_STATEMENT]) for a in found if DB_STATEMENT in a]

    await eventually(lambda: len(statements()) >= 5, "the calls' statements")
    reads = [s for s in statements() if s.startswith("SELECT")]
    # ListProjects: its page, its tasks; ListTasks: its page, their projects, their comments.
    assert sum(" FROM tasks" in s and " FROM projects" not in s for s in reads) == 2
    assert sum(" FROM comments" in s for s in reads) == 1
    assert sum(" FROM projects" in s for s in reads) == 2


async def test_expanded_gets_neither_serve_stale_children_nor_fill_the_cache(
    client: Client,
) -> None:
    project = await client.project()
    (first,) = await tasks(client, project.id, 1)
    cached = await client("ProjectService/GetProject", id=project.id)  # fills the cache
    before = await client("ProjectService/GetProject", id=project.id, expand=["tasks"])

    # A new child leaves its parent's row (and cache entry) as it was.
    (second,) = await tasks(client, project.id, 1)
    after = await client("ProjectService/GetProject", id=project.id, expand=["tasks"])
    plain = await client("ProjectService/GetProject", id=project.id)

    assert ids(before.tasks) == [first.id]
    assert sorted(ids(after.tasks)) == sorted([first.id, second.id])
    assert plain == cached
    assert not plain.tasks
    # On a cold cache: an expanded Get first, then a plain one, which an expanded answer
    # left in the cache would show with its children.
    cold = await client.project()
    await tasks(client, cold.id, 2)
    expanded = await client("ProjectService/GetProject", id=cold.id, expand=["tasks"])
    plain = await client("ProjectService/GetProject", id=cold.id)
    assert len(expanded.tasks) == 2
    assert not plain.tasks
    expanded.ClearField("tasks")
    assert plain == expanded


async def test_writes_ignore_related_fields_and_masks_refuse_them(client: Client) -> None:
    # A task no create would take (no title) and a flag: output only, neither is stored.
    shown = [message("Task", title="")]
    project = await client(
        "ProjectService/CreateProject",
        project=message("Project", name=f"p-{uuid.uuid4().hex[:8]}", tasks=shown, more_tasks=True),
    )
    error = await fails(
        client(
            "ProjectService/UpdateProject",
            project=message("Project", id=project.id, tasks=shown),
            update_mask={"paths": ["tasks"]},
        )
    )

    got = await client("ProjectService/GetProject", id=project.id, expand=["tasks"])
    assert not project.tasks
    assert not got.tasks
    assert not got.more_tasks
    assert (error.code, list(error.violations)) == (INVALID, ["update_mask"])


async def test_an_expanded_get_in_a_transaction_sees_its_own_writes(client: Client) -> None:
    stub = transaction_pb2_grpc.TransactionServiceStub(client.channel)
    begun = await stub.BeginTransaction(tx_pb.BeginTransactionRequest(), metadata=md(client.tenant))
    inside = client.inside(begun.id)
    project = await inside.project()
    (task,) = await tasks(inside, project.id, 1)

    seen = await inside("ProjectService/GetProject", id=project.id, expand=["tasks"])
    await stub.Rollback(tx_pb.RollbackRequest(transaction_id=begun.id), metadata=md(client.tenant))

    assert ids(seen.tasks) == [task.id]
    gone = await fails(client("ProjectService/GetProject", id=project.id, expand=["tasks"]))
    assert gone.code == grpc.StatusCode.NOT_FOUND


async def test_a_read_mask_applies_to_the_expanded_answer(client: Client) -> None:
    """The mask says which fields come back, related ones included: a related field the
    mask leaves out is unset however it was expanded."""
    c = client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    project = await c.project("masked")
    made = ids(await tasks(c, project.id, 2))
    mask = field_mask_pb2.FieldMask(paths=["name", "tasks"])
    bare = field_mask_pb2.FieldMask(paths=["name"])

    got = await c("ProjectService/GetProject", id=project.id, expand=["tasks"], read_mask=mask)
    batch = await c(
        "ProjectService/BatchGetProjects", ids=[project.id], expand=["tasks"], read_mask=mask
    )
    page = await c("ProjectService/ListProjects", page_size=5, expand=["tasks"], read_mask=mask)
    left_out = await c("ProjectService/GetProject", id=project.id, expand=["tasks"], read_mask=bare)

    for answer in (got, batch.projects[0], page.projects[0]):
        assert answer.name == "masked"
        assert sorted(ids(answer.tasks)) == sorted(made)
        assert (answer.id, answer.etag, answer.description) == ("", "", "")
    assert left_out.name == "masked"
    assert not left_out.tasks

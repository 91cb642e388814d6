"""AdminService.RecommendIndexes through a real server on SQLite and PostgreSQL: the shapes
of the queries clients ran, EXPLAINed, and an index suggested for a filter no index serves,
which the database then uses once created by hand (Repogate never creates it)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from sqlalchemy.engine import make_url

from repogate.v1 import admin_pb2 as pb
from repogate.v1 import admin_pb2_grpc, user_pb2
from tests.declared import TASKS, Client, message
from tests.e2e.support import Dedicated, StartRepogate, fails
from tests.pgbouncer import fresh_database
from tests.rpc import md

pytestmark = pytest.mark.e2e

NEEDS_INDEX = pb.SHAPE_VERDICT_NEEDS_INDEX
SERVED = pb.SHAPE_VERDICT_SERVED
ROWS = 2000
# One of many assignees: a filter on it matches a small share of the tenant's rows.
ASSIGNEES = 40
# What the planner is asked about: the first page of a List as Repogate runs it.
LIST_SQL = (
    "SELECT * FROM tasks WHERE tenant_id = {0} AND assignee = {1} AND delete_time IS NULL "
    "ORDER BY create_time, id LIMIT 51"
)


def admin(app: Dedicated) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(app.channel)


async def recommend(app: Dedicated, **request: Any) -> pb.IndexRecommendations:
    return await admin(app).RecommendIndexes(pb.RecommendIndexesRequest(**request))


async def fill(client: Client) -> None:
    """ROWS tasks of one project, their assignees and priorities spread."""
    project = await client.project()
    for start in range(0, ROWS, 500):
        requests = [
            message(
                "CreateTaskRequest",
                task=message(
                    "Task",
                    project_id=project.id,
                    title=f"t{i}",
                    assignee=f"member-{i % ASSIGNEES}",
                    priority=i % 11,
                ),
            )
            for i in range(start, start + 500)
        ]
        await client("TaskService/BatchCreateTasks", requests=requests)


async def plan_of(url: str, tenant: str) -> str:
    """The plan the database itself gives for the List the shape stands for."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(str(parsed.database)) as conn:
            sql = LIST_SQL.format("?", "?")
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", (tenant, "member-7")).fetchall()
        return "\n".join(str(row[-1]) for row in rows)
    conn = await asyncpg.connect(parsed.set(drivername="postgresql").render_as_string(False))
    try:
        await conn.execute("ANALYZE tasks")
        sql = LIST_SQL.format("$1", "$2")
        rows = await conn.fetch(f"EXPLAIN {sql}", tenant, "member-7")
        return "\n".join(row[0] for row in rows)
    finally:
        await conn.close()


async def run(url: str, statement: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(str(parsed.database)) as conn:
            conn.execute(statement)
        return
    conn = await asyncpg.connect(parsed.set(drivername="postgresql").render_as_string(False))
    try:
        await conn.execute(statement)  # outside a transaction, as CONCURRENTLY needs
    finally:
        await conn.close()


async def test_an_unindexed_filter_gets_an_index_the_plan_then_uses(
    fresh_url: str, start_repogate: StartRepogate
) -> None:
    app = await start_repogate(database_url=fresh_url, schema_path=str(TASKS), purge_interval=0)
    client = Client(app.channel)
    await fill(client)
    secret = f"zq-{uuid.uuid4().hex[:10]}"
    for _ in range(3):
        await client("TaskService/ListTasks", filter=f'assignee = "{secret}"')
    for _ in range(2):
        await client("TaskService/CountTasks", filter=f'assignee = "{secret}"')
    await client("TaskService/ListTasks", filter='state = "TASK_STATE_OPEN"', order_by="title")

    advice = await recommend(app)

    assert secret not in str(advice)
    assert client.tenant not in str(advice)
    shapes = {(s.method, s.filter, s.order_by): s for s in advice.shapes}
    listed = shapes["List", "assignee = ?", "create_time, id"]
    counted = shapes["Count", "assignee = ?", ""]
    assert (listed.calls, counted.calls) == (3, 2)
    assert (listed.resource, listed.table) == ("acme.tasks.v1.Task", "tasks")
    assert listed.verdict == counted.verdict == NEEDS_INDEX
    assert listed.access
    # One index serves both: the Count's columns begin the List's.
    (wanted,) = [r for r in advice.recommendations if "assignee" in r.columns]
    assert list(wanted.columns) == ["tenant_id", "assignee", "create_time", "id"]
    assert wanted.name == "ix_tasks_tenant_assignee_create_time_id"
    assert [(s.method, s.calls) for s in wanted.shapes] == [("List", 3), ("Count", 2)]
    assert listed.index == counted.index == wanted.name
    assert wanted.schema_option == 'indexes: { fields: ["assignee", "create_time", "id"] }'
    assert wanted.create_index.startswith("CREATE INDEX")
    assert ("CONCURRENTLY" in wanted.create_index) == (advice.dialect == "postgresql")
    assert wanted.name not in await plan_of(fresh_url, client.tenant)

    await run(fresh_url, wanted.create_index)

    assert wanted.name in await plan_of(fresh_url, client.tenant)
    after = await recommend(app)
    shapes = {(s.method, s.filter, s.order_by): s for s in after.shapes}
    listed = shapes["List", "assignee = ?", "create_time, id"]
    assert (listed.verdict, listed.index) == (SERVED, wanted.name)
    assert wanted.name in listed.access
    assert all("assignee" not in r.columns for r in after.recommendations)


def schema_copy(directory: Path, resource_option: str = "") -> tuple[str, str]:
    """tests/schemas/tasks under a package of its own (a process holds one version of a
    .proto file), with `resource_option` added to Task's resource option: its directory
    and package."""
    package = f"e{uuid.uuid4().hex[:12]}"
    target = directory / package / "acme" / package / "v1"
    target.mkdir(parents=True)
    opening = "  option (repogate.options.v1.resource) = {\n"
    for source in (TASKS / "acme" / "tasks" / "v1").glob("*.proto"):
        text = source.read_text().replace("package acme.tasks.v1;", f"package acme.{package}.v1;")
        text = text.replace('import "acme/tasks/v1/', f'import "acme/{package}/v1/')
        if source.name == "task.proto":
            assert opening in text
            text = text.replace(opening, f"{opening}    {resource_option}\n")
        (target / source.name).write_text(text)
    return str(directory / package), f"acme.{package}.v1"


async def list_tasks(app: Dedicated, package: str, filter: str) -> None:
    """ListTasks of the schema copy in `package`, as a client without generated code."""
    method = f"/{package}.TaskService/ListTasks"
    service = descriptor_pool.Default().FindServiceByName(f"{package}.TaskService")
    descriptor = service.methods_by_name["ListTasks"]
    request = GetMessageClass(descriptor.input_type)(filter=filter)
    call = app.channel.unary_unary(method, request_serializer=type(request).SerializeToString)
    await call(request, metadata=md(f"t-{uuid.uuid4().hex[:16]}"), timeout=20)


async def index_names(url: str) -> set[str]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(str(parsed.database)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'tasks'")
            return {row[0] for row in rows}
    conn = await asyncpg.connect(parsed.set(drivername="postgresql").render_as_string(False))
    try:
        rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'tasks'")
        return {row[0] for row in rows}
    finally:
        await conn.close()


async def test_the_schema_option_given_adopts_the_index_created_by_hand(
    fresh_url: str, start_repogate: StartRepogate, tmp_path: Path
) -> None:
    schema, package = schema_copy(tmp_path)
    first = await start_repogate(database_url=fresh_url, schema_path=schema, purge_interval=0)
    await list_tasks(first, package, 'assignee = "ann" AND priority > 3')
    (wanted,) = (await recommend(first)).recommendations
    await run(fresh_url, wanted.create_index)
    created = await index_names(fresh_url)
    await first.channel.close()
    await first.app.stop(0)

    # The option, pasted into the schema: the migration finds the index by its name.
    schema, _ = schema_copy(tmp_path, wanted.schema_option)
    await start_repogate(database_url=fresh_url, schema_path=schema, purge_interval=0)
    assert wanted.name in created
    assert await index_names(fresh_url) == created  # none made beside it
    # Declared, it is the schema's: a schema without it drops it.
    schema, _ = schema_copy(tmp_path)
    await start_repogate(database_url=fresh_url, schema_path=schema, purge_interval=0)
    assert wanted.name not in await index_names(fresh_url)


async def test_values_never_reach_shapes_only_placeholders(
    fresh_url: str, start_repogate: StartRepogate
) -> None:
    app = await start_repogate(database_url=fresh_url, schema_path=str(TASKS), purge_interval=0)
    client = Client(app.channel)
    project = await client.project()
    secret = f"zq-{uuid.uuid4().hex[:10]}"
    filters = [
        f'title = "{secret}*" AND priority > 7',
        f'NOT (assignee IN ("{secret}", "b") OR priority <= 2) AND due_time = null',
        f'project_id = "{project.id}" tags:"{secret}"',
        f'payload.workspace = "{secret}"',
    ]
    for text in filters:
        await client("TaskService/ListTasks", filter=text, order_by="priority desc")
    # Another tenant's query of the same shape: counted with the first's, never named.
    other = client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    other_secret = f"zq-{uuid.uuid4().hex[:10]}"
    await other(
        "TaskService/ListTasks",
        filter=f'payload.workspace = "{other_secret}"',
        order_by="priority desc",
    )

    advice = await recommend(app)

    for hidden in (secret, other_secret, project.id, client.tenant, other.tenant):
        assert hidden not in str(advice)
    assert {s.filter: s.calls for s in advice.shapes}["payload.workspace = ?"] == 2
    assert sorted(s.filter for s in advice.shapes) == [
        "NOT (assignee IN (?) OR priority <= ?) AND due_time = null",
        "payload.workspace = ?",
        "project_id = ? AND tags : ?",
        'title = "?*" AND priority > ?',
    ]
    assert {s.order_by for s in advice.shapes} == {"priority desc, id"}


async def test_a_negative_count_is_invalid(start_repogate: StartRepogate) -> None:
    app = await start_repogate(purge_interval=0)

    error = await fails(recommend(app, max_shapes=-1))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.violations) == ["max_shapes"]


async def test_an_in_memory_database_gets_advice_too(
    start_repogate: StartRepogate,
) -> None:
    app = await start_repogate(database_url="sqlite+aiosqlite:///:memory:", purge_interval=0)
    tenant = f"t-{uuid.uuid4().hex[:16]}"
    await app.users.ListUsers(
        user_pb2.ListUsersRequest(filter='display_name = "x"'), metadata=md(tenant)
    )

    advice = await recommend(app)

    (shape,) = advice.shapes
    assert (shape.table, shape.verdict) == ("users", NEEDS_INDEX)
    (wanted,) = advice.recommendations
    assert list(wanted.columns) == ["tenant_id", "display_name", "create_time", "id"]
    assert wanted.schema_option == ""  # a built-in resource


async def test_a_locked_table_bounds_the_advice_not_hangs_it(
    start_repogate: StartRepogate,
) -> None:
    """RecommendIndexes' EXPLAINs wait on a table another session locked: they give up at
    REPOGATE_DB_STATEMENT_TIMEOUT, as a call without a deadline does, with DEADLINE_EXCEEDED."""
    async with fresh_database() as url:
        app = await start_repogate(
            database_url=url, schema_path=str(TASKS), purge_interval=0, db_statement_timeout=0.5
        )
        client = Client(app.channel)
        await client("TaskService/ListTasks", filter='assignee = "x"')
        locker = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(False)
        )
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
                # The client's own deadline stops the test, were the server to wait on.
                waiting = admin(app).RecommendIndexes(pb.RecommendIndexesRequest(), timeout=10)
                error = await fails(waiting)
        finally:
            await locker.close()

    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.reason == "STATEMENT_TIMEOUT"

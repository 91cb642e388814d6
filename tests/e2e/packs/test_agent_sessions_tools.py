"""The agent-sessions pack (schemas/agent_sessions, seed 003) end to end, on SQLite and
PostgreSQL: the methods of ToolCallRepository, TaskRepository, ReportRepository,
MCPServerRepository, SessionTemplateRepository, HookExecutionRepository,
PermissionDecisionRepository, WorkingDirectoryArchiveRepository and
SessionMetricsSnapshotRepository, each answered over gRPC as the seed's method promised.
The statistics (tool calls by tool, a task's runs, decisions by decision, cost per user):
test_agent_sessions_stats.py."""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.packs.agents import PACK, PACKAGE, session, task, tool_call, unique, user
from tests.e2e.packs.support import at, call, counted, create, listed, mask, struct, transact
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


# ---------------------------------------------------------------- ToolCallRepository


async def test_get_by_tool_use_id(c: Client) -> None:
    made = await session(c)
    wanted = await tool_call(c, made.id, tool_use_id="toolu_01")
    await tool_call(c, made.id)

    assert ids(await listed(c, "ToolCall", filter='tool_use_id = "toolu_01"')) == [wanted.id]
    error = await fails(tool_call(c, made.id, tool_use_id="toolu_01"))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS


async def test_get_pending_for_permission(c: Client) -> None:
    one, two = await session(c), await session(c)
    waiting = await tool_call(c, one.id)
    await tool_call(c, one.id, permission_decision="DECISION_ALLOW")
    await tool_call(c, one.id, status="TOOL_CALL_STATUS_RUNNING")
    elsewhere = await tool_call(c, two.id)
    pending = 'status = "pending" AND permission_decision = null'

    everywhere = await listed(c, "ToolCall", filter=pending, order_by="create_time")
    in_one = await listed(c, "ToolCall", filter=f'{pending} AND session_id = "{one.id}"')

    assert ids(everywhere) == [waiting.id, elsewhere.id]
    assert ids(in_one) == [waiting.id]


async def test_update_status_with_timestamps(c: Client) -> None:
    made = await tool_call(c, (await session(c)).id)

    async def update(**fields: Any) -> Any:
        changed = c.message("ToolCall", id=made.id, **fields)
        return await c(
            "ToolCallService/UpdateToolCall", tool_call=changed, update_mask=mask(*fields)
        )

    running = await update(status="TOOL_CALL_STATUS_RUNNING", started_time=at(1_800_000_000))
    failed = await update(
        status="TOOL_CALL_STATUS_ERROR",
        error_message="permission denied",
        is_error=True,
        completed_time=at(1_800_000_009),
    )

    assert running.started_time == at(1_800_000_000)
    assert not running.HasField("completed_time")
    assert (failed.is_error, failed.error_message) == (True, "permission denied")
    assert failed.started_time == running.started_time
    assert ids(await listed(c, "ToolCall", filter='status = "error" AND is_error = true')) == [
        made.id
    ]


# ---------------------------------------------------------------- TaskRepository


async def test_get_scheduled_tasks(c: Client) -> None:
    owner = (await user(c)).id
    enabled = await task(c, owner, is_scheduled=True, schedule_enabled=True)
    paused = await task(c, owner, is_scheduled=True, schedule_cron="0 * * * *")
    await task(c, owner)
    deleted = await task(c, owner, is_scheduled=True, schedule_enabled=True)
    await c("TaskService/DeleteTask", id=deleted.id)

    only_enabled = await listed(c, "Task", filter="is_scheduled = true AND schedule_enabled = true")
    every = await listed(c, "Task", filter="is_scheduled = true")

    assert ids(only_enabled) == [enabled.id]
    assert sorted(ids(every)) == sorted([enabled.id, paused.id])


async def test_get_by_tags_is_any_of_the_tags(c: Client) -> None:
    owner, other = (await user(c)).id, (await user(c)).id
    tagged = [await task(c, owner, tags=tags) for tags in (["a", "b"], ["c"], ["b", "d"], [])]
    theirs = await task(c, other, tags=["a"])
    gone = await task(c, owner, tags=["d"])
    await c("TaskService/DeleteTask", id=gone.id)
    any_of = '(tags:"a" OR tags:"d")'

    mine = await listed(
        c, "Task", filter=f'{any_of} AND user_id = "{owner}"', order_by="create_time desc"
    )
    everyone = await listed(c, "Task", filter=any_of, order_by="create_time desc")

    assert ids(mine) == [tagged[2].id, tagged[0].id]
    assert ids(everyone) == [theirs.id, tagged[2].id, tagged[0].id]


# ---------------------------------------------------------------- ReportRepository


async def test_search_content(c: Client) -> None:
    one, two = await session(c), await session(c)
    report = {"session_id": one.id, "user_id": one.user_id}
    first = await create(c, "Report", title="a", content=struct(text="alpha"), **report)
    await create(c, "Report", title="b", content=struct(text="beta"), **report)
    latest = await create(c, "Report", title="c", content=struct(text="alpha", pages=2), **report)
    theirs = await create(
        c, "Report", title="d", content=struct(text="alpha"), session_id=two.id, user_id=two.user_id
    )
    alpha = 'content.text = "alpha"'

    page = await c(
        "ReportService/ListReports",
        filter=f'{alpha} AND user_id = "{one.user_id}"',
        order_by="create_time desc",
        page_size=50,
    )

    assert ids(page.reports) == [latest.id, first.id]
    assert sorted(ids(await listed(c, "Report", filter=alpha))) == sorted(
        [first.id, latest.id, theirs.id]
    )


# ---------------------------------------------------------------- MCPServerRepository


async def test_list_by_user_with_and_without_global_servers(c: Client) -> None:
    owner, other = (await user(c)).id, (await user(c)).id
    shared = await create(c, "McpServer", name="global", server_type="MCP_SERVER_TYPE_HTTP")
    mine = await create(c, "McpServer", name="mine", user_id=owner, config=struct(cmd="x"))
    await create(c, "McpServer", name="theirs", user_id=other)
    gone = await create(c, "McpServer", name="gone", user_id=owner)
    await c("McpServerService/DeleteMcpServer", id=gone.id)

    with_global = await listed(c, "McpServer", filter=f'user_id = "{owner}" OR user_id = null')
    own_only = await listed(c, "McpServer", filter=f'user_id = "{owner}"')

    assert sorted(ids(with_global)) == sorted([shared.id, mine.id])
    assert ids(own_only) == [mine.id]


# ---------------------------------------------------------------- SessionTemplateRepository


async def template(c: Client, user_id: str, uses: int = 0, **fields: Any) -> Any:
    made = await create(c, "SessionTemplate", user_id=user_id, name=unique("tpl"), **fields)
    if uses:
        made = await c(
            "SessionTemplateService/IncrementSessionTemplateCounters", id=made.id, usage_count=uses
        )
    return made


async def test_search_by_tags_sees_own_public_and_shared_templates_by_use(c: Client) -> None:
    me, them = (await user(c)).id, (await user(c)).id
    own = await template(c, me, 1, tags=["x"])
    public = await template(c, them, 5, tags=["x"], is_public=True)
    shared = await template(c, them, 3, tags=["y"], is_organization_shared=True)
    await template(c, them, 9, tags=["x"])  # another user's private template
    await template(c, me, 7, tags=["z"])  # no tag wanted
    text = (
        '(tags:"x" OR tags:"y") AND '
        f'(user_id = "{me}" OR is_public = true OR is_organization_shared = true)'
    )

    found = await listed(c, "SessionTemplate", filter=text, order_by="usage_count desc")

    assert ids(found) == [public.id, shared.id, own.id]
    assert [t.usage_count for t in found] == [5, 3, 1]


async def test_update_usage_stats_counts_a_use_and_stamps_it_together(c: Client) -> None:
    made = await template(c, (await user(c)).id)
    used = at(1_800_000_000)

    def use(etag: str = "") -> list[Any]:
        count = c.message("IncrementSessionTemplateCountersRequest", id=made.id, usage_count=1)
        stamped = c.message("SessionTemplate", id=made.id, etag=etag, last_used_time=used)
        stamp = c.message(
            "UpdateSessionTemplateRequest",
            session_template=stamped,
            update_mask=mask("last_used_time"),
        )
        return [
            call(c, "SessionTemplateService/IncrementSessionTemplateCounters", count),
            call(c, "SessionTemplateService/UpdateSessionTemplate", stamp),
        ]

    await transact(c, *use())
    await fails(transact(c, *use(etag=made.etag)))  # a stale etag: nothing of it stays

    now = await c("SessionTemplateService/GetSessionTemplate", id=made.id)
    assert (now.usage_count, now.last_used_time) == (1, used)


# ---------------------------------------------------------------- the other repositories


async def test_hook_executions_by_tool_use_id_in_order(c: Client) -> None:
    made = await session(c)
    hooks = [
        await create(c, "HookExecution", session_id=made.id, tool_use_id="tu1", hook_event=event)
        for event in ("PreToolUse", "PostToolUse", "Stop")
    ]
    await create(c, "HookExecution", session_id=made.id, tool_use_id="tu2", hook_event="x")

    found = await listed(c, "HookExecution", filter='tool_use_id = "tu1"', order_by="create_time")

    assert ids(found) == ids(hooks)


async def test_count_by_decision(c: Client) -> None:
    one, two = await session(c), await session(c)
    decisions = [(one, "ALLOW"), (one, "DENY"), (one, "ALLOW"), (two, "DENY")]
    for where, decision in decisions:
        await create(
            c,
            "PermissionDecision",
            session_id=where.id,
            tool_name="Bash",
            decision=f"DECISION_{decision}",
        )
    expected = Counter((where.id, decision) for where, decision in decisions)

    for where in (one, two):
        for decision in ("ALLOW", "DENY", "ASK"):
            text = f'session_id = "{where.id}" AND decision = "{decision.lower()}"'
            assert await counted(c, "PermissionDecision", text) == expected[(where.id, decision)]


async def test_get_pending_archives_oldest_first_up_to_a_limit(c: Client) -> None:
    made = await session(c)
    states = ["PENDING", "COMPLETED", "PENDING", "PENDING", "PENDING"]
    archives = [
        await create(
            c, "WorkingDirectoryArchive", session_id=made.id, status=f"ARCHIVE_STATUS_{state}"
        )
        for state in states
    ]
    pending = [a.id for a, state in zip(archives, states, strict=True) if state == "PENDING"]

    page = await c(
        "WorkingDirectoryArchiveService/ListWorkingDirectoryArchives",
        filter='status = "pending"',
        order_by="create_time",
        page_size=3,
    )

    assert ids(page.working_directory_archives) == pending[:3]


async def test_get_snapshots_in_range(c: Client) -> None:
    made, other = await session(c), await session(c)
    snapshots = [
        await create(c, "SessionMetricsSnapshot", session_id=made.id, api_input_tokens=100 * i)
        for i in range(4)
    ]
    await create(c, "SessionMetricsSnapshot", session_id=other.id)
    start, end = snapshots[1].create_time.ToJsonString(), snapshots[2].create_time.ToJsonString()
    text = f'session_id = "{made.id}" AND create_time >= "{start}" AND create_time <= "{end}"'

    found = await listed(c, "SessionMetricsSnapshot", filter=text, order_by="create_time")

    assert ids(found) == ids(snapshots[1:3])

"""The agent-sessions pack (schemas/agent_sessions, seed 003) end to end, on SQLite and
PostgreSQL: the seed's BaseRepository methods on each of its thirteen repositories, and
the SessionRepository, UserRepository and MessageRepository methods, each answered over
gRPC with the rows, counts and orders the seed's method promised. The other repositories'
methods: test_agent_sessions_tools.py; get_completed_before and the JSONB queries:
test_agent_sessions_queries.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from schema.model import snake
from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.packs.agents import PACK, PACKAGE, session, unique, user
from tests.e2e.packs.support import (
    at,
    begin,
    commit,
    counted,
    create,
    listed,
    mask,
    plural,
    rollback,
    struct,
)
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

NOT_FOUND = grpc.StatusCode.NOT_FOUND
ACTIVE_STATES = ("active", "waiting", "processing")


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


# ---------------------------------------------------------------- BaseRepository

Make = Callable[[int], dict[str, Any]]


async def _user_rows(c: Client) -> Make:
    return lambda i: {"email": f"{unique('e')}@x.org", "username": unique("n")}


async def _session_rows(c: Client) -> Make:
    owner = (await user(c)).id
    return lambda i: {"user_id": owner, "name": f"s{i}"}


async def _session_children(c: Client, **more: Any) -> Make:
    parent = (await session(c)).id
    return lambda i: {
        "session_id": parent,
        **{k: v(i) if callable(v) else v for k, v in more.items()},
    }


async def _task_rows(c: Client) -> Make:
    owner = (await user(c)).id
    return lambda i: {"user_id": owner, "name": f"t{i}", "prompt_template": "Do {x}"}


async def _execution_rows(c: Client) -> Make:
    owner = (await user(c)).id
    task = await create(c, "Task", user_id=owner, name="t", prompt_template="p")
    return lambda i: {"task_id": task.id, "trigger_type": "manual"}


async def _report_rows(c: Client) -> Make:
    parent = await session(c)
    return lambda i: {"session_id": parent.id, "user_id": parent.user_id, "title": f"r{i}"}


async def _template_rows(c: Client) -> Make:
    owner = (await user(c)).id
    return lambda i: {"user_id": owner, "name": f"tpl{i}"}


async def _mcp_rows(c: Client) -> Make:
    return lambda i: {"name": f"mcp{i}"}


BUILD: dict[str, Callable[[Client], Awaitable[Make]]] = {
    "User": _user_rows,
    "Session": _session_rows,
    "Message": lambda c: _session_children(c, message_type="user", content=struct(text="hi")),
    "ToolCall": lambda c: _session_children(
        c, tool_use_id=lambda i: unique("tu"), tool_name="Read"
    ),
    "Task": _task_rows,
    "TaskExecution": _execution_rows,
    "Report": _report_rows,
    "McpServer": _mcp_rows,
    "SessionTemplate": _template_rows,
    "HookExecution": lambda c: _session_children(c, hook_event="PreToolUse"),
    "PermissionDecision": lambda c: _session_children(
        c, tool_name="Bash", decision="DECISION_ALLOW"
    ),
    "WorkingDirectoryArchive": lambda c: _session_children(c),
    "SessionMetricsSnapshot": lambda c: _session_children(c, total_messages=lambda i: i),
}
# A field the seed's `update(id, **kwargs)` may change, and a value for it.
UPDATES: dict[str, tuple[str, Any]] = {
    "User": ("full_name", "Ann Example"),
    "Session": ("name", "renamed"),
    "Message": ("role", "assistant"),
    "ToolCall": ("tool_name", "Write"),
    "Task": ("description", "nightly"),
    "TaskExecution": ("trigger_type", "scheduled"),
    "Report": ("title", "final"),
    "McpServer": ("name", "renamed"),
    "SessionTemplate": ("description", "shared"),
    "HookExecution": ("hook_name", "audit"),
    "PermissionDecision": ("reason", "read only"),
    "WorkingDirectoryArchive": ("archive_path", "/archives/a.tar.gz"),
    "SessionMetricsSnapshot": ("api_cache_read_tokens", 1234),
}


@pytest.mark.parametrize("resource", sorted(BUILD))
async def test_base_repository_methods(c: Client, resource: str) -> None:
    """create, get_by_id, get_all(skip, limit), update, count, exists and delete."""
    make = await BUILD[resource](c)
    made = [await create(c, resource, **make(i)) for i in range(3)]
    service, rs = f"{resource}Service", plural(c, resource)

    assert await c(f"{service}/Get{resource}", id=made[1].id) == made[1]
    page = await c(f"{service}/List{rs}", page_size=1, skip=1, order_by="create_time")
    assert ids(getattr(page, snake(rs))) == [made[1].id]
    assert await counted(c, resource, "") == 3
    assert await counted(c, resource, f'id = "{made[0].id}"') == 1  # exists

    field, value = UPDATES[resource]
    changed = c.message(resource, id=made[0].id, **{field: value})
    updated = await c(
        f"{service}/Update{resource}", update_mask=mask(field), **{snake(resource): changed}
    )
    assert getattr(updated, field) == value
    assert updated.etag != made[0].etag

    await c(f"{service}/Delete{resource}", id=made[0].id, force=True)  # delete: for good
    assert (await fails(c(f"{service}/Get{resource}", id=made[0].id))).code == NOT_FOUND
    assert await counted(c, resource, f'id = "{made[0].id}"') == 0
    assert await counted(c, resource, "") == 2


@pytest.mark.parametrize("resource", sorted(BUILD))
async def test_another_tenant_sees_none_of_the_rows(c: Client, resource: str) -> None:
    made = await create(c, resource, **(await BUILD[resource](c))(0))
    other = c.as_tenant(unique("t"))
    service = f"{resource}Service"

    assert (await fails(other(f"{service}/Get{resource}", id=made.id))).code == NOT_FOUND
    assert await listed(other, resource) == []
    assert await counted(other, resource, f'id = "{made.id}"') == 0
    error = await fails(other(f"{service}/Delete{resource}", id=made.id, force=True))
    assert error.code == NOT_FOUND
    assert await c(f"{service}/Get{resource}", id=made.id) == made


# ---------------------------------------------------------------- SessionRepository


async def test_get_by_user_pages_a_users_live_sessions_newest_first(c: Client) -> None:
    owner, other = (await user(c)).id, (await user(c)).id
    mine = [await session(c, owner, name=f"s{i}") for i in range(5)]
    await session(c, other)
    await c("SessionService/DeleteSession", id=mine[2].id)  # soft-deleted: left out
    newest_first = [s.id for s in reversed(mine) if s.id != mine[2].id]

    page = await c(
        "SessionService/ListSessions",
        filter=f'user_id = "{owner}"',
        order_by="create_time desc",
        skip=1,
        page_size=2,
    )

    assert ids(page.sessions) == newest_first[1:3]


async def test_active_sessions_listed_and_counted(c: Client) -> None:
    owner = (await user(c)).id
    states = ["active", "waiting", "processing", "completed", "created", "active"]
    made = [await session(c, owner, status=f"SESSION_STATUS_{s.upper()}") for s in states]
    await session(c, status="SESSION_STATUS_ACTIVE")  # another user's
    text = f'user_id = "{owner}" AND status IN ("active", "waiting", "processing")'
    expected = {s.id for s, state in zip(made, states, strict=True) if state in ACTIVE_STATES}

    assert set(ids(await listed(c, "Session", filter=text))) == expected  # get_active_sessions
    assert await counted(c, "Session", text) == len(expected)  # count_active_sessions


async def test_get_by_status(c: Client) -> None:
    made = [
        await session(c, status=f"SESSION_STATUS_{state}")
        for state in ("COMPLETED", "FAILED", "COMPLETED", "ACTIVE")
    ]
    found = await listed(c, "Session", filter='status = "completed"', order_by="create_time desc")
    assert ids(found) == [made[2].id, made[0].id]


async def test_soft_delete_hides_a_session_until_undeleted(c: Client) -> None:
    made = await session(c)
    deleted = await c("SessionService/DeleteSession", id=made.id)
    assert deleted.HasField("delete_time")
    assert await listed(c, "Session") == []
    assert ids(await listed(c, "Session", show_deleted=True)) == [made.id]
    await c("SessionService/UndeleteSession", id=made.id)
    assert ids(await listed(c, "Session")) == [made.id]


async def test_update_metrics_sets_values_it_does_not_add(c: Client) -> None:
    made = await session(c, api_cache_read_tokens=900, total_messages=7, total_cost_usd=0.5)
    metrics = {
        "api_cache_read_tokens": 120,
        "api_cache_creation_tokens": 64,
        "total_cost_usd": 0.25,
    }

    updated = await c(
        "SessionService/UpdateSession",
        session=c.message("Session", id=made.id, **metrics),
        update_mask=mask(*metrics),
    )

    assert {name: getattr(updated, name) for name in metrics} == metrics
    assert updated.total_messages == 7  # not in the mask: untouched
    assert await counted(c, "Session", "api_cache_read_tokens = 120") == 1


async def test_mode_and_sdk_options_are_fields_of_their_own(c: Client) -> None:
    background = await session(
        c, mode="SESSION_MODE_BACKGROUND", sdk_options=struct(model="opus", max_turns=5)
    )
    await session(c, sdk_options=struct(model="haiku"))

    assert ids(await listed(c, "Session", filter='mode = "background"')) == [background.id]
    found = await listed(c, "Session", filter='sdk_options.model = "opus"')
    assert ids(found) == [background.id]
    assert found[0].sdk_options["max_turns"] == 5


# ---------------------------------------------------------------- UserRepository


async def test_get_by_email_and_username_skip_deleted_users(c: Client) -> None:
    ann, bob = await user(c, email="ann@example.com"), await user(c, username="bob")
    await c("UserService/DeleteUser", id=bob.id)

    assert ids(await listed(c, "User", filter='email = "ann@example.com"')) == [ann.id]
    assert await listed(c, "User", filter='username = "bob"') == []
    assert await counted(c, "User", 'email = "ann@example.com"') == 1  # email_exists
    assert await counted(c, "User", 'username = "nobody"') == 0  # username_exists


async def test_an_email_in_use_is_refused_whatever_its_case(c: Client) -> None:
    await user(c, email="Ann@Example.com")
    error = await fails(user(c, email="ann@example.com"))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS


async def test_update_last_login(c: Client) -> None:
    made, idle = await user(c), await user(c)
    login = at(1_800_000_000)
    updated = await c(
        "UserService/UpdateUser",
        user=c.message("User", id=made.id, last_login_time=login),
        update_mask=mask("last_login_time"),
    )
    assert updated.last_login_time == login
    assert ids(await listed(c, "User", filter="last_login_time != null")) == [made.id]
    assert ids(await listed(c, "User", filter="last_login_time = null")) == [idle.id]


# ---------------------------------------------------------------- MessageRepository


async def message(c: Client, session_id: str, kind: str = "user", **fields: Any) -> Any:
    return await create(c, "Message", session_id=session_id, message_type=kind, **fields)


async def test_get_by_session_in_sequence_and_the_next_number(c: Client) -> None:
    made = await session(c)
    sent = [await message(c, made.id, content=struct(text=f"m{i}")) for i in range(5)]
    await message(c, (await session(c)).id)  # another session's

    page = await c(
        "MessageService/ListMessages",
        filter=f'session_id = "{made.id}"',
        order_by="sequence_number",
        skip=1,
        page_size=3,
    )
    last = await c(
        "MessageService/ListMessages",
        filter=f'session_id = "{made.id}"',
        order_by="sequence_number desc",
        page_size=1,
    )

    assert [m.sequence_number for m in sent] == [1, 2, 3, 4, 5]
    assert ids(page.messages) == ids(sent[1:4])
    assert last.messages[0].sequence_number + 1 == 6  # get_next_sequence_number
    assert (await message(c, made.id)).sequence_number == 6  # what a create takes


async def test_get_result_message_is_the_latest_result(c: Client) -> None:
    made = await session(c)
    await message(c, made.id, "result")
    await message(c, made.id, "assistant")
    latest = await message(c, made.id, "result")

    page = await c(
        "MessageService/ListMessages",
        filter=f'session_id = "{made.id}" AND message_type = "result"',
        order_by="create_time desc",
        page_size=1,
    )

    assert ids(page.messages) == [latest.id]


async def test_purging_a_session_purges_its_messages(c: Client) -> None:
    made = await session(c)
    await message(c, made.id)
    await c("SessionService/DeleteSession", id=made.id, force=True)
    assert await counted(c, "Message", f'session_id = "{made.id}"') == 0


async def test_a_session_with_its_first_message_across_calls(c: Client) -> None:
    """create_session_with_message: the message needs the session's new id, so the two
    creates share a transaction across calls."""
    owner = (await user(c)).id
    for finish in (rollback, commit):
        transaction = await begin(c)
        inside = c.inside(transaction)
        made = await session(inside, owner)
        await message(inside, made.id, content=struct(text="hello"))
        assert await listed(c, "Session") == []  # not seen outside before commit
        await finish(c, transaction)

    (kept,) = await listed(c, "Session")
    assert [m.session_id for m in await listed(c, "Message")] == [kept.id]

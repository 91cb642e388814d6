"""The agent-sessions pack (schemas/agent_sessions, seed 003) end to end, on SQLite and
PostgreSQL: the seed's queries that need more than equality on a column.
`get_completed_before` in completed order, a page at a time across sessions that never
completed; its "JSONB Queries" (message and report content, AIP-160 paths into a Struct
with typed comparisons, key presence and arrays inside the document); each answered as
schemas/agent_sessions/README.md maps it, with the rows computed from what the test made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.packs.agents import PACK, PACKAGE, session, tool_call, unique, user
from tests.e2e.packs.support import at, create, listed, struct, when
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
ENDED = ("completed", "failed", "terminated")
BASE = 1_700_000_000


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


def completed(item: Any) -> int | None:
    return item.completed_time.seconds if item.HasField("completed_time") else None


def by_completed_time(items: list[Any], descending: bool = False) -> list[str]:
    """The ids of `items` as `order_by: "completed_time"` (or `desc`) sorts them: unset
    after every value ascending, before every value descending; the id breaks ties."""

    def key(item: Any) -> tuple[bool, int, str]:
        seconds = completed(item)
        if descending:
            return (seconds is not None, -(seconds or 0), item.id)
        return (seconds is None, seconds or 0, item.id)

    return [item.id for item in sorted(items, key=key)]


def matching(items: list[Any], data: list[Any], test: Callable[[Any], bool]) -> list[str]:
    """The ids of the items whose data (what the test made each of) passes `test`."""
    return [item.id for item, each in zip(items, data, strict=True) if test(each)]


# ---------------------------------------------------------------- get_completed_before


async def ended_sessions(c: Client) -> list[Any]:
    """Sessions that ended at various times (two at the same time), one that ended with
    no time recorded, and two that are still running."""
    owner = (await user(c)).id
    plan: list[tuple[str, int | None]] = [
        ("COMPLETED", 40),
        ("FAILED", 10),
        ("TERMINATED", 40),
        ("COMPLETED", 500),
        ("COMPLETED", 20),
        ("COMPLETED", None),
        ("ACTIVE", None),
        ("PROCESSING", None),
    ]
    made = []
    for state, seconds in plan:
        fields: dict[str, Any] = {"status": f"SESSION_STATUS_{state}"}
        if seconds is not None:
            fields["completed_time"] = at(BASE + seconds)
        made.append(await session(c, owner, **fields))
    return made


@pytest.mark.parametrize("limit", [1, 2, 1000])
async def test_get_completed_before_oldest_first_a_page_at_a_time(c: Client, limit: int) -> None:
    made = await ended_sessions(c)
    theirs = c.as_tenant(unique("t"))
    await ended_sessions(theirs)  # the same times, another tenant's
    cutoff = BASE + 100
    states = ", ".join(f'"{state}"' for state in ENDED)
    text = f"status IN ({states}) AND completed_time < {when(at(cutoff))}"

    first = await c(
        "SessionService/ListSessions", filter=text, order_by="completed_time", page_size=limit
    )
    every = await listed(c, "Session", filter=text, order_by="completed_time", page_size=limit)

    due = [
        s
        for s in made
        if s.status in (5, 6, 7) and completed(s) is not None and completed(s) < cutoff
    ]
    assert ids(every) == by_completed_time(due)
    assert ids(first.sessions) == by_completed_time(due)[:limit]  # get_completed_before's limit
    assert len(due) == 4  # 10, 20, 40, 40: the two at 40 by id


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_sessions_by_completed_time_page_across_those_not_completed(
    c: Client, descending: bool, page_size: int
) -> None:
    made = await ended_sessions(c)
    await ended_sessions(c.as_tenant(unique("t")))
    order = "completed_time desc" if descending else "completed_time"

    found = await listed(c, "Session", order_by=order, page_size=page_size)

    assert ids(found) == by_completed_time(made, descending)
    unset = [s.id for s in made if completed(s) is None]
    edge = slice(0, len(unset)) if descending else slice(len(made) - len(unset), None)
    assert sorted(ids(found)[edge]) == sorted(unset)


@pytest.mark.parametrize(
    "order_by",
    ["started_time", "sdk_options", "completed_time sideways", "completed_time, completed_time"],
)
async def test_an_order_the_sessions_cannot_take_is_refused(c: Client, order_by: str) -> None:
    await ended_sessions(c)

    error = await fails(c("SessionService/ListSessions", order_by=order_by))

    assert (error.code, error.reason, list(error.violations)) == (
        INVALID,
        "INVALID_ORDER_BY",
        ["order_by"],
    )


# ---------------------------------------------------------------- JSONB queries

# What sessions ran with: the SDK's options, as the seed keeps them (a dict in JSONB).
OPTIONS: list[dict[str, Any] | None] = [
    {
        "model": "opus",
        "max_turns": 30,
        "allowed_tools": ["Read", "Bash"],
        "permission_mode": "plan",
    },
    {"model": "haiku", "max_turns": 5, "allowed_tools": ["Read"]},
    {"model": "sonnet", "max_turns": "12", "allowed_tools": "Bash"},  # a string, not a number
    {"max_turns": 8, "permission_mode": "default"},
    {"model": None},
    None,  # no options at all
]


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# A filter on sdk_options and what it means, as a test of one session's options.
PATHS: dict[str, Callable[[dict[str, Any]], bool]] = {
    'sdk_options.model = "opus"': lambda o: o.get("model") == "opus",
    "sdk_options.max_turns > 8": lambda o: number(o.get("max_turns")) and o["max_turns"] > 8,
    "sdk_options.max_turns <= 8": lambda o: number(o.get("max_turns")) and o["max_turns"] <= 8,
    'sdk_options.allowed_tools : "Bash"': lambda o: (
        o.get("allowed_tools") == "Bash" or "Bash" in (o.get("allowed_tools") or [])
    ),
    "sdk_options.model : *": lambda o: "model" in o,
    "NOT sdk_options.model : *": lambda o: "model" not in o,
    "sdk_options.model = null": lambda o: "model" in o and o["model"] is None,
    'sdk_options.permission_mode != "plan"': lambda o: o.get("permission_mode") != "plan",
    'sdk_options.model IN ("opus", "haiku")': lambda o: o.get("model") in ("opus", "haiku"),
    'sdk_options.model = "*o*"': lambda o: isinstance(o.get("model"), str) and "o" in o["model"],
}


@pytest.mark.parametrize("text", sorted(PATHS))
async def test_sessions_by_a_path_into_their_sdk_options(c: Client, text: str) -> None:
    owner = (await user(c)).id
    made = []
    for options in OPTIONS:
        fields = {} if options is None else {"sdk_options": struct(**options)}
        made.append(await session(c, owner, **fields))
    theirs = c.as_tenant(unique("t"))
    await session(theirs, sdk_options=struct(**OPTIONS[0]))

    found = await listed(c, "Session", filter=text)

    assert sorted(ids(found)) == sorted(matching(made, OPTIONS, lambda o: PATHS[text](o or {})))


async def test_tool_calls_by_their_input(c: Client) -> None:
    made = await session(c)
    inputs = [
        {"command": "ls -la", "timeout": 120},
        {"command": "pytest -x", "timeout": 600},
        {"file_path": "/src/app.py", "limit": 200},
        {"file_path": "/README.md"},
    ]
    calls = [
        await tool_call(c, made.id, "Bash" if "command" in i else "Read", tool_input=struct(**i))
        for i in inputs
    ]
    theirs = c.as_tenant(unique("t"))
    for i in inputs:  # the same inputs, another tenant's
        await tool_call(theirs, (await session(theirs)).id, tool_input=struct(**i))

    reads_files = await listed(c, "ToolCall", filter="tool_input.file_path : *")
    listings = await listed(c, "ToolCall", filter='tool_input.command = "ls*"')
    slow = await listed(c, "ToolCall", filter="tool_input.timeout >= 300")

    assert ids(reads_files) == matching(calls, inputs, lambda i: "file_path" in i)
    assert ids(listings) == matching(calls, inputs, lambda i: i.get("command", "").startswith("ls"))
    assert ids(slow) == matching(calls, inputs, lambda i: i.get("timeout", 0) >= 300)


async def test_messages_and_reports_by_their_text(c: Client) -> None:
    """The seed's `content @> {"text": ...}` on messages and reports, and a search inside
    the text (a wildcard), which containment could not do."""
    made = await session(c)
    texts = ["Deploy the site", "deploy", "Quarterly report", "quarterly numbers", "deploy"]
    messages = [
        await create(c, "Message", session_id=made.id, message_type="user", content=struct(text=t))
        for t in texts
    ]
    reports = [
        await create(
            c,
            "Report",
            session_id=made.id,
            user_id=made.user_id,
            title=f"r{n}",
            content=struct(text=t),
        )
        for n, t in enumerate(texts)
    ]
    theirs = c.as_tenant(unique("t"))
    other = await session(theirs)
    await create(
        theirs, "Message", session_id=other.id, message_type="user", content=struct(text="deploy")
    )

    exact = await listed(c, "Message", filter='content.text = "deploy"')
    inside = await listed(c, "Report", filter='content.text =~ "*QUARTERLY*"')
    started = await listed(c, "Report", filter='content.text = "Quarterly*"')

    assert ids(exact) == matching(messages, texts, lambda t: t == "deploy")
    assert ids(inside) == matching(reports, texts, lambda t: "quarterly" in t.lower())
    assert ids(started) == matching(reports, texts, lambda t: t.startswith("Quarterly"))


@pytest.mark.parametrize(
    "text",
    [
        "sdk_options.max_turns < true",  # true has no order
        'sdk_option.model = "opus"',  # no such field
        'name.first = "x"',  # not a Struct
        'sdk_options = "opus"',  # a whole Struct
        'sdk_options.allowed_tools : "Ba*"',  # no wildcard in membership
        "sdk_options.model = *",
    ],
)
async def test_a_bad_path_filter_names_the_filter(c: Client, text: str) -> None:
    await session(c, sdk_options=struct(**OPTIONS[0]))

    error = await fails(c("SessionService/ListSessions", filter=text))

    assert (error.code, error.reason, list(error.violations)) == (
        INVALID,
        "INVALID_FILTER",
        ["filter"],
    )

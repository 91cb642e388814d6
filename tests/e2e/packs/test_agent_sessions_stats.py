"""The agent-sessions pack (schemas/agent_sessions, seed 003) end to end, on SQLite and
PostgreSQL: the seed's statistics answered by Aggregate<Rs>, each checked against the
values computed in Python from the rows the test made: ToolCallRepository's
get_statistics_by_tool, TaskExecutionRepository's get_execution_stats,
PermissionDecisionRepository's decisions counted by decision, and the total cost per user
and tokens per model the seed computed with func.sum and func.avg."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client
from tests.e2e.grouping import Group, agg, every_group, groups_of
from tests.e2e.packs.agents import PACK, PACKAGE, session, task, tool_call, unique, user
from tests.e2e.packs.support import call, create, struct, transact, unpacked
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


async def aggregate(c: Client, resource: str, plural: str, **request: Any) -> list[Group]:
    """Every group of Aggregate<plural>, page by page."""
    method = f"{resource}Service/Aggregate{plural}"
    pages = await every_group(lambda **r: c(method, **r), **request)
    return [group for page in pages for group in page]


async def in_one_snapshot(c: Client, method: str, *requests: dict[str, Any]) -> list[list[Group]]:
    """The Aggregate calls `requests` of `method` ("ToolCallService/AggregateToolCalls") in
    one Transact: one round trip, one snapshot; each one's groups."""
    name = method.split("/")[1]
    calls = [call(c, method, c.message(f"{name}Request", **r)) for r in requests]
    return [groups_of(answer) for answer in unpacked(calls, await transact(c, *calls))]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------- ToolCallRepository

TOOLS = "ToolCallService/AggregateToolCalls"


async def some_tool_calls(c: Client, session_id: str, n: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    made = []
    for _ in range(n):
        status = rng.choice(["SUCCESS", "SUCCESS", "ERROR", "PENDING", "RUNNING"])
        fields: dict[str, Any] = {"status": f"TOOL_CALL_STATUS_{status}"}
        if status in ("SUCCESS", "ERROR") and rng.random() < 0.8:
            fields["duration_ms"] = rng.randint(1, 5000)
        made.append(await tool_call(c, session_id, rng.choice(["Read", "Bash", "Grep"]), **fields))
    return made


def tool_statistics(calls: list[Any]) -> dict[str, dict[str, Any]]:
    """get_statistics_by_tool as the seed computed it, per tool."""
    per_tool: dict[str, list[Any]] = defaultdict(list)
    for each in calls:
        per_tool[each.tool_name].append(each)
    success, error = 3, 4  # ToolCallStatus
    return {
        tool: {
            "total_calls": len(mine),
            "success_count": sum(1 for m in mine if m.status == success),
            "error_count": sum(1 for m in mine if m.status == error),
            "avg_duration_ms": mean([m.duration_ms for m in mine if m.HasField("duration_ms")]),
        }
        for tool, mine in per_tool.items()
    }


def statistics_requests(scope: str) -> list[dict[str, Any]]:
    """The README's two AggregateToolCalls requests: per tool, per tool and outcome."""
    outcomes = (
        f'{scope} AND status IN ("success", "error")'
        if scope
        else ('status IN ("success", "error")')
    )
    return [
        {
            "filter": scope,
            "group_by": ["tool_name"],
            "aggregations": [
                agg("count", alias="total_calls"),
                agg("avg", "duration_ms", "avg_duration_ms"),
            ],
        },
        {"filter": outcomes, "group_by": ["tool_name", "status"], "aggregations": [agg("count")]},
    ]


def combined(per_tool: list[Group], per_outcome: list[Group]) -> dict[str, dict[str, Any]]:
    """The two answers as the seed's rows."""
    out = {
        key["tool_name"]: {**values, "success_count": 0, "error_count": 0}
        for key, values in per_tool
    }
    for key, values in per_outcome:
        out[key["tool_name"]][f"{key['status']}_count"] = values["count"]
    return out


async def test_statistics_by_tool_of_a_session_and_of_all(c: Client) -> None:
    one, two = await session(c), await session(c)
    mine = await some_tool_calls(c, one.id, 14, seed=1)
    others = await some_tool_calls(c, two.id, 6, seed=2)

    of_session = await in_one_snapshot(c, TOOLS, *statistics_requests(f'session_id = "{one.id}"'))
    of_all = await in_one_snapshot(c, TOOLS, *statistics_requests(""))

    for answer, calls in ((of_session, mine), (of_all, mine + others)):
        got, expected = combined(*answer), tool_statistics(calls)
        assert got.keys() == expected.keys()
        for tool, row in expected.items():
            average = row.pop("avg_duration_ms")
            assert got[tool].pop("avg_duration_ms") == pytest.approx(average)
            assert got[tool] == row, tool


# ---------------------------------------------------------------- TaskExecutionRepository

RUNS = "TaskExecutionService/AggregateTaskExecutions"


def execution_requests(task_id: str) -> list[dict[str, Any]]:
    scope = f'task_id = "{task_id}"'
    return [
        {
            "filter": scope,
            "aggregations": [
                agg("count", alias="total"),
                agg("avg", "duration_seconds", "avg_duration_seconds"),
            ],
        },
        {"filter": scope, "group_by": ["status"], "aggregations": [agg("count")]},
    ]


async def test_execution_stats_of_a_task(c: Client) -> None:
    owner = (await user(c)).id
    made, idle, other = await task(c, owner), await task(c, owner), await task(c, owner)
    rng = random.Random(3)
    runs = []
    for _ in range(12):
        status = rng.choice(["COMPLETED", "COMPLETED", "FAILED", "CANCELLED", "RUNNING"])
        fields = {"duration_seconds": rng.uniform(0.5, 90.0)} if status != "RUNNING" else {}
        runs.append((status.lower(), fields.get("duration_seconds")))
        await create(
            c, "TaskExecution", task_id=made.id, status=f"TASK_EXECUTION_STATUS_{status}", **fields
        )
    await create(c, "TaskExecution", task_id=other.id, duration_seconds=1000.0)

    (whole,), per_status = await in_one_snapshot(c, RUNS, *execution_requests(made.id))
    (nothing,), none = await in_one_snapshot(c, RUNS, *execution_requests(idle.id))

    counts = Counter(status for status, _ in runs)
    by_status = {key["status"]: values["count"] for key, values in per_status}
    stats = {
        "total": whole[1]["total"],
        **{s: by_status.get(s, 0) for s in ("completed", "failed", "cancelled")},
    }
    assert stats == {
        "total": len(runs),
        **{s: counts[s] for s in ("completed", "failed", "cancelled")},
    }
    assert whole[1]["avg_duration_seconds"] == pytest.approx(
        mean([d for _, d in runs if d is not None])
    )
    # A task that never ran: total 0, no average, no outcome counted.
    assert (nothing, none) == (({}, {"total": 0, "avg_duration_seconds": None}), [])


# ---------------------------------------------------------------- PermissionDecisionRepository


async def test_decisions_counted_by_decision_in_one_call(c: Client) -> None:
    one, two = await session(c), await session(c)
    rng = random.Random(4)
    decisions = [(rng.choice([one, two]), rng.choice(["ALLOW", "DENY", "ASK"])) for _ in range(15)]
    for where, decision in decisions:
        await create(
            c,
            "PermissionDecision",
            session_id=where.id,
            tool_name="Bash",
            decision=f"DECISION_{decision}",
        )

    groups = await aggregate(
        c,
        "PermissionDecision",
        "PermissionDecisions",
        filter=f'session_id = "{one.id}"',
        group_by=["decision"],
        aggregations=[agg("count")],
    )

    expected = Counter(decision.lower() for where, decision in decisions if where is one)
    assert {key["decision"]: values["count"] for key, values in groups} == expected


# ---------------------------------------------------------------- across repositories


async def test_total_cost_per_user_dearest_first(c: Client) -> None:
    users = [(await user(c)).id for _ in range(4)]
    rng = random.Random(5)
    costs: dict[str, list[float]] = defaultdict(list)
    for _ in range(12):
        owner, cost = rng.choice(users[:3]), round(rng.uniform(0, 20), 4)
        costs[owner].append(cost)
        await session(c, owner, total_cost_usd=cost)

    groups = await aggregate(
        c,
        "Session",
        "Sessions",
        group_by=["user_id"],
        aggregations=[agg("sum", "total_cost_usd", "spent"), agg("count", alias="sessions")],
        order_by="spent desc",
    )

    dearest = sorted(costs, key=lambda owner: -sum(costs[owner]))
    assert [key["user_id"] for key, _ in groups] == dearest  # users[3] has no session
    for key, values in groups:
        spent = costs[key["user_id"]]
        assert values == {"spent": pytest.approx(sum(spent)), "sessions": len(spent)}


async def test_tokens_per_model(c: Client) -> None:
    owner = (await user(c)).id
    rng = random.Random(6)
    sessions = []
    for _ in range(10):
        model = rng.choice(["opus", "sonnet", "haiku", None])
        options = struct(model=model, max_turns=3) if model else struct(max_turns=3)
        tokens = {
            "api_input_tokens": rng.randint(0, 10**6),
            "api_output_tokens": rng.randint(0, 10**5),
        }
        sessions.append((model, tokens))
        await session(c, owner, sdk_options=options, total_cost_usd=1.5, **tokens)

    groups = await aggregate(
        c,
        "Session",
        "Sessions",
        group_by=["sdk_options.model"],
        aggregations=[
            agg("sum", "api_input_tokens", "input"),
            agg("sum", "api_output_tokens", "output"),
            agg("avg", "total_cost_usd", "cost"),
        ],
    )

    expected: dict[str | None, dict[str, Any]] = {}
    for model, tokens in sessions:
        row = expected.setdefault(model, {"input": 0, "output": 0, "cost": 1.5})
        row["input"] += tokens["api_input_tokens"]
        row["output"] += tokens["api_output_tokens"]
    # Sessions without a model group under null, which comes last.
    assert {key["sdk_options.model"]: values for key, values in groups} == expected
    assert groups[-1][0] == {"sdk_options.model": None}


# ---------------------------------------------------------------- tenants and bad input

# A resource's plural, and how to make one row of it in a session (the second argument).
SCOPED: dict[str, tuple[str, Callable[[Client, Any], Awaitable[Any]]]] = {
    "ToolCall": ("ToolCalls", lambda c, s: tool_call(c, s.id)),
    "PermissionDecision": (
        "PermissionDecisions",
        lambda c, s: create(
            c, "PermissionDecision", session_id=s.id, tool_name="Bash", decision="DECISION_DENY"
        ),
    ),
    "Session": ("Sessions", lambda c, s: session(c, s.user_id)),
}


@pytest.mark.parametrize("resource", sorted(SCOPED))
async def test_another_tenant_aggregates_none_of_the_rows(c: Client, resource: str) -> None:
    plural, make = SCOPED[resource]
    made = await session(c)
    await make(c, made)
    other = c.as_tenant(unique("t"))
    count = [agg("count")]

    mine = await aggregate(c, resource, plural, aggregations=count)
    theirs = await aggregate(other, resource, plural, aggregations=count)
    by_id = await aggregate(other, resource, plural, group_by=["id"], aggregations=count)

    assert mine == [({}, {"count": 2 if resource == "Session" else 1})]
    assert (theirs, by_id) == ([({}, {"count": 0})], [])


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"aggregations": [agg("sum", "tool_name")]}, "aggregations[0].field"),
        ({"aggregations": [agg("avg", "status")]}, "aggregations[0].field"),
        ({"group_by": ["tool_input"]}, "group_by[0]"),  # a Struct needs a path
        ({"group_by": ["tool_output.name"]}, "group_by[0]"),  # not filterable
        ({"filter": 'tool = "Read"', "aggregations": [agg("count")]}, "filter"),
    ],
)
async def test_a_bad_statistics_request_names_its_field(
    c: Client, request_: dict[str, Any], field: str
) -> None:
    await tool_call(c, (await session(c)).id)

    error = await fails(c(TOOLS, **request_))

    assert (error.code, list(error.violations)) == (INVALID, [field])

"""Aggregate<Rs> of the built-in resources end to end, on SQLite and PostgreSQL: served by
the same code as declared resources. The total cost per user comes back as exact decimal
text, and an integer sum beyond 2^53 as its decimal text."""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from fractions import Fraction

import pytest

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2
from tests.e2e.domain import Stubs, append, enqueue, new_session, new_user
from tests.e2e.grouping import agg, groups_of
from tests.rpc import md

pytestmark = pytest.mark.e2e

TOKENS = 2**48  # the most one increment adds
COSTS = ["0.000125", "1.1", "0.333333333", "7", "0.000000001"]


async def test_total_cost_and_tokens_per_user(stubs: Stubs, tenant: str) -> None:
    users = [(await new_user(stubs, tenant, name)).id for name in ("ann", "bob")]
    spent: dict[str, Decimal] = defaultdict(Decimal)
    dearest: dict[str, Decimal] = defaultdict(Decimal)
    tokens: dict[str, int] = defaultdict(int)
    for n, cost in enumerate((COSTS * 2)[:9]):  # ann: 5 sessions, bob: 4
        user = users[n % 2]
        session = await new_session(stubs, tenant, user)
        increment = session_pb2.IncrementSessionMetricsRequest(
            id=session.id, total_cost_usd=cost, input_tokens=TOKENS
        )
        for _ in range(8):
            await stubs.sessions.IncrementSessionMetrics(increment, metadata=md(tenant))
        spent[user] += 8 * Decimal(cost)
        dearest[user] = max(dearest[user], 8 * Decimal(cost))
        tokens[user] += 8 * TOKENS
    request = session_pb2.AggregateSessionsRequest(
        group_by=["user_id"],
        aggregations=[
            agg("sum", "total_cost_usd", "spent"),
            agg("max", "total_cost_usd", "dearest"),
            agg("sum", "input_tokens", "tokens"),
            agg("count"),
        ],
        order_by="spent desc",
    )

    answer = await stubs.sessions.AggregateSessions(request, metadata=md(tenant))

    ann, bob = users
    assert (tokens[ann], tokens[bob]) == (40 * TOKENS, 2**53)
    assert groups_of(answer) == [
        (
            {"user_id": ann},
            {
                "spent": format(spent[ann].normalize(), "f"),
                "dearest": format(dearest[ann].normalize(), "f"),
                "tokens": str(tokens[ann]),  # beyond 2^53: its decimal text
                "count": 5,
            },
        ),
        (
            {"user_id": bob},
            {
                "spent": format(spent[bob].normalize(), "f"),
                "dearest": format(dearest[bob].normalize(), "f"),
                "tokens": 2**53,  # a double holds it exactly: a number
                "count": 4,
            },
        ),
    ]
    assert answer.next_page_token == ""


async def test_jobs_per_type_and_status(stubs: Stubs, tenant: str) -> None:
    made = [("render", 1), ("render", 4), ("mail", 2), ("render", 8), ("mail", 3)]
    for job_type, priority in made:
        await enqueue(stubs, tenant, job_type, priority=priority)
    request = job_pb2.AggregateJobsRequest(
        group_by=["job_type", "status"],
        aggregations=[agg("count"), agg("avg", "priority", "mean")],
    )

    answer = await stubs.jobs.AggregateJobs(request, metadata=md(tenant))

    priorities: dict[str, list[int]] = defaultdict(list)
    for job_type, priority in made:
        priorities[job_type].append(priority)
    assert [
        (g.key["job_type"], g.key["status"], g.values["count"], g.values["mean"])
        for g in answer.groups
    ] == [
        (kind, "pending", len(p), float(Fraction(sum(p), len(p))))
        for kind, p in sorted(priorities.items())
    ]


async def test_messages_per_session_and_role_of_this_tenant_only(stubs: Stubs, tenant: str) -> None:
    other = f"{tenant}-other"
    user = (await new_user(stubs, tenant)).id
    sessions = [(await new_session(stubs, tenant, user)).id for _ in range(2)]
    roles = [
        (sessions[0], "user"),
        (sessions[0], "assistant"),
        (sessions[1], "user"),
        (sessions[0], "user"),
    ]
    for session, role in roles:
        await append(stubs, tenant, session, role=role)
    theirs = (await new_session(stubs, other, (await new_user(stubs, other)).id)).id
    await append(stubs, other, theirs, role="user")
    request = message_pb2.AggregateMessagesRequest(
        group_by=["session_id", "role"],
        aggregations=[agg("count"), agg("max", "sequence_number", "last")],
    )

    answer = await stubs.messages.AggregateMessages(request, metadata=md(tenant))

    got = {(g.key["session_id"], g.key["role"]): g.values["count"] for g in answer.groups}
    assert got == dict(Counter(roles))
    users = await stubs.users.AggregateUsers(
        user_pb2.AggregateUsersRequest(group_by=["is_active"], aggregations=[agg("count")]),
        metadata=md(tenant),
    )
    assert [(g.key["is_active"], g.values["count"]) for g in users.groups] == [(True, 1)]

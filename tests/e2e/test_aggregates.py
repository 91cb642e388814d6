"""AggregateTasks (tests/schemas/tasks) end to end, on SQLite and PostgreSQL: counts, sums,
means, extremes and distinct counts checked against the same values computed in Python
from the rows the test created; groups by fields, by paths into a Struct and by time
buckets; pages across groups; soft-deleted and other tenants' rows left out."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from repogate.v1 import admin_pb2, admin_pb2_grpc
from tests.conftest import Running
from tests.declared import Client, message
from tests.e2e.grouping import Group, agg, bucket, every_group, groups_of, rfc3339, tag
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
AGGREGATE = "TaskService/AggregateTasks"
MOMENTS = [
    datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC),  # a Saturday
    datetime(2026, 3, 1, 0, 0, tzinfo=UTC),  # a Sunday
    datetime(2026, 3, 1, 13, 30, tzinfo=UTC),
    datetime(2026, 3, 2, 0, 0, tzinfo=UTC),  # a Monday
    datetime(2026, 3, 8, 23, 0, tzinfo=UTC),
    datetime(2026, 3, 9, 1, 0, 0, 250000, tzinfo=UTC),
    datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
]


@pytest.fixture
def client(tasks_server: Running) -> Client:
    return Client(tasks_server.channel)  # a tenant of its own


def new_task(project_id: str, title: str, **fields: Any) -> Any:
    due = fields.pop("due", None)
    if due is not None:
        fields["due_time"] = timestamp_pb2.Timestamp(
            seconds=int(due.timestamp()), nanos=due.microsecond * 1000
        )
    if "payload" in fields:
        payload = struct_pb2.Struct()
        payload.update(fields["payload"])
        fields["payload"] = payload
    task = message("Task", project_id=project_id, title=title, **fields)
    return message("CreateTaskRequest", task=task)


async def create(client: Client, requests: list[Any]) -> list[Any]:
    done = await client("TaskService/BatchCreateTasks", requests=requests)
    return list(done.tasks)


async def aggregate(client: Client, **request: Any) -> list[Group]:
    """Every group, walking the pages."""
    pages = await every_group(lambda **r: client(AGGREGATE, **r), **request)
    return [group for page in pages for group in page]


async def test_values_match_what_the_rows_hold(client: Client) -> None:
    rng = random.Random(20)
    projects = [(await client.project()).id for _ in range(3)]
    rows = [
        {
            "project_id": rng.choice(projects),
            "title": f"t{rng.randint(0, 15):02d}",
            "priority": rng.randint(0, 10),
            "assignee": rng.choice(["ann", "bob", "cyd", None]),
            "due": rng.choice([None, *MOMENTS]),
        }
        for _ in range(40)
    ]
    await create(
        client, [new_task(**{k: v for k, v in row.items() if v is not None}) for row in rows]
    )
    expected = {}
    for project in projects:
        mine = [row for row in rows if row["project_id"] == project]
        priorities = [row["priority"] for row in mine]
        dues = [row["due"] for row in mine if row["due"] is not None]
        expected[project] = {
            "count": len(mine),
            "total": sum(priorities),
            "mean": float(Fraction(sum(priorities), len(mine))),
            "min_priority": min(priorities),
            "max_priority": max(priorities),
            "people": len({row["assignee"] for row in mine if row["assignee"]}),
            "assigned": sum(1 for row in mine if row["assignee"]),
            "first_due": rfc3339(min(dues)) if dues else None,
            "last_title": max(row["title"] for row in mine),
        }
    aggregations = [
        agg("count"),
        agg("sum", "priority", "total"),
        agg("avg", "priority", "mean"),
        agg("min", "priority"),
        agg("max", "priority"),
        agg("count_distinct", "assignee", "people"),
        agg("count", "assignee", "assigned"),
        agg("min", "due_time", "first_due"),
        agg("max", "title", "last_title"),
    ]

    groups = await aggregate(client, group_by=["project_id"], aggregations=aggregations)

    assert {key["project_id"]: values for key, values in groups} == expected
    assert [key["project_id"] for key, _ in groups] == sorted(projects)  # by key by default
    total = sum(row["priority"] for row in rows)
    whole = await aggregate(client, aggregations=aggregations[:3])
    assert whole == [({}, {"count": 40, "total": total, "mean": float(Fraction(total, 40))})]
    # No group_by: one group, even of no rows; with group_by, no groups.
    none = 'title = "none such"'
    assert await aggregate(client, filter=none, aggregations=aggregations[:2]) == [
        ({}, {"count": 0, "total": None})
    ]
    assert (
        await aggregate(client, filter=none, group_by=["title"], aggregations=[agg("count")]) == []
    )


async def test_a_key_named_null_is_a_key_like_any_other(client: Client) -> None:
    """PostgreSQL reads an unquoted NULL in a path's array literal as SQL NULL."""
    c = client.as_tenant(f"t-null-key-{id(client)}")
    project = (await c.project()).id
    payloads = [{"null": "a", "NULL": 2}, {"null": "a", "NULL": 3}, {"null": "b"}]
    await create(c, [new_task(project, f"t{i}", payload=p) for i, p in enumerate(payloads)])

    groups = await aggregate(
        c, group_by=["payload.null"], aggregations=[agg("sum", "payload.NULL", "total")]
    )

    assert {key["payload.null"]: values["total"] for key, values in groups} == {
        "a": 5.0,
        "b": None,
    }


async def test_group_by_paths_into_a_struct(client: Client) -> None:
    project = (await client.project()).id
    payloads: list[dict[str, Any] | None] = [
        {"tool": "grep", "cost": 0.25, "meta": {"depth": 2}},
        {"tool": "grep", "cost": 1.5},
        {"tool": "grep", "cost": "n/a"},
        {"tool": "ls", "cost": 3, "meta": {"depth": 2}},
        {"tool": "ls", "cost": 3},
        {"tool": 7, "cost": 0.75, "meta": {"depth": "deep"}},
        {"tool": True, "cost": 2},
        {"tool": False},
        {"tool": None, "cost": 1.25},
        {"tool": {"nested": 1}, "cost": 0.5},
        {"tool": ["x"]},
        {"cost": 4},
        None,
    ]
    await create(
        client,
        [
            new_task(project, f"t{i}", **({} if body is None else {"payload": body}))
            for i, body in enumerate(payloads)
        ],
    )
    expected: dict[tuple[str, Any], dict[str, Any]] = defaultdict(
        lambda: {"count": 0, "spent": [], "priced": 0, "prices": set()}
    )
    for body in payloads:
        body = body or {}
        tool = body.get("tool")
        each = expected[tag(tool if not isinstance(tool, dict | list) else None)]
        each["count"] += 1
        cost = body.get("cost")
        if cost is not None:
            each["priced"] += 1
            each["prices"].add(tag(cost))
            if not isinstance(cost, str):
                each["spent"].append(cost)
    aggregations = [
        agg("count"),
        agg("sum", "payload.cost", "spent"),
        agg("count", "payload.cost", "priced"),
        agg("count_distinct", "payload.cost", "prices"),
        agg("max", "payload.cost", "dearest"),
    ]

    groups = await aggregate(client, group_by=["payload.tool"], aggregations=aggregations)

    got = {tag(key["payload.tool"]): values for key, values in groups}
    assert got == {
        key: {
            "count": each["count"],
            "spent": float(sum(each["spent"])) if each["spent"] else None,
            "priced": each["priced"],
            "prices": len(each["prices"]),
            "dearest": float(max(each["spent"])) if each["spent"] else None,
        }
        for key, each in expected.items()
    }
    # Numbers first, then strings, then booleans, null last; reversed by desc.
    order = [tag(key["payload.tool"]) for key, _ in groups]
    assert order == [
        ("number", 7.0),
        ("str", "grep"),
        ("str", "ls"),
        ("bool", False),
        ("bool", True),
        ("NoneType", None),
    ]
    backwards = await aggregate(
        client, group_by=["payload.tool"], aggregations=[agg("count")], order_by="payload.tool desc"
    )
    assert [tag(key["payload.tool"]) for key, _ in backwards] == order[::-1]
    deep = await aggregate(client, group_by=["payload.meta.depth"], aggregations=[agg("count")])
    assert {tag(k["payload.meta.depth"]): v["count"] for k, v in deep} == {
        ("number", 2.0): 2,
        ("str", "deep"): 1,
        ("NoneType", None): 10,
    }


@pytest.mark.parametrize("unit", ["hour", "day", "week", "month", "year"])
async def test_group_by_time_buckets_in_utc(client: Client, unit: str) -> None:
    project = (await client.project()).id
    dues = [*MOMENTS, MOMENTS[1], MOMENTS[3], None]
    await create(
        client,
        [new_task(project, f"t{i}", **({"due": due} if due else {})) for i, due in enumerate(dues)],
    )
    counted: dict[str | None, int] = defaultdict(int)
    for due in dues:
        counted[bucket(due, unit)] += 1

    groups = await aggregate(
        client, group_by=[f"due_time.{unit}"], aggregations=[agg("count"), agg("max", "due_time")]
    )

    assert {key[f"due_time.{unit}"]: values["count"] for key, values in groups} == counted
    starts = [key[f"due_time.{unit}"] for key, _ in groups]
    assert starts == [*sorted(s for s in counted if s is not None), None]  # null last
    for key, values in groups:  # each bucket's latest moment is in it
        start = key[f"due_time.{unit}"]
        latest = (
            max(d for d in dues if d is not None and bucket(d, unit) == start) if start else None
        )
        assert values["max_due_time"] == rfc3339(latest)


async def test_pages_walk_every_group_once_in_order(client: Client) -> None:
    project = (await client.project()).id
    sizes = {f"g{i:02d}": i % 4 + 1 for i in range(23)}
    await create(client, [new_task(project, title) for title, n in sizes.items() for _ in range(n)])
    request = {
        "group_by": ["title"],
        "aggregations": [agg("count", alias="n")],
        "order_by": "n desc",
    }
    expected = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))

    pages = await every_group(lambda **r: client(AGGREGATE, **r), page_size=5, **request)

    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    walked = [(key["title"], values["n"]) for page in pages for key, values in page]
    assert walked == expected
    first = await client(AGGREGATE, page_size=5, **request)
    assert groups_of(first) == pages[0]
    # A token belongs to its query: another order, another tenant, or edited, it fails.
    moved = {**request, "order_by": "n"}
    for call in (
        client(AGGREGATE, page_size=5, page_token=first.next_page_token, **moved),
        client.as_tenant("t-other")(AGGREGATE, page_token=first.next_page_token, **request),
        client(AGGREGATE, page_token=first.next_page_token[:-2] + "xx", **request),
    ):
        error = await fails(call)
        assert (error.code, list(error.violations)) == (INVALID, ["page_token"])


async def test_soft_deleted_rows_count_only_when_shown(client: Client) -> None:
    project = (await client.project()).id
    tasks = await create(client, [new_task(project, "t", priority=p) for p in (1, 2, 4, 8)])
    for task in tasks[:2]:
        await client("TaskService/DeleteTask", id=task.id)
    request = {"aggregations": [agg("count"), agg("sum", "priority", "total")]}

    assert await aggregate(client, **request) == [({}, {"count": 2, "total": 12})]
    assert await aggregate(client, show_deleted=True, **request) == [
        ({}, {"count": 4, "total": 15})
    ]


async def test_another_tenants_rows_are_never_counted(client: Client) -> None:
    other = client.as_tenant(f"{client.tenant}-other")
    mine, theirs = (await client.project()).id, (await other.project()).id
    await create(client, [new_task(mine, "shared", priority=p) for p in (1, 2)])
    await create(other, [new_task(theirs, "shared", priority=p) for p in (5, 6, 7)])
    request = {
        "group_by": ["title"],
        "aggregations": [
            agg("count"),
            agg("sum", "priority", "total"),
            agg("count_distinct", "project_id", "projects"),
        ],
    }

    assert await aggregate(client, **request) == [
        ({"title": "shared"}, {"count": 2, "total": 3, "projects": 1})
    ]
    assert await aggregate(other, **request) == [
        ({"title": "shared"}, {"count": 3, "total": 18, "projects": 1})
    ]
    # A filter naming the other tenant's project finds nothing of theirs.
    assert await aggregate(client, filter=f'project_id = "{theirs}"', **request) == []


BAD = [
    ({"group_by": ["nope"], "aggregations": [agg("count")]}, "group_by[0]"),
    ({"group_by": ["payload"], "aggregations": [agg("count")]}, "group_by[0]"),
    ({"group_by": ["tags"], "aggregations": [agg("count")]}, "group_by[0]"),
    ({"group_by": ["priority.day"]}, "group_by[0]"),
    ({"group_by": ["due_time.fortnight"]}, "group_by[0]"),
    ({"group_by": ["title", "priority", " title "]}, "group_by[2]"),
    ({"group_by": ["title; drop table tasks"]}, "group_by[0]"),
    ({"group_by": [f"payload.k{i}" for i in range(9)]}, "group_by"),
    ({"aggregations": [agg("sum", "title")]}, "aggregations[0].field"),
    ({"aggregations": [agg("avg", "state")]}, "aggregations[0].field"),
    ({"aggregations": [agg("sum", "due_time")]}, "aggregations[0].field"),
    ({"aggregations": [agg("count"), agg("max", "tags")]}, "aggregations[1].field"),
    ({"aggregations": [agg("min", "project_id")]}, "aggregations[0].field"),
    ({"aggregations": [agg("sum", "payload")]}, "aggregations[0].field"),
    ({"aggregations": [agg("sum", "nope")]}, "aggregations[0].field"),
    ({"aggregations": [agg("sum")]}, "aggregations[0].field"),
    (
        {"aggregations": [message("repogate.v1.Aggregation", field="priority")]},
        "aggregations[0].function",
    ),
    (
        {"aggregations": [message("repogate.v1.Aggregation", function=99)]},
        "aggregations[0].function",
    ),
    ({"aggregations": [agg("count", alias="not an alias")]}, "aggregations[0].alias"),
    ({"aggregations": [agg("sum", "priority"), agg("sum", "priority")]}, "aggregations[1].alias"),
    (
        {"group_by": ["title"], "aggregations": [agg("count", alias="title")]},
        "aggregations[0].alias",
    ),
    ({"aggregations": [agg("count", alias=f"c{i}") for i in range(21)]}, "aggregations"),
    ({}, "aggregations"),
    ({"aggregations": [agg("count")], "order_by": "nope"}, "order_by"),
    ({"aggregations": [agg("count")], "order_by": "count sideways"}, "order_by"),
    ({"aggregations": [agg("count")], "order_by": "count, count desc"}, "order_by"),
    ({"aggregations": [agg("count")], "filter": "nope = 1"}, "filter"),
    ({"aggregations": [agg("count")], "page_size": -1}, "page_size"),
    ({"aggregations": [agg("count")], "page_token": "forged"}, "page_token"),
]


REASONS = {
    "order_by": "INVALID_ORDER_BY",
    "filter": "INVALID_FILTER",
    "page_token": "INVALID_PAGE_TOKEN",
    "page_size": "INVALID_ARGUMENT",
}


@pytest.mark.parametrize(("request_fields", "field"), BAD)
async def test_bad_requests_name_the_field(
    client: Client, request_fields: dict[str, Any], field: str
) -> None:
    error = await fails(client(AGGREGATE, **request_fields))

    assert (error.code, list(error.violations)) == (INVALID, [field])
    assert error.reason == REASONS.get(field, "INVALID_AGGREGATION")


async def test_their_filters_reach_the_index_advice(client: Client, tasks_server: Running) -> None:
    project = (await client.project()).id
    (task,) = await create(client, [new_task(project, "t")])
    unusual = 'updated_by = "nobody" AND priority > 3'
    for _ in range(3):
        await client(AGGREGATE, filter=unusual, aggregations=[agg("count")])
    await client("TaskService/RankTask", id=task.id, filter=unusual)

    admin = admin_pb2_grpc.AdminServiceStub(tasks_server.channel)
    advice = await admin.RecommendIndexes(admin_pb2.RecommendIndexesRequest())

    calls = {(s.method, s.filter): s.calls for s in advice.shapes if s.table == "tasks"}
    shape = "updated_by = ? AND priority > ?"
    assert (calls["Aggregate", shape], calls["Rank", shape]) == (3, 1)
    assert "nobody" not in str(advice)

"""Filters into a Struct, `has`, and membership in repeated fields, through a real server
(tests/schemas/tasks) on SQLite and PostgreSQL: ListTasks (page by page) and CountTasks
answer each with the rows of the calling tenant only, and refuse bad filters with
INVALID_ARGUMENT naming what is wrong.

Task.payload is a `searchable` Struct with an index on `payload.score`; Task.tags a
filterable repeated string. Another tenant holds the very same tasks.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from tests.conftest import Running
from tests.declared import Client
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

# title -> (payload, tags); None: no payload at all.
TASKS: dict[str, tuple[dict[str, Any] | None, list[str]]] = {
    "a": (
        {
            "score": 10,
            "workspace": "w1",
            "labels": ["urgent", "x"],
            "permission": "granted",
            "due": "2026-01-01T00:00:00Z",
        },
        ["red", "blue"],
    ),
    "b": ({"score": 2.5, "workspace": "w2", "labels": ["x"], "permission": None}, ["red"]),
    "c": ({"score": "high", "workspace": "W1", "labels": "urgent", "nested": {"level": 3}}, []),
    "d": ({"score": 7, "nested": {"level": "3"}, "due": "2027-01-01T00:00:00Z"}, ["blue", "green"]),
    "e": (None, ["red", "green"]),
    "f": ({}, []),
}

CASES = {
    # Numbers as numbers, strings as strings; a value of another type never matches.
    "payload.score > 5": "ad",
    "payload.score <= 2.5": "b",
    'payload.score = "high"': "c",
    'payload.score >= "a"': "c",
    # RFC 3339 text in a Struct is a string: it orders as one.
    'payload.due < "2026-06-01T00:00:00Z"': "a",
    'payload.workspace = "w*"': "ab",
    'payload.workspace =~ "w1"': "ac",
    'payload.workspace != "w1"': "bcdef",
    "payload.nested.level = 3": "c",
    'payload.nested.level IN (3, "3")': "cd",
    # Membership in an array inside the Struct (or the value itself).
    'payload.labels:"urgent"': "ac",
    'payload.labels:"x" AND payload.score < 100': "ab",
    # Has: the key is there, JSON null included.
    "payload.permission:*": "ab",
    "NOT payload.permission:*": "cdef",
    "payload.permission = null": "b",
    # Repeated fields: non-empty, overlap, containment.
    "tags:*": "abde",
    "NOT tags:*": "cf",
    'tags:"red" OR tags:"green"': "abde",
    'tags:"red" AND tags:"green"': "e",
    'payload.score > 5 AND tags:"blue"': "ad",
    "payload = null": "e",
    # Numbers past what a BIGINT holds are doubles (as a Struct's are), not driver errors.
    "payload.score = 1" + "0" * 30: "",
    "payload.score IN (1" + "0" * 30 + ", 7)": "d",
    "tags : 1" + "0" * 30: "",
}


@pytest.fixture(scope="module")
async def seeded(tasks_server: Running) -> tuple[Client, Client, dict[str, str]]:
    """Tenant A's tasks (their ids by title) and tenant B's copies of them."""
    client = Client(tasks_server.channel)
    other = client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    ids: dict[str, str] = {}
    for who in (other, client):
        project = await who.project()
        for title, (payload, tags) in TASKS.items():
            fields: dict[str, Any] = {"tags": tags}
            if payload is not None:
                struct = struct_pb2.Struct()
                struct.update(payload)
                fields["payload"] = struct
            task = await who.task(project.id, title, **fields)
            ids[title] = task.id
    return client, other, ids


async def listed(client: Client, text: str, size: int, order_by: str = "") -> list[Any]:
    walk = client.walk(
        "TaskService/ListTasks", "tasks", filter=text, page_size=size, order_by=order_by
    )
    return [task async for task in walk]


@pytest.mark.parametrize(("text", "titles"), list(CASES.items()))
async def test_filters_into_structs_and_arrays(
    seeded: tuple[Client, Client, dict[str, str]], text: str, titles: str
) -> None:
    client, other, ids = seeded
    for size in (2, 50):
        got = await listed(client, text, size)
        assert sorted(task.title for task in got) == list(titles), (text, size)
        assert {task.id for task in got} <= set(ids.values()), "another tenant's task"
    counted = await client("TaskService/CountTasks", filter=text)
    assert counted.total_size == len(titles)
    # The other tenant's copies answer the same filter the same way, with its own rows.
    theirs = await listed(other, text, 50)
    assert sorted(task.title for task in theirs) == list(titles)
    assert not {task.id for task in theirs} & set(ids.values())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("pay.score > 1", 'unknown field "pay.score" at column 1'),
        ("title.x = 1", "title at column 1 is not a JSON object"),
        ('payload = "x"', "payload at column 1 is a JSON object: name a key in it"),
        ("payload.score < true", "compares numbers or strings; true or false at column 17"),
        ("payload.score > null", "null at column 17 has no order"),
        ("payload.score = *", "* stands alone only after :"),
        ('payload.labels : "a*"', ": takes a string, a number, true, false or *"),
        ("payload.score IN (1, null)", "null is not allowed in IN"),
        ("priority:*", ":* applies to arrays and to paths into JSON objects; priority is a int"),
        ("due_time:*", "due_time is a timestamp (to test for a value, write due_time != null)"),
        ("payload.score > 1" + "0" * 400, "the number at column 17 is out of range"),
    ],
)
async def test_bad_filters_are_invalid_argument_naming_the_problem(
    seeded: tuple[Client, Client, dict[str, str]], text: str, says: str
) -> None:
    client, _, _ = seeded
    for method in ("TaskService/ListTasks", "TaskService/CountTasks"):
        error = await fails(client(method, filter=text))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, text
        assert error.reason == "INVALID_FILTER"
        assert list(error.violations) == ["filter"]
        assert says in error.violations["filter"], error.violations
        assert "SELECT" not in error.message
        assert "jsonb" not in error.message


async def test_a_path_filter_pages_by_tokens_bound_to_it(
    seeded: tuple[Client, Client, dict[str, str]],
) -> None:
    client, _, _ = seeded
    text = 'payload.score > 1 OR tags:"red"'
    walked = await listed(client, text, 1, order_by="title desc")
    assert [task.title for task in walked] == ["e", "d", "b", "a"]
    first = await client("TaskService/ListTasks", filter=text, page_size=1, order_by="title")
    assert first.tasks[0].title == "a"
    elsewhere = client(
        "TaskService/ListTasks",
        filter="payload.score > 2",
        order_by="title",
        page_token=first.next_page_token,
    )
    assert (await fails(elsewhere)).code == grpc.StatusCode.INVALID_ARGUMENT

"""Reading and numbering schema-declared resources (tests/schemas/tasks) end to end, on
SQLite and PostgreSQL: filters of every declared kind, order_by, page tokens, skip,
counts, request ids, and per-parent sequence numbers under concurrent creates."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.conftest import Running
from tests.declared import Client, message
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNT_MODE_NONE, COUNT_MODE_EXACT, COUNT_MODE_ESTIMATED = 1, 2, 3
TASK_STATE_DONE = 2
ROWS = 300


@pytest.fixture
def client(tasks_server: Running) -> Client:
    return Client(tasks_server.channel)


def create_task(project_id: str, title: str, **fields: Any) -> Any:
    task = message("Task", project_id=project_id, title=title, **fields)
    return message("CreateTaskRequest", task=task)


def create_comment(task_id: str, body: str = "remark") -> Any:
    return message("CreateCommentRequest", comment=message("Comment", task_id=task_id, body=body))


async def titles(c: Client, **request: Any) -> list[str]:
    return [task.title async for task in c.walk("TaskService/ListTasks", "tasks", **request)]


async def test_filters_of_every_declared_kind(client: Client) -> None:
    project, other = await client.project(), await client.project()
    early = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    late = timestamp_pb2.Timestamp(seconds=1_900_000_000)
    requests = [
        create_task(project.id, "a", priority=1, tags=["x", "y"], due_time=early),
        create_task(project.id, "b", priority=5, tags=["y"], state=TASK_STATE_DONE),
        create_task(project.id, "c", priority=9, due_time=late, assignee="ann"),
        create_task(other.id, "d", priority=5, tags=["x"]),
    ]
    await client("TaskService/BatchCreateTasks", requests=requests)

    cases = {
        'state = "done"': ["b"],
        "priority >= 5": ["b", "c", "d"],
        'priority = 5 AND NOT tags:"x"': ["b"],
        'due_time < "2030-01-01T00:00:00Z"': ["a"],
        "due_time != null": ["a", "c"],
        'tags:"x"': ["a", "d"],
        f'project_id = "{other.id}"': ["d"],
        f'project_id = "{project.id}" AND (assignee = "ann" OR priority < 2)': ["a", "c"],
        'title = "b" OR title = "d"': ["b", "d"],
        "attempts = 0": ["a", "b", "c", "d"],
    }
    for text, expected in cases.items():
        assert sorted(await titles(client, filter=text)) == expected, text
        assert (await client("TaskService/CountTasks", filter=text)).total_size == len(expected)
    for text, field in (('description = "x"', "filter"), ('priority = "high"', "filter")):
        error = await fails(client("TaskService/ListTasks", filter=text))
        assert error.code == INVALID
        assert list(error.violations) == [field]


async def test_order_by_and_skip(client: Client) -> None:
    project = await client.project()
    requests = [create_task(project.id, f"t{n}", priority=n % 3) for n in range(6)]
    await client("TaskService/BatchCreateTasks", requests=requests)

    by_priority = await titles(client, order_by="priority desc, title", page_size=4)
    assert by_priority == ["t2", "t5", "t1", "t4", "t0", "t3"]
    skipped = await client("TaskService/ListTasks", order_by="title desc", skip=2, page_size=2)
    assert [task.title for task in skipped.tasks] == ["t3", "t2"]
    error = await fails(client("TaskService/ListTasks", order_by="description"))
    assert list(error.violations) == ["order_by"]
    # Projects' declared default order: by name.
    names = ["b-project", "a-project", "c-project"]
    other = client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    for name in names:
        await other.project(name)
    listed = await other("ProjectService/ListProjects")
    assert [p.name for p in listed.projects] == sorted(names)


async def test_page_tokens_walk_every_row_once(client: Client) -> None:
    project = await client.project()
    for start in range(0, ROWS, 100):
        batch = [
            create_task(project.id, f"task {n:03}", priority=n % 11 % 10, tags=[f"g{n % 4}"])
            for n in range(start, start + 100)
        ]
        await client("TaskService/BatchCreateTasks", requests=batch)

    for order in ("", "priority desc", "title desc", "create_time, priority"):
        walked = await titles(client, order_by=order, page_size=7)
        assert len(walked) == ROWS, order
        assert set(walked) == {f"task {n:03}" for n in range(ROWS)}, order
    tagged = await titles(client, filter='tags:"g1"', order_by="priority", page_size=7)
    assert Counter(tagged) == Counter(f"task {n:03}" for n in range(1, ROWS, 4))

    first = await client("TaskService/ListTasks", page_size=7, filter='tags:"g1"')
    # A token is bound to the query it continues.
    moved = client("TaskService/ListTasks", page_token=first.next_page_token, filter='tags:"g2"')
    assert (await fails(moved)).code == INVALID
    counted = await client(
        "TaskService/ListTasks", page_size=7, count_mode=COUNT_MODE_EXACT, filter='tags:"g1"'
    )
    assert (counted.total_size, counted.total_size_exact) == (ROWS // 4, True)
    assert not first.HasField("total_size")
    estimated = await client("TaskService/CountTasks", count_mode=COUNT_MODE_ESTIMATED)
    # Below the estimate threshold the count stays exact.
    assert (estimated.total_size, estimated.total_size_exact) == (ROWS, True)
    refused = await fails(client("TaskService/CountTasks", count_mode=COUNT_MODE_NONE))
    assert list(refused.violations) == ["count_mode"]


async def test_a_retried_request_id_returns_the_first_answer_and_writes_once(
    client: Client,
) -> None:
    project = await client.project()
    request_id = str(uuid.uuid4())
    create = create_task(project.id, "once")
    create.request_id = request_id

    first = await client("TaskService/CreateTask", create)
    again = await client("TaskService/CreateTask", create)

    assert again == first
    assert (await client("TaskService/CountTasks")).total_size == 1
    bump = {"id": first.id, "attempts": 1, "request_id": str(uuid.uuid4())}
    await client("TaskService/IncrementTaskCounters", **bump)
    assert (await client("TaskService/IncrementTaskCounters", **bump)).attempts == 1
    batch_id = str(uuid.uuid4())
    comments = [create_comment(first.id, "x"), create_comment(first.id, "y")]
    made = await client(
        "CommentService/BatchCreateComments", requests=comments, request_id=batch_id
    )
    replayed = await client(
        "CommentService/BatchCreateComments", requests=comments, request_id=batch_id
    )
    assert replayed == made
    assert (await client("CommentService/CountComments")).total_size == 2


async def test_comments_are_numbered_per_task_without_gaps_under_concurrency(
    client: Client,
) -> None:
    project = await client.project()
    one, two = await client.task(project.id, "one"), await client.task(project.id, "two")

    singles = [
        client(
            "CommentService/CreateComment", comment=message("Comment", task_id=one.id, body=f"{n}")
        )
        for n in range(20)
    ]
    spanning = [create_comment(task.id) for task in (one, two, one, two, two)]
    batch = client("CommentService/BatchCreateComments", requests=spanning)
    results = await asyncio.gather(*singles, batch)

    answered = [*results[:-1], *results[-1].comments]
    numbers: dict[str, list[int]] = {one.id: [], two.id: []}
    for each in answered:
        numbers[each.task_id].append(each.number)
    assert sorted(numbers[one.id]) == list(range(1, 23))
    assert sorted(numbers[two.id]) == [1, 2, 3]
    # The batch numbered its items in order, within each task.
    within = [c.number for c in results[-1].comments]
    assert within[0] < within[2]
    assert [within[i] for i in (1, 3, 4)] == [1, 2, 3]
    stored = client(
        "CommentService/ListComments", filter=f'task_id = "{one.id}"', order_by="number"
    )
    assert [c.number for c in (await stored).comments] == list(range(1, 23))
    # A soft-deleted comment keeps its number.
    last = next(c for c in answered if c.task_id == two.id and c.number == 3)
    await client("CommentService/DeleteComment", id=last.id)
    later = await client(
        "CommentService/CreateComment", comment=message("Comment", task_id=two.id, body="4")
    )
    assert later.number == 4

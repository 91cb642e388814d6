"""RankTask (tests/schemas/tasks) end to end, on SQLite and PostgreSQL: a row's rank is its
1-based position in ListTasks with the same filter and order_by, among the tenant's live
rows; another tenant's row is NOT_FOUND."""

from __future__ import annotations

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client, message
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

RANK = "TaskService/RankTask"
TASK_STATE_DONE = 2


@pytest.fixture
def client(tasks_server: Running) -> Client:
    return Client(tasks_server.channel)


async def board(client: Client, priorities: list[int], **fields: object) -> list[str]:
    project = (await client.project()).id
    requests = [
        message(
            "CreateTaskRequest",
            task=message("Task", project_id=project, title=f"t{i}", priority=p, **fields),
        )
        for i, p in enumerate(priorities)
    ]
    return [
        task.id for task in (await client("TaskService/BatchCreateTasks", requests=requests)).tasks
    ]


async def listed(client: Client, **request: str) -> list[str]:
    return [
        task.id
        async for task in client.walk("TaskService/ListTasks", "tasks", page_size=3, **request)
    ]


@pytest.mark.parametrize("order_by", ["priority desc", "priority, title desc", "title", ""])
async def test_the_rank_is_the_position_in_the_list(client: Client, order_by: str) -> None:
    ids = await board(client, [5, 9, 5, 1, 9, 9, 0, 5])
    places = await listed(client, order_by=order_by)

    for id_ in ids:
        answer = await client(RANK, id=id_, order_by=order_by)
        assert (answer.rank, answer.total_size) == (places.index(id_) + 1, len(ids))
    # Ties on priority take consecutive ranks, by id.
    if order_by == "priority desc":
        top = sorted(places[:3])
        assert places[:3] == top


@pytest.mark.parametrize("order_by", ["due_time desc", "due_time", "due_time desc, priority"])
async def test_rows_without_a_value_take_their_place_in_the_list(
    client: Client, order_by: str
) -> None:
    """Unset values sort last ascending and first descending, in Rank as in List."""
    c = client.as_tenant(f"t-rank-{order_by.replace(' ', '-').replace(',', '')}-{id(client)}")
    ids = await board(c, [1, 2, 3])
    unset = await board(c, [4, 5])
    for n, id_ in enumerate(ids):
        task = message("Task", id=id_, due_time={"seconds": 1_800_000_000 + 86_400 * n})
        await c("TaskService/UpdateTask", task=task, update_mask={"paths": ["due_time"]})
    places = await listed(c, order_by=order_by)

    assert sorted(places) == sorted(ids + unset)
    for id_ in ids + unset:
        answer = await c(RANK, id=id_, order_by=order_by)
        assert (answer.rank, answer.total_size) == (places.index(id_) + 1, 5)


async def test_rows_outside_the_filter_or_deleted_take_no_place(client: Client) -> None:
    ids = await board(client, [3, 8, 6, 2])
    done = await board(client, [7], state=TASK_STATE_DONE)
    await client("TaskService/DeleteTask", id=ids[1])
    live = 'state = "open"'
    places = await listed(client, order_by="priority desc", filter=live)

    assert [
        (await client(RANK, id=id_, order_by="priority desc", filter=live)).rank for id_ in ids
    ] == [
        places.index(ids[0]) + 1,
        0,  # soft-deleted
        places.index(ids[2]) + 1,
        places.index(ids[3]) + 1,
    ]
    answer = await client(RANK, id=done[0], order_by="priority desc", filter=live)
    assert (answer.rank, answer.total_size) == (0, 3)
    answer = await client(RANK, id=done[0], order_by="priority desc")
    assert (answer.rank, answer.total_size) == (1, 4)


async def test_another_tenants_row_is_not_found_and_not_counted(client: Client) -> None:
    other = client.as_tenant(f"{client.tenant}-other")
    theirs = await board(other, [10, 10, 10])
    mine = await board(client, [1, 2])

    error = await fails(client(RANK, id=theirs[0], order_by="priority desc"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    answer = await client(RANK, id=mine[1], order_by="priority desc")
    assert (answer.rank, answer.total_size) == (1, 2)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": "", "order_by": "priority"}, "id"),
        ({"id": "not-a-uuid", "order_by": "priority"}, "id"),
        ({"order_by": "payload"}, "order_by"),
        ({"order_by": "priority sideways"}, "order_by"),
        ({"filter": "nope = 1"}, "filter"),
    ],
)
async def test_bad_requests_name_the_field(
    client: Client, fields: dict[str, str], field: str
) -> None:
    (id_,) = await board(client, [1])
    error = await fails(client(RANK, **{"id": id_, **fields}))

    assert (error.code, list(error.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])

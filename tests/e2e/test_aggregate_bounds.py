"""The cost bounds of AggregateTasks and RankTask (tests/schemas/tasks): pages reach no
further than REPOGATE_AGGREGATE_MAX_GROUPS groups, and a call's database work is cut off
after REPOGATE_AGGREGATE_TIMEOUT whatever deadline the client set, its statement
cancelled on the server and its connection given back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.database import create_engine
from tests.declared import TASKS, Client, message
from tests.e2e.grouping import agg, groups_of
from tests.e2e.support import StartRepogate, eventually, fails
from tests.pgbouncer import fresh_database

pytestmark = pytest.mark.e2e

AGGREGATE = "TaskService/AggregateTasks"
BY_TITLE = {"group_by": ["title"], "aggregations": [agg("count")]}


async def tasks(client: Client, titles: list[str]) -> list[str]:
    project = (await client.project()).id
    requests = [
        message("CreateTaskRequest", task=message("Task", project_id=project, title=title))
        for title in titles
    ]
    done = await client("TaskService/BatchCreateTasks", requests=requests)
    return [task.id for task in done.tasks]


async def test_pages_stop_at_the_group_limit(fresh_url: str, start_repogate: StartRepogate) -> None:
    app = await start_repogate(
        database_url=fresh_url, schema_path=str(TASKS), purge_interval=0, aggregate_max_groups=7
    )
    client = Client(app.channel)
    await tasks(client, [f"g{i}" for i in range(10)])

    first = await client(AGGREGATE, page_size=5, **BY_TITLE)
    second = await client(AGGREGATE, page_size=5, page_token=first.next_page_token, **BY_TITLE)
    beyond = await fails(
        client(AGGREGATE, page_size=5, page_token=second.next_page_token, **BY_TITLE)
    )

    titles = [key["title"] for page in (first, second) for key, _ in groups_of(page)]
    assert titles == [f"g{i}" for i in range(7)]
    assert beyond.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (list(beyond.violations), beyond.reason) == (["page_token"], "TOO_MANY_GROUPS")
    # Within the limit, the last page says there is no more.
    seven = await client(AGGREGATE, filter='title < "g7"', page_size=50, **BY_TITLE)
    assert (len(seven.groups), seven.next_page_token) == (7, "")


@pytest.fixture
async def own_postgresql(postgresql_url: str) -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own: it locks a table there."""
    async with fresh_database() as url:
        yield url


async def waiting_for_locks(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        )
        return int(found.scalar_one())


async def test_a_slow_aggregate_is_cancelled_after_the_aggregate_timeout(
    own_postgresql: str, start_repogate: StartRepogate
) -> None:
    app = await start_repogate(
        database_url=own_postgresql,
        schema_path=str(TASKS),
        purge_interval=0,
        aggregate_timeout=0.5,
        db_pool_size=4,
    )
    client = Client(app.channel)  # its calls set a 20 s deadline
    (task,) = await tasks(client, ["t"])
    engine = create_engine(own_postgresql)

    async def nobody_waits() -> bool:
        return await waiting_for_locks(engine) == 0

    try:
        async with engine.connect() as holder:
            # Every statement on the table waits until the holder lets go.
            await holder.execute(text("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE"))
            for call in (
                client(AGGREGATE, **BY_TITLE),
                client("TaskService/RankTask", id=task, order_by="priority"),
            ):
                error = await fails(call)
                assert (error.code, error.reason) == (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "STATEMENT_TIMEOUT",
                )
                assert "REPOGATE_AGGREGATE_TIMEOUT" in error.message
                # Cancelled on the server, not left waiting there.
                await eventually(nobody_waits, "the statement's cancellation on the server")
            await holder.rollback()
        page = await client(AGGREGATE, **BY_TITLE)
        assert groups_of(page) == [({"title": "t"}, {"count": 1})]
    finally:
        await engine.dispose()

"""order_by on fields that may be unset, through a real server on SQLite and PostgreSQL:
the built-ins' `completed_time`, `start_time`, `finish_time` and `last_login_time`, and a
declared `optional` Timestamp (tests/schemas/tasks: Task.due_time).

An unset value sorts after every value: last ascending, first descending; the id breaks
ties. Every page size from 1 to 3 walks the same rows, in the same order, as one unpaged
list, across the boundary between values and unset ones, in both directions; another
tenant's rows, which hold the same values, never appear.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from repogate.v1 import job_pb2, session_pb2, user_pb2
from tests.conftest import Running
from tests.declared import Client
from tests.e2e.domain import Stubs, claim, enqueue, new_session, new_user
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

Term = tuple[str, bool]  # field, descending


def moment(item: Any, field: str) -> datetime | None:
    if not item.HasField(field):
        return None
    value: datetime = getattr(item, field).ToDatetime()
    return value


def value(item: Any, field: str) -> Any:
    return moment(item, field) if field.endswith("_time") else getattr(item, field)


def rank(x: Any, y: Any) -> int:
    """-1, 0 or 1 as `x` sorts before, with or after `y` ascending; None is the greatest."""
    if x == y:
        return 0
    if x is None or y is None:
        return 1 if x is None else -1
    return 1 if x > y else -1


def expected_order(items: list[Any], terms: list[Term]) -> list[str]:
    """`items` as order_by `terms` sorts them: unset after every value, the id last."""

    def compare(a: Any, b: Any) -> int:
        for field, descending in terms:
            ranked = rank(value(a, field), value(b, field))
            if ranked:
                return -ranked if descending else ranked
        return rank(uuid.UUID(a.id), uuid.UUID(b.id))

    return [item.id for item in sorted(items, key=functools.cmp_to_key(compare))]


def order_by(terms: list[Term]) -> str:
    return ", ".join(f"{field} desc" if descending else field for field, descending in terms)


def orders(field: str) -> list[list[Term]]:
    return [
        [(field, False)],
        [(field, True)],
        [(field, True), ("create_time", True)],
        [("create_time", False), (field, False)],
    ]


Listing = Callable[[str, str, int], Any]  # order_by, page_token, page_size -> a List call


async def walk(listing: Listing, text: str, plural: str, size: int) -> list[str]:
    """Every item's id in order_by `text`, page by page, `size` a page."""
    ids: list[str] = []
    token = ""
    while True:
        page = await listing(text, token, size)
        ids += [item.id for item in getattr(page, plural)]
        token = page.next_page_token
        if not token:
            return ids


async def check_orders(items: list[Any], field: str, listing: Listing, plural: str) -> None:
    for terms in orders(field):
        text = order_by(terms)
        expected = expected_order(items, terms)
        assert await walk(listing, text, plural, 1000) == expected, text
        for size in (1, 2, 3):
            assert await walk(listing, text, plural, size) == expected, (text, size)


# ------------------------------------------------------------ built-in resources


async def test_sessions_sort_by_completed_time(stubs: Stubs, tenant: str) -> None:
    sessions: list[session_pb2.Session] = []
    for t in (tenant, f"{tenant}-other"):
        user = await new_user(stubs, t)
        made = []
        for status in (1, 7, 2, 6, 1, 7, 3):  # CREATED, TERMINATED, ACTIVE, FAILED, ...
            made.append(await new_session(stubs, t, user.id, status=status))
        # One session finishes later through an update.
        done = session_pb2.Session(id=made[0].id, status=session_pb2.SESSION_STATUS_COMPLETED)
        request = session_pb2.UpdateSessionRequest(session=done)
        request.update_mask.paths.append("status")
        made[0] = await stubs.sessions.UpdateSession(request, metadata=md(t))
        if t == tenant:
            sessions = made
    assert 0 < sum(s.HasField("completed_time") for s in sessions) < len(sessions)

    def listing(text: str, token: str, size: int) -> Any:
        request = session_pb2.ListSessionsRequest(order_by=text, page_token=token, page_size=size)
        return stubs.sessions.ListSessions(request, metadata=md(tenant))

    await check_orders(sessions, "completed_time", listing, "sessions")


async def test_jobs_sort_by_start_and_finish_time(stubs: Stubs, tenant: str) -> None:
    jobs = [await enqueue(stubs, tenant, priority=p) for p in (5, 4, 3, 2, 1)]
    for _ in range(3):
        assert await claim(stubs, tenant) is not None
    complete = job_pb2.CompleteJobRequest(id=jobs[1].id)
    await stubs.jobs.CompleteJob(complete, metadata=md(tenant))
    listed = await stubs.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=md(tenant))
    await enqueue(stubs, f"{tenant}-other")

    def listing(text: str, token: str, size: int) -> Any:
        request = job_pb2.ListJobsRequest(order_by=text, page_token=token, page_size=size)
        return stubs.jobs.ListJobs(request, metadata=md(tenant))

    await check_orders(list(listed.jobs), "start_time", listing, "jobs")
    await check_orders(list(listed.jobs), "finish_time", listing, "jobs")


async def test_users_sort_by_last_login_time(stubs: Stubs, tenant: str) -> None:
    users = [await new_user(stubs, tenant, f"u{n}") for n in range(5)]
    for user in (users[3], users[0], users[4]):
        await stubs.users.RecordLogin(user_pb2.RecordLoginRequest(id=user.id), metadata=md(tenant))
    other = await new_user(stubs, f"{tenant}-other", "u0")
    await stubs.users.RecordLogin(
        user_pb2.RecordLoginRequest(id=other.id), metadata=md(f"{tenant}-other")
    )
    listed = await stubs.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))

    def listing(text: str, token: str, size: int) -> Any:
        request = user_pb2.ListUsersRequest(order_by=text, page_token=token, page_size=size)
        return stubs.users.ListUsers(request, metadata=md(tenant))

    await check_orders(list(listed.users), "last_login_time", listing, "users")


# ------------------------------------------------------------ a declared resource


async def test_tasks_sort_by_an_optional_timestamp(tasks_server: Running) -> None:
    client = Client(tasks_server.channel)
    other = client.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    made = []
    for who in (client, other):
        project = await who.project()
        for n, seconds in enumerate((None, 1_900_000_000, None, 1_800_000_000, 1_900_000_000)):
            due = {} if seconds is None else {"due_time": timestamp_pb2.Timestamp(seconds=seconds)}
            task = await who.task(project.id, f"t{n}", priority=n % 2, **due)
            if who is client:
                made.append(task)

    def listing(text: str, token: str, size: int) -> Any:
        return client("TaskService/ListTasks", order_by=text, page_token=token, page_size=size)

    await check_orders(made, "due_time", listing, "tasks")
    # Ties on a value and among the unset ones are broken by the id, within a priority too.
    terms = [("priority", False), ("due_time", True)]
    assert await walk(listing, order_by(terms), "tasks", 2) == expected_order(made, terms)

    # A token carries its position, an unset value included, only for its own query.
    first = await client("TaskService/ListTasks", order_by="due_time desc", page_size=1)
    assert not first.tasks[0].HasField("due_time")
    moved = client("TaskService/ListTasks", order_by="due_time", page_token=first.next_page_token)
    assert (await fails(moved)).code == grpc.StatusCode.INVALID_ARGUMENT
    stranger = other(
        "TaskService/ListTasks", order_by="due_time desc", page_token=first.next_page_token
    )
    assert (await fails(stranger)).code == grpc.StatusCode.INVALID_ARGUMENT

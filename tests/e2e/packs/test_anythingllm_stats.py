"""The AnythingLLM pack (schemas/anythingllm, seed 001) end to end, on SQLite and
PostgreSQL: the JobRepository's statistics (jobs by status and type, average progress, jobs
per day) answered by AggregateJobs, and a job's queue position by RankJob, each checked
against the values computed in Python from the jobs the test made."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC
from typing import Any

import grpc
import pytest

from tests.declared import Client, ids
from tests.e2e.grouping import Group, agg, bucket, every_group
from tests.e2e.packs import llm
from tests.e2e.packs.llm import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    QUESTION,
    UPLOAD,
    create_job,
    set_status,
    stored,
)
from tests.e2e.packs.support import listed
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = llm.PACK, llm.EXTENSIONS  # what the pack_server fixture serves
PACKAGE = llm.PACKAGE  # the client fixture's
AGGREGATE, RANK = "JobService/AggregateJobs", "JobService/RankJob"
STATUSES = [PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED]


async def aggregate(c: Client, **request: Any) -> list[Group]:
    """Every group of AggregateJobs, page by page."""
    pages = await every_group(lambda **r: c(AGGREGATE, **r), **request)
    return [group for page in pages for group in page]


async def some_jobs(c: Client, n: int, seed: int) -> list[Any]:
    """`n` jobs of both types, each moved to a status (and a progress) drawn at random."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(n):
        job = await create_job(c, rng.choice([UPLOAD, QUESTION]), workspace_id="w1")
        status = rng.choice(STATUSES)
        if status != PENDING:
            job = await set_status(c, job.id, status, progress=float(rng.randint(0, 100)))
        jobs.append(job)
    return jobs


def keys(job: Any) -> tuple[str, str]:
    return stored("JobStatus", job.status), stored("JobType", job.job_type)


async def test_jobs_by_status_and_type_in_one_call(client: Client) -> None:
    jobs = await some_jobs(client, 14, seed=1)
    deleted = await create_job(client, QUESTION)
    await client("JobService/DeleteJob", id=deleted.id)

    both = await aggregate(
        client, group_by=["status", "job_type"], aggregations=[agg("count", alias="jobs")]
    )
    by_status = await aggregate(client, group_by=["status"], aggregations=[agg("count")])

    expected = Counter(keys(job) for job in jobs)
    assert {(k["status"], k["job_type"]): v["jobs"] for k, v in both} == expected
    statuses = Counter(status for status, _ in expected.elements())
    assert {k["status"]: v["count"] for k, v in by_status} == statuses
    # The soft-deleted job counts again with show_deleted.
    again = await aggregate(client, aggregations=[agg("count")], show_deleted=True)
    assert again == [({}, {"count": len(jobs) + 1})]


async def test_average_progress_of_processing_jobs_per_type(client: Client) -> None:
    jobs = await some_jobs(client, 16, seed=2)
    processing = [j for j in jobs if j.status == PROCESSING]

    groups = await aggregate(
        client,
        filter='status = "processing"',
        group_by=["job_type"],
        aggregations=[agg("avg", "progress", "progress"), agg("count", alias="jobs")],
    )

    per_type = defaultdict(list)
    for job in processing:
        per_type[stored("JobType", job.job_type)].append(job.progress)
    assert {k["job_type"]: v["jobs"] for k, v in groups} == {t: len(p) for t, p in per_type.items()}
    for key, values in groups:
        mine = per_type[key["job_type"]]
        assert values["progress"] == pytest.approx(sum(mine) / len(mine))


async def test_jobs_per_day(client: Client) -> None:
    jobs = await some_jobs(client, 5, seed=3)

    groups = await aggregate(
        client,
        group_by=["create_time.day"],
        aggregations=[agg("count", alias="jobs"), agg("max", "progress", "furthest")],
        order_by="create_time.day desc",
    )

    days: dict[str | None, list[Any]] = defaultdict(list)
    for job in jobs:
        days[bucket(job.create_time.ToDatetime(tzinfo=UTC), "day")].append(job)
    assert groups == [
        (
            {"create_time.day": day},
            {"jobs": len(days[day]), "furthest": max(j.progress for j in days[day])},
        )
        for day in sorted(days, key=str, reverse=True)
    ]


async def test_queue_position_is_the_rank_among_pending_jobs(client: Client) -> None:
    one_by_one = [await create_job(client) for _ in range(4)]
    requests = [
        client.message("CreateJobRequest", job=client.message("Job", job_type=QUESTION))
        for _ in range(3)
    ]
    # One statement: one create_time for the three, which take consecutive places by id.
    batch = (await client("JobService/BatchCreateJobs", requests=requests)).jobs
    await set_status(client, one_by_one[1].id, PROCESSING)
    await set_status(client, batch[1].id, CANCELLED)
    pending = 'status = "pending"'
    queue = ids(await listed(client, "Job", filter=pending, order_by="create_time"))

    for job in [*one_by_one, *batch]:
        answer = await client(RANK, id=job.id, filter=pending, order_by="create_time")
        place = queue.index(job.id) + 1 if job.id in queue else 0  # 0: not waiting
        assert (answer.rank, answer.total_size) == (place, len(queue))
    assert len(queue) == 5
    assert sorted(queue[3:]) == sorted([batch[0].id, batch[2].id])


async def test_statistics_and_positions_stay_in_the_tenant(client: Client) -> None:
    mine = await some_jobs(client, 4, seed=4)
    theirs = client.as_tenant(client.tenant + "-other")
    their_jobs = await some_jobs(theirs, 3, seed=5)
    count = [agg("count"), agg("sum", "progress", "progress")]

    assert await aggregate(client, aggregations=count) == [
        ({}, {"count": len(mine), "progress": sum(j.progress for j in mine)})
    ]
    assert await aggregate(theirs, aggregations=count) == [
        ({}, {"count": len(their_jobs), "progress": sum(j.progress for j in their_jobs)})
    ]
    stranger = theirs.as_tenant(client.tenant + "-nobody")
    assert await aggregate(stranger, group_by=["status"], aggregations=count) == []
    error = await fails(theirs(RANK, id=mine[0].id, order_by="create_time"))
    assert error.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"group_by": ["create_time:day"]}, "group_by[0]"),  # a bucket is `create_time.day`
        ({"group_by": ["workspace"]}, "group_by[0]"),
        ({"aggregations": [agg("avg", "job_type")]}, "aggregations[0].field"),
        ({"aggregations": [agg("sum", "workspace_id")]}, "aggregations[0].field"),
        ({"aggregations": [agg("count")], "order_by": "jobs desc"}, "order_by"),
    ],
)
async def test_a_bad_statistics_request_names_its_field(
    client: Client, request_: dict[str, Any], field: str
) -> None:
    await create_job(client)

    error = await fails(client(AGGREGATE, **request_))

    assert (error.code, list(error.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])

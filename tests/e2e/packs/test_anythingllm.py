"""The AnythingLLM pack (schemas/anythingllm), end to end on SQLite and PostgreSQL: each
method of the seed's JobRepository and BaseRepository answered over gRPC as
schemas/anythingllm/README.md maps it. Statistics and the queue position:
test_anythingllm_stats.py; the seed's CacheRepository: test_anythingllm_cache.py."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from tests.declared import Client
from tests.e2e.domain import plain, struct
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
)
from tests.e2e.packs.support import call, listed, mask, transact, unpacked
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = llm.PACK, llm.EXTENSIONS  # what the pack_server fixture serves
PACKAGE = llm.PACKAGE  # the client fixture's
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNT_MODE_EXACT = 2


# ------------------------------------------------------------ JobRepository


async def test_create_job_with_workspace_and_metadata(client: Client) -> None:
    job = await create_job(
        client, UPLOAD, workspace_id="workspace_123", metadata={"project": "test"}
    )
    bare = await create_job(client, QUESTION)

    assert (job.job_type, job.status, job.progress) == (UPLOAD, PENDING, 0)
    assert (job.workspace_id, plain(job.metadata)) == ("workspace_123", {"project": "test"})
    assert not job.HasField("start_time")
    assert not job.HasField("completed_time")
    assert not bare.HasField("workspace_id")
    assert await client("JobService/GetJob", id=job.id) == job
    for text in ('workspace_id = "workspace_123"', 'metadata.project = "test"'):
        assert [j.id for j in await listed(client, "Job", filter=text)] == [job.id], text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"job_type": 0}, "job.job_type"),
        ({"job_type": UPLOAD, "workspace_id": ""}, "job.workspace_id"),
        ({"job_type": UPLOAD, "workspace_id": "w" * 129}, "job.workspace_id"),
    ],
)
async def test_create_job_refuses_bad_input(
    client: Client, fields: dict[str, Any], field: str
) -> None:
    error = await fails(client("JobService/CreateJob", job=client.message("Job", **fields)))

    assert (error.code, list(error.violations)) == (INVALID, [field])
    assert (await client("JobService/CountJobs")).total_size == 0


async def test_update_job_status_sets_progress_and_stamps_times(client: Client) -> None:
    job = await create_job(client)

    started = await set_status(client, job.id, PROCESSING, progress=50.0)
    going = await set_status(client, job.id, PROCESSING, progress=75.0)
    done = await set_status(client, job.id, COMPLETED, result={"chunks": 12})

    assert (started.status, started.progress) == (PROCESSING, 50.0)
    assert started.HasField("start_time")
    assert not started.HasField("completed_time")
    assert started.start_time.ToDatetime() >= job.create_time.ToDatetime()
    # The first start stays: going on does not restart the job.
    assert going.start_time == started.start_time
    assert going.progress == 75.0
    assert (done.status, done.progress) == (COMPLETED, 75.0)
    assert done.start_time == started.start_time
    assert done.completed_time.ToDatetime() >= going.update_time.ToDatetime()
    assert plain(done.result) == {"chunks": 12}
    assert await client("JobService/GetJob", id=job.id) == done
    for text in ('status = "completed"', f'start_time = "{started.start_time.ToJsonString()}"'):
        assert (await client("JobService/CountJobs", filter=text)).total_size == 1, text


async def test_update_job_status_retried_with_its_request_id_is_done_once(client: Client) -> None:
    job = await create_job(client)
    key = str(uuid.uuid4())
    first = await set_status(client, job.id, PROCESSING, progress=10.0, request_id=key)
    later = await set_status(client, job.id, PROCESSING, progress=60.0)

    retried = await set_status(client, job.id, PROCESSING, progress=10.0, request_id=key)

    assert retried == first
    assert await client("JobService/GetJob", id=job.id) == later


async def test_update_job_status_to_failed_and_back(client: Client) -> None:
    job = await create_job(client)
    await set_status(client, job.id, PROCESSING)

    failed = await set_status(client, job.id, FAILED, error_message="parser crashed")
    retried = await set_status(client, job.id, PENDING, progress=0.0)

    assert (failed.status, failed.error_message) == (FAILED, "parser crashed")
    assert failed.HasField("completed_time")
    assert retried.status == PENDING
    assert not retried.HasField("completed_time")
    assert retried.error_message == "parser crashed"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"status": 0}, "status"),
        ({"status": 99}, "status"),
        ({"status": PROCESSING, "progress": 100.5}, "progress"),
        ({"status": PROCESSING, "progress": -1.0}, "progress"),
        ({"status": FAILED, "error_message": "x" * 4001}, "error_message"),
        ({"status": PROCESSING, "etag": "not an etag"}, "etag"),
        ({"status": COMPLETED, "result": struct({"score": float("nan")})}, "result"),
    ],
)
async def test_update_job_status_refuses_bad_input(
    client: Client, fields: dict[str, Any], field: str
) -> None:
    job = await create_job(client)

    error = await fails(client("JobService/UpdateJobStatus", id=job.id, **fields))

    assert (error.code, list(error.violations)) == (INVALID, [field])
    assert await client("JobService/GetJob", id=job.id) == job


async def test_update_job_status_of_a_job_it_cannot_reach(client: Client) -> None:
    theirs = client.as_tenant(client.tenant + "-other")
    their_job = await create_job(theirs)
    mine = await create_job(client)
    await client("JobService/DeleteJob", id=mine.id)

    for job_id in (their_job.id, str(uuid.uuid4())):
        error = await fails(set_status(client, job_id, PROCESSING))
        assert error.code == NOT_FOUND
    deleted = await fails(set_status(client, mine.id, PROCESSING))
    assert (deleted.code, deleted.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESOURCE_DELETED",
    )
    stale = await fails(set_status(theirs, their_job.id, PROCESSING, etag="999"))
    assert stale.code == grpc.StatusCode.ABORTED
    assert await theirs("JobService/GetJob", id=their_job.id) == their_job


async def test_list_jobs_with_filters_and_pagination(client: Client) -> None:
    plan = [
        (UPLOAD, "w1", COMPLETED),
        (QUESTION, "w1", PENDING),
        (UPLOAD, "w2", COMPLETED),
        (UPLOAD, "w1", FAILED),
        (QUESTION, "w2", COMPLETED),
        (UPLOAD, "w1", COMPLETED),
        (QUESTION, "w1", PROCESSING),
    ]
    jobs = []
    for n, (job_type, workspace, status) in enumerate(plan):
        job = await create_job(client, job_type, workspace_id=workspace, metadata={"n": n})
        if status != PENDING:
            job = await set_status(client, job.id, status)
        jobs.append(job)
    cases = {
        'status = "completed"': lambda j: j.status == COMPLETED,
        'job_type = "question_processing"': lambda j: j.job_type == QUESTION,
        'workspace_id = "w1" AND status != "pending"': lambda j: (
            j.workspace_id == "w1" and j.status != PENDING
        ),
        'status IN ("completed", "failed")': lambda j: j.status in (COMPLETED, FAILED),
        "metadata.n = 3": lambda j: plain(j.metadata) == {"n": 3},
        f'create_time > "{jobs[2].create_time.ToJsonString()}"': lambda j: j in jobs[3:],
    }
    size = 2
    for text, wanted in cases.items():
        expected = [j.id for j in jobs if wanted(j)]
        for page in (1, 2):
            answer = await client(
                "JobService/ListJobs",
                filter=text,
                page_size=size,
                skip=(page - 1) * size,
                count_mode=COUNT_MODE_EXACT,
            )
            assert [j.id for j in answer.jobs] == expected[(page - 1) * size : page * size], text
            assert answer.total_size == len(expected), text


async def test_get_by_id_or_raise(client: Client) -> None:
    job = await create_job(client)
    theirs = client.as_tenant(client.tenant + "-other")

    assert await client("JobService/GetJob", id=job.id) == job
    for c, job_id in ((client, str(uuid.uuid4())), (theirs, job.id)):
        error = await fails(c("JobService/GetJob", id=job_id))
        assert (error.code, error.reason) == (NOT_FOUND, "RESOURCE_NOT_FOUND")
    bad = await fails(client("JobService/GetJob", id="invalid_id"))
    assert (bad.code, list(bad.violations)) == (INVALID, ["id"])


MONITORED = ("status", "progress", "start_time", "completed_time")


async def test_progress_monitoring_reads_the_status_alone(client: Client) -> None:
    """GetJob with a read_mask: the status, progress and times, without the metadata
    and result a job carries; a key of the metadata by its path."""
    job = await create_job(client, metadata={"project": "test", "pages": ["p"] * 500})
    going = await set_status(client, job.id, PROCESSING, progress=40.0)

    watched = await client("JobService/GetJob", id=job.id, read_mask=mask(*MONITORED))
    labelled = await client("JobService/GetJob", id=job.id, read_mask=mask("metadata.project"))

    expected = client.message("Job")
    expected.CopyFrom(going)
    for field, _ in going.ListFields():
        if field.name not in MONITORED:
            expected.ClearField(field.name)
    assert watched == expected
    assert (watched.status, watched.progress, watched.id) == (PROCESSING, 40.0, "")
    assert plain(labelled.metadata) == {"project": "test"}
    assert await client("JobService/GetJob", id=job.id) == going  # whole without a mask
    theirs = client.as_tenant(client.tenant + "-other")
    error = await fails(theirs("JobService/GetJob", id=job.id, read_mask=mask("status")))
    assert error.code == NOT_FOUND
    for paths in (("state",), ("status.value",), ("*", "status")):
        bad = await fails(client("JobService/GetJob", id=job.id, read_mask=mask(*paths)))
        assert (bad.code, list(bad.violations)) == (INVALID, ["read_mask"]), paths


async def test_cleanup_of_finished_jobs(client: Client) -> None:
    old = [await create_job(client) for _ in range(4)]
    for job, status in zip(old, (COMPLETED, FAILED, CANCELLED, PROCESSING), strict=True):
        await set_status(client, job.id, status)
    # The cutoff is the server's time of a write ("older than 30 days" in the seed's terms).
    marker = await set_status(client, (await create_job(client)).id, COMPLETED)
    cutoff = marker.completed_time.ToJsonString()
    finished = 'status IN ("completed", "failed", "cancelled")'

    doomed = await listed(client, "Job", filter=f'{finished} AND completed_time < "{cutoff}"')
    requests = [client.message("DeleteJobRequest", id=j.id, force=True) for j in doomed]
    await client("JobService/BatchDeleteJobs", requests=requests)

    assert sorted(j.id for j in doomed) == sorted(j.id for j in old[:3])
    left = await listed(client, "Job", show_deleted=True)
    assert [j.id for j in left] == [old[3].id, marker.id]


# ------------------------------------------------------------ BaseRepository


async def test_bulk_create_update_and_delete(client: Client) -> None:
    requests = [
        client.message("CreateJobRequest", job=client.message("Job", job_type=t, workspace_id="w"))
        for t in (UPLOAD, QUESTION, UPLOAD)
    ]

    created = (await client("JobService/BatchCreateJobs", requests=requests)).jobs
    change = client.message("Job", id=created[0].id, metadata=struct({"project": "moved"}))
    updated = await client("JobService/UpdateJob", job=change, update_mask=mask("metadata"))
    await client("JobService/DeleteJob", id=created[1].id)

    assert [j.job_type for j in created] == [UPLOAD, QUESTION, UPLOAD]
    assert plain(updated.metadata) == {"project": "moved"}
    # One statement created them: one create_time, so the list's order is by id.
    assert sorted(j.id for j in await listed(client, "Job")) == sorted(
        [created[0].id, created[2].id]
    )
    for path in ("status", "progress", "job_type"):
        error = await fails(
            client(
                "JobService/UpdateJob",
                job=client.message("Job", id=created[0].id),
                update_mask=mask(path),
            )
        )
        assert (error.code, list(error.violations)) == (INVALID, ["update_mask"]), path


async def test_two_creates_in_one_transaction(client: Client) -> None:
    job = client.message("Job", job_type=UPLOAD)
    bad = client.message("Job", job_type=QUESTION, workspace_id="")

    def create(each: Any) -> Any:
        return call(client, "JobService/CreateJob", client.message("CreateJobRequest", job=each))

    error = await fails(transact(client, create(job), create(bad)))
    calls = [create(job), create(job)]
    answers = unpacked(calls, await transact(client, *calls))

    assert error.code == INVALID
    assert sorted(j.id for j in await listed(client, "Job")) == sorted(a.id for a in answers)

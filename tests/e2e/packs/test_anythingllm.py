"""The AnythingLLM pack (schemas/anythingllm), end to end on SQLite and PostgreSQL: each
method of the seed's JobRepository and BaseRepository answered over gRPC as
schemas/anythingllm/README.md maps it, and the seed's CacheRepository calls answered by
repogate.v1.CacheService. Statistics and the queue position: test_anythingllm_stats.py."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from repogate.v1 import cache_pb2, cache_pb2_grpc
from tests.conftest import Running
from tests.declared import Client
from tests.e2e.domain import plain, struct
from tests.e2e.packs import llm
from tests.e2e.packs.llm import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PACKAGE,
    PENDING,
    PROCESSING,
    QUESTION,
    UPLOAD,
    create_job,
    set_status,
)
from tests.e2e.packs.support import call, listed, mask, transact, unpacked
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = llm.PACK, llm.EXTENSIONS  # what the pack_server fixture serves
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNT_MODE_EXACT = 2


@pytest.fixture
def client(pack_server: Running) -> Client:
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


@pytest.fixture
def cache(pack_server: Running) -> cache_pb2_grpc.CacheServiceStub:
    return cache_pb2_grpc.CacheServiceStub(pack_server.channel)


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


# ------------------------------------------------------------ CacheRepository


async def test_cache_set_get_delete(cache: cache_pb2_grpc.CacheServiceStub, client: Client) -> None:
    tenant = md(client.tenant)
    job = await create_job(client, workspace_id="w1")
    value = json.dumps({"id": job.id, "status": "pending"}).encode()

    # The seed's cache-aside read of a job: miss, read the job, set with a TTL, hit.
    miss = await cache.Get(cache_pb2.GetRequest(key=f"job:{job.id}"), metadata=tenant)
    await cache.Set(
        cache_pb2.SetRequest(key=f"job:{job.id}", value=value, ttl=Duration(seconds=3600)),
        metadata=tenant,
    )
    hit = await cache.Get(cache_pb2.GetRequest(key=f"job:{job.id}"), metadata=tenant)
    theirs = await cache.Get(
        cache_pb2.GetRequest(key=f"job:{job.id}"), metadata=md(client.tenant + "-other")
    )
    deleted = await cache.Delete(cache_pb2.DeleteRequest(keys=[f"job:{job.id}"]), metadata=tenant)

    assert not miss.found
    assert (hit.found, json.loads(hit.value)) == (True, {"id": job.id, "status": "pending"})
    assert not theirs.found
    assert deleted.deleted_count == 1
    assert not (await cache.Get(cache_pb2.GetRequest(key=f"job:{job.id}"), metadata=tenant)).found


async def test_cache_set_many_get_many(
    cache: cache_pb2_grpc.CacheServiceStub, client: Client
) -> None:
    tenant = md(client.tenant)
    entries = [cache_pb2.CacheEntry(key=f"key{n}", value=f"value{n}".encode()) for n in (1, 2)]

    await cache.SetMany(cache_pb2.SetManyRequest(entries=entries), metadata=tenant)
    got = await cache.GetMany(
        cache_pb2.GetManyRequest(keys=["key1", "absent", "key2"]), metadata=tenant
    )

    assert [(e.key, e.value) for e in got.entries] == [(e.key, e.value) for e in entries]


async def test_cache_invalidate_pattern_and_get_keys(
    cache: cache_pb2_grpc.CacheServiceStub, client: Client
) -> None:
    tenant = md(client.tenant)
    keys = ["workspace:w1:docs", "workspace:w1:chat", "workspace:w2:docs", "session:s1"]
    entries = [cache_pb2.CacheEntry(key=k, value=b"1") for k in keys]
    await cache.SetMany(cache_pb2.SetManyRequest(entries=entries), metadata=tenant)

    sessions = await cache.ListKeys(cache_pb2.ListKeysRequest(pattern="session:*"), metadata=tenant)
    invalidated = await cache.InvalidatePattern(
        cache_pb2.InvalidatePatternRequest(pattern="workspace:w1:*"), metadata=tenant
    )
    left = await cache.ListKeys(cache_pb2.ListKeysRequest(pattern="*"), metadata=tenant)

    assert list(sessions.keys) == ["session:s1"]
    assert invalidated.deleted_count == 2
    assert sorted(left.keys) == ["session:s1", "workspace:w2:docs"]


async def test_cache_increment_and_expire(
    cache: cache_pb2_grpc.CacheServiceStub, client: Client
) -> None:
    tenant = md(client.tenant)

    first = await cache.Increment(
        cache_pb2.IncrementRequest(key="counter", amount=5), metadata=tenant
    )
    second = await cache.Increment(
        cache_pb2.IncrementRequest(key="counter", amount=5), metadata=tenant
    )
    expired = await cache.Expire(
        cache_pb2.ExpireRequest(key="counter", ttl=Duration(seconds=300)), metadata=tenant
    )
    gone = await cache.Expire(
        cache_pb2.ExpireRequest(key="counter", ttl=Duration()), metadata=tenant
    )

    assert (first.value, second.value) == (5, 10)
    assert expired.existed
    assert gone.existed
    assert not (await cache.Get(cache_pb2.GetRequest(key="counter"), metadata=tenant)).found

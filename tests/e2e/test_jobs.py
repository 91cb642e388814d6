"""JobService through the real server, on SQLite and PostgreSQL: the life cycle and
its refusals, claiming by concurrent workers, queue positions, statistics and
purging."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from repogate.v1 import job_pb2 as pb
from tests.e2e.domain import Stubs, claim, enqueue, plain, struct
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def get(s: Stubs, tenant: str, id_: str) -> pb.Job:
    return await s.jobs.GetJob(pb.GetJobRequest(id=id_), metadata=md(tenant))


async def complete(s: Stubs, tenant: str, id_: str, **result: object) -> pb.Job:
    return await s.jobs.CompleteJob(
        pb.CompleteJobRequest(id=id_, result=struct(result)), metadata=md(tenant)
    )


async def fail(s: Stubs, tenant: str, id_: str, why: str = "boom") -> pb.Job:
    return await s.jobs.FailJob(pb.FailJobRequest(id=id_, error_message=why), metadata=md(tenant))


async def cancel(s: Stubs, tenant: str, id_: str) -> pb.Job:
    return await s.jobs.CancelJob(pb.CancelJobRequest(id=id_), metadata=md(tenant))


async def progress(s: Stubs, tenant: str, id_: str, percent: int) -> pb.Job:
    return await s.jobs.UpdateJobProgress(
        pb.UpdateJobProgressRequest(id=id_, progress=percent), metadata=md(tenant)
    )


async def position(s: Stubs, tenant: str, id_: str) -> pb.GetQueuePositionResponse:
    return await s.jobs.GetQueuePosition(pb.GetQueuePositionRequest(id=id_), metadata=md(tenant))


async def statistics(s: Stubs, tenant: str, filter_: str = "") -> pb.GetJobStatisticsResponse:
    return await s.jobs.GetJobStatistics(
        pb.GetJobStatisticsRequest(filter=filter_), metadata=md(tenant)
    )


def seconds(job: pb.Job) -> float:
    return (job.finish_time.ToDatetime() - job.start_time.ToDatetime()).total_seconds()


# ------------------------------------------------------------ life cycle


async def test_a_job_runs_from_enqueue_to_completion(stubs: Stubs, tenant: str) -> None:
    created = await enqueue(stubs, tenant, "render", priority=5, payload=struct({"page": 1}))
    claimed = await claim(stubs, tenant, "w1")
    assert claimed is not None
    halfway = await progress(stubs, tenant, created.id, 50)
    done = await complete(stubs, tenant, created.id, pages=3)

    assert created.status == pb.JOB_STATUS_PENDING
    assert (created.progress, created.priority) == (0, 5)
    assert created.enqueue_time == created.create_time
    assert not created.HasField("start_time")
    assert (claimed.id, claimed.status, claimed.worker_id) == (
        created.id,
        pb.JOB_STATUS_RUNNING,
        "w1",
    )
    assert claimed.HasField("start_time")
    assert halfway.progress == 50
    assert halfway.start_time == claimed.start_time
    assert (done.status, done.progress, plain(done.result)) == (
        pb.JOB_STATUS_COMPLETED,
        100,
        {"pages": 3.0},
    )
    assert done.finish_time.ToDatetime() >= done.start_time.ToDatetime()
    assert plain(done.payload) == {"page": 1.0}
    assert await get(stubs, tenant, created.id) == done


async def test_fail_and_cancel(stubs: Stubs, tenant: str) -> None:
    failing, running, pending = [await enqueue(stubs, tenant) for _ in range(3)]
    assert [(await claim(stubs, tenant)), (await claim(stubs, tenant))] == [
        await get(stubs, tenant, failing.id),
        await get(stubs, tenant, running.id),
    ]

    failed = await fail(stubs, tenant, failing.id, "disk full")
    cancelled_running = await cancel(stubs, tenant, running.id)
    cancelled_pending = await cancel(stubs, tenant, pending.id)

    assert (failed.status, failed.error_message) == (pb.JOB_STATUS_FAILED, "disk full")
    assert failed.HasField("finish_time")
    assert cancelled_running.status == pb.JOB_STATUS_CANCELLED
    assert cancelled_running.HasField("start_time")
    assert cancelled_pending.status == pb.JOB_STATUS_CANCELLED
    assert not cancelled_pending.HasField("start_time")
    assert cancelled_pending.HasField("finish_time")
    missing = await fails(fail(stubs, tenant, pending.id, ""))
    assert missing.violations == {"error_message": "is required"}
    too_long = await fails(fail(stubs, tenant, pending.id, "x" * 4097))
    assert list(too_long.violations) == ["error_message"]
    traced = await enqueue(stubs, tenant)
    await claim(stubs, tenant)
    trace = "Traceback (most recent call last):\n  File ...\nValueError: bad"
    assert (await fail(stubs, tenant, traced.id, trace)).error_message == trace


@pytest.mark.parametrize(
    ("state", "action", "target"),
    [
        ("pending", "complete", "completed"),
        ("pending", "fail", "failed"),
        ("completed", "complete", "completed"),
        ("completed", "cancel", "cancelled"),
        ("failed", "complete", "completed"),
        ("cancelled", "fail", "failed"),
        ("cancelled", "cancel", "cancelled"),
    ],
)
async def test_an_illegal_transition_names_both_states_and_changes_nothing(
    stubs: Stubs, tenant: str, state: str, action: str, target: str
) -> None:
    job = await enqueue(stubs, tenant)
    if state != "pending":
        await claim(stubs, tenant)
        finish = {"completed": complete, "failed": fail, "cancelled": cancel}[state]
        await finish(stubs, tenant, job.id)
    before = await get(stubs, tenant, job.id)
    act = {"complete": complete, "fail": fail, "cancel": cancel}[action]

    error = await fails(act(stubs, tenant, job.id))

    assert (error.code, error.reason) == (FAILED_PRECONDITION, "INVALID_STATUS_TRANSITION")
    assert (error.metadata["from"], error.metadata["to"]) == (state, target)
    assert f"from {state} to {target}" in error.message
    assert await get(stubs, tenant, job.id) == before


async def test_progress_is_for_running_jobs_only(stubs: Stubs, tenant: str) -> None:
    job = await enqueue(stubs, tenant)

    pending = await fails(progress(stubs, tenant, job.id, 10))
    await claim(stubs, tenant)
    out_of_range = await fails(progress(stubs, tenant, job.id, 101))

    assert (pending.reason, pending.metadata["from"]) == ("INVALID_STATUS_TRANSITION", "pending")
    assert "reporting progress needs it running" in pending.message
    assert out_of_range.violations == {"progress": "must be from 0 to 100"}


async def test_status_changes_honour_the_etag(stubs: Stubs, tenant: str) -> None:
    job = await enqueue(stubs, tenant)
    claimed = await claim(stubs, tenant)
    assert claimed is not None
    moved = await progress(stubs, tenant, job.id, 20)

    stale = await fails(
        stubs.jobs.CompleteJob(
            pb.CompleteJobRequest(id=job.id, etag=claimed.etag), metadata=md(tenant)
        )
    )
    done = await stubs.jobs.CompleteJob(
        pb.CompleteJobRequest(id=job.id, etag=moved.etag), metadata=md(tenant)
    )

    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert done.status == pb.JOB_STATUS_COMPLETED


async def test_a_completion_retried_with_its_request_id_succeeds_again(
    stubs: Stubs, tenant: str
) -> None:
    job = await enqueue(stubs, tenant)
    await claim(stubs, tenant)
    request = pb.CompleteJobRequest(id=job.id, request_id=str(uuid.uuid4()))

    first = await stubs.jobs.CompleteJob(request, metadata=md(tenant))
    retry = await stubs.jobs.CompleteJob(request, metadata=md(tenant))

    assert retry == first


async def test_status_and_progress_are_output_only(stubs: Stubs, tenant: str) -> None:
    created = await stubs.jobs.CreateJob(
        pb.CreateJobRequest(
            job=pb.Job(job_type="t", status=pb.JOB_STATUS_COMPLETED, progress=90, worker_id="x")
        ),
        metadata=md(tenant),
    )
    masked = await fails(
        stubs.jobs.UpdateJob(
            pb.UpdateJobRequest(job=pb.Job(id=created.id), update_mask={"paths": ["status"]}),
            metadata=md(tenant),
        )
    )
    reprioritised = await stubs.jobs.UpdateJob(
        pb.UpdateJobRequest(job=pb.Job(id=created.id, priority=9, status=pb.JOB_STATUS_RUNNING)),
        metadata=md(tenant),
    )

    assert (created.status, created.progress, created.worker_id) == (pb.JOB_STATUS_PENDING, 0, "")
    assert masked.code == INVALID
    assert (reprioritised.priority, reprioritised.status) == (9, pb.JOB_STATUS_PENDING)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ClaimNextJobRequest(worker_id=""), "worker_id"),
        (pb.ClaimNextJobRequest(worker_id="w\n1"), "worker_id"),
        (pb.ClaimNextJobRequest(worker_id="w", job_types=["ok", "not ok"]), "job_types[1]"),
        (pb.ClaimNextJobRequest(worker_id="w", job_types=["t"] * 101), "job_types"),
    ],
)
async def test_claims_are_checked(
    stubs: Stubs, tenant: str, request_: pb.ClaimNextJobRequest, field: str
) -> None:
    await enqueue(stubs, tenant, "ok")

    error = await fails(stubs.jobs.ClaimNextJob(request_, metadata=md(tenant)))

    assert (error.code, list(error.violations)) == (INVALID, [field])
    assert (await position(stubs, tenant, (await first_job(stubs, tenant)).id)).position == 1


async def first_job(s: Stubs, tenant: str) -> pb.Job:
    listed = await s.jobs.ListJobs(pb.ListJobsRequest(page_size=1), metadata=md(tenant))
    return listed.jobs[0]


# ------------------------------------------------------------ claiming


async def test_claims_follow_priority_then_enqueue_order(stubs: Stubs, tenant: str) -> None:
    low = await enqueue(stubs, tenant, priority=0)
    high = await enqueue(stubs, tenant, priority=10)
    low_later = await enqueue(stubs, tenant, priority=0)
    high_later = await enqueue(stubs, tenant, priority=10)
    deleted = await enqueue(stubs, tenant, priority=99)
    await stubs.jobs.DeleteJob(pb.DeleteJobRequest(id=deleted.id), metadata=md(tenant))
    other = await enqueue(stubs, tenant + "-other", priority=100)

    order = []
    while (job := await claim(stubs, tenant)) is not None:
        order.append(job.id)

    assert order == [high.id, high_later.id, low.id, low_later.id]
    assert (await get(stubs, tenant + "-other", other.id)).status == pb.JOB_STATUS_PENDING


async def test_claims_by_job_type(stubs: Stubs, tenant: str) -> None:
    mail = await enqueue(stubs, tenant, "mail")
    render = await enqueue(stubs, tenant, "render", priority=5)
    await enqueue(stubs, tenant, "index")

    first = await claim(stubs, tenant, "w", "mail", "index")
    nothing_to_render = await claim(stubs, tenant, "w", "render", "x")
    none_left = await claim(stubs, tenant, "w", "render")

    assert first is not None
    assert first.id == mail.id
    assert nothing_to_render is not None
    assert nothing_to_render.id == render.id
    assert none_left is None


async def test_concurrent_workers_never_claim_a_job_twice(stubs: Stubs, tenant: str) -> None:
    jobs = await stubs.jobs.BatchCreateJobs(
        pb.BatchCreateJobsRequest(
            requests=[pb.CreateJobRequest(job=pb.Job(job_type="crunch")) for _ in range(60)]
        ),
        metadata=md(tenant),
    )

    async def worker(name: str) -> list[str]:
        got = []
        while (job := await claim(stubs, tenant, name)) is not None:
            assert job.worker_id == name
            got.append(job.id)
        return got

    claimed = await asyncio.gather(*(worker(f"w{i}") for i in range(20)))

    every = [id_ for ids in claimed for id_ in ids]
    assert Counter(every).most_common(1)[0][1] == 1
    assert set(every) == {job.id for job in jobs.jobs}
    listed = await stubs.jobs.ListJobs(
        pb.ListJobsRequest(filter='status = "running"', page_size=100), metadata=md(tenant)
    )
    assert {job.id: job.worker_id for job in listed.jobs} == {
        id_: f"w{i}" for i, ids in enumerate(claimed) for id_ in ids
    }


async def test_a_claim_retried_with_its_request_id_gets_the_same_job(
    stubs: Stubs, tenant: str
) -> None:
    await enqueue(stubs, tenant)
    await enqueue(stubs, tenant)
    request = pb.ClaimNextJobRequest(worker_id="w", request_id=str(uuid.uuid4()))

    first = await stubs.jobs.ClaimNextJob(request, metadata=md(tenant))
    retry = await stubs.jobs.ClaimNextJob(request, metadata=md(tenant))

    assert retry == first
    running = await stubs.jobs.CountJobs(
        pb.CountJobsRequest(filter='status = "running"'), metadata=md(tenant)
    )
    assert running.total_size == 1


# ------------------------------------------------------------ queue position


async def test_queue_positions_follow_claim_order(stubs: Stubs, tenant: str) -> None:
    a = await enqueue(stubs, tenant, "t", priority=1)
    b = await enqueue(stubs, tenant, "t", priority=3)
    c = await enqueue(stubs, tenant, "t", priority=1)
    elsewhere = await enqueue(stubs, tenant, "other", priority=50)

    before = {job.id: (await position(stubs, tenant, job.id)).position for job in (a, b, c)}
    claimed = await claim(stubs, tenant, "w", "t")
    after = {job.id: await position(stubs, tenant, job.id) for job in (a, b, c)}

    assert before == {b.id: 1, a.id: 2, c.id: 3}
    assert claimed is not None
    assert claimed.id == b.id
    assert (after[b.id].position, after[b.id].status) == (0, pb.JOB_STATUS_RUNNING)
    assert (after[a.id].position, after[c.id].position) == (1, 2)
    assert (await position(stubs, tenant, elsewhere.id)).position == 1


# ------------------------------------------------------------ statistics and purge


async def test_statistics_agree_with_what_was_done(stubs: Stubs, tenant: str) -> None:
    plan = {
        "mail": ["completed", "completed", "failed", "pending"],
        "render": ["running", "cancelled", "completed"],
    }
    finished: dict[str, list[pb.Job]] = {"mail": [], "render": []}
    for job_type, states in plan.items():
        for state in states:
            job = await enqueue(stubs, tenant, job_type)
            if state == "pending":
                continue
            claimed = await claim(stubs, tenant, "w", job_type)
            assert claimed is not None
            assert claimed.id == job.id
            if state == "completed":
                finished[job_type].append(await complete(stubs, tenant, job.id))
            elif state == "failed":
                finished[job_type].append(await fail(stubs, tenant, job.id))
            elif state == "cancelled":
                await cancel(stubs, tenant, job.id)

    stats = await statistics(stubs, tenant)
    only_mail = await statistics(stubs, tenant, 'job_type = "mail"')

    names = ("pending", "running", "completed", "failed", "cancelled")

    def counts(states: list[str]) -> dict[str, int]:
        tally = Counter(states)
        return {**{name: tally[name] for name in names}, "total": len(states)}

    def as_dict(message: pb.JobCounts) -> dict[str, int]:
        return {name: getattr(message, name) for name in (*names, "total")}

    every = [state for states in plan.values() for state in states]
    assert as_dict(stats.counts) == counts(every)
    assert [t.job_type for t in stats.job_types] == ["mail", "render"]
    for entry in stats.job_types:
        assert as_dict(entry.counts) == counts(plan[entry.job_type])
        ran = [seconds(job) for job in finished[entry.job_type]]
        mean = entry.average_run_time.ToTimedelta().total_seconds()
        # Millisecond precision on SQLite (julianday), microseconds on PostgreSQL.
        assert mean == pytest.approx(sum(ran) / len(ran), abs=2e-3)
    all_runs = [seconds(job) for jobs in finished.values() for job in jobs]
    overall = stats.average_run_time.ToTimedelta().total_seconds()
    assert overall == pytest.approx(sum(all_runs) / len(all_runs), abs=2e-3)
    assert as_dict(only_mail.counts) == counts(plan["mail"])
    assert [t.job_type for t in only_mail.job_types] == ["mail"]


async def test_statistics_of_an_empty_queue(stubs: Stubs, tenant: str) -> None:
    stats = await statistics(stubs, tenant)

    assert stats.counts.total == 0
    assert not stats.HasField("average_run_time")
    assert list(stats.job_types) == []


async def test_purge_removes_jobs_finished_before_the_cutoff(stubs: Stubs, tenant: str) -> None:
    done = [await enqueue(stubs, tenant) for _ in range(3)]
    for _ in done:
        await claim(stubs, tenant)
    await complete(stubs, tenant, done[0].id)
    await fail(stubs, tenant, done[1].id)
    await cancel(stubs, tenant, done[2].id)
    await stubs.jobs.DeleteJob(pb.DeleteJobRequest(id=done[0].id), metadata=md(tenant))
    late = await enqueue(stubs, tenant)
    started = await claim(stubs, tenant)
    assert started is not None
    await cancel(stubs, tenant, late.id)
    pending = await enqueue(stubs, tenant)
    other = tenant + "-other"
    theirs = await enqueue(stubs, other)
    await cancel(stubs, other, theirs.id)

    # The server's own clock: `late` started after the first three finished.
    purged = await stubs.jobs.PurgeJobs(
        pb.PurgeJobsRequest(cutoff_time=started.start_time), metadata=md(tenant)
    )

    assert purged.purged_count == 3
    left = await stubs.jobs.ListJobs(pb.ListJobsRequest(show_deleted=True), metadata=md(tenant))
    assert [job.id for job in left.jobs] == [late.id, pending.id]
    assert (await get(stubs, other, theirs.id)).status == pb.JOB_STATUS_CANCELLED
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    refused = await fails(
        stubs.jobs.PurgeJobs(pb.PurgeJobsRequest(cutoff_time=future), metadata=md(tenant))
    )
    assert refused.violations == {"cutoff_time": "must not be in the future"}

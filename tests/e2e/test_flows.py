"""The two flows the seeds' users built on, end to end through the real server: an
agent session (user -> session -> messages -> metrics -> completion) and a job
queue (enqueue -> workers claim, report, finish -> statistics -> purge)."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

import pytest

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2
from tests.e2e.domain import Stubs, append, claim, new_session, new_user, plain, struct
from tests.rpc import md

pytestmark = pytest.mark.e2e


async def test_an_agent_session(stubs: Stubs, tenant: str) -> None:
    exists = await stubs.users.CheckUserExists(
        user_pb2.CheckUserExistsRequest(email="ann@example.com", username="ann"),
        metadata=md(tenant),
    )
    assert (exists.email_taken, exists.username_taken) == (False, False)
    user = await new_user(stubs, tenant, "ann")
    await stubs.users.RecordLogin(user_pb2.RecordLoginRequest(id=user.id), metadata=md(tenant))
    quota = await stubs.sessions.CountActiveSessions(
        session_pb2.CountActiveSessionsRequest(user_id=user.id), metadata=md(tenant)
    )
    assert quota.active_count == 0

    session = await new_session(
        stubs, tenant, user.id, name="Build a site", preferences=struct({"model": "large"})
    )
    await stubs.sessions.UpdateSession(
        session_pb2.UpdateSessionRequest(
            session=session_pb2.Session(id=session.id, status=session_pb2.SESSION_STATUS_ACTIVE)
        ),
        metadata=md(tenant),
    )
    turns = [
        ("user", "user", {"text": "make me a portfolio"}),
        ("assistant", "assistant", {"text": "on it", "tool_calls": [{"name": "write_file"}]}),
        ("tool_use", "assistant", {"name": "write_file", "input": {"path": "index.html"}}),
        ("result", "assistant", {"status": "ok", "files": ["index.html"]}),
    ]
    usage = [(120, 40, "0.0021"), (300, 90, "0.0052"), (80, 10, "0.0009"), (20, 5, "0.0001")]
    for (kind, role, content), (tokens_in, tokens_out, cost) in zip(turns, usage, strict=True):
        await append(stubs, tenant, session.id, kind, content, role=role)
        await stubs.sessions.IncrementSessionMetrics(
            session_pb2.IncrementSessionMetricsRequest(
                id=session.id,
                total_messages=1,
                total_tool_calls=int(kind == "tool_use"),
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                total_cost_usd=cost,
            ),
            metadata=md(tenant),
        )
    active = await stubs.sessions.CountActiveSessions(
        session_pb2.CountActiveSessionsRequest(user_id=user.id), metadata=md(tenant)
    )
    done = await stubs.sessions.UpdateSession(
        session_pb2.UpdateSessionRequest(
            session=session_pb2.Session(id=session.id, status=session_pb2.SESSION_STATUS_COMPLETED),
            update_mask={"paths": ["status"]},
        ),
        metadata=md(tenant),
    )
    result = await stubs.messages.GetLatestMessage(
        message_pb2.GetLatestMessageRequest(session_id=session.id, message_type="result"),
        metadata=md(tenant),
    )
    history = await stubs.messages.ListMessages(
        message_pb2.ListMessagesRequest(filter=f'session_id = "{session.id}"'),
        metadata=md(tenant),
    )
    tool_turns = await stubs.messages.SearchMessages(
        message_pb2.SearchMessagesRequest(
            session_id=session.id, content=struct({"tool_calls": [{"name": "write_file"}]})
        ),
        metadata=md(tenant),
    )
    after = await stubs.sessions.CountActiveSessions(
        session_pb2.CountActiveSessionsRequest(user_id=user.id), metadata=md(tenant)
    )

    assert active.active_count == 1
    assert after.active_count == 0
    assert done.status == session_pb2.SESSION_STATUS_COMPLETED
    assert done.HasField("completed_time")
    assert done.total_messages == len(turns) == done.last_sequence_number
    assert done.total_tool_calls == 1
    assert done.input_tokens == sum(u[0] for u in usage)
    assert done.output_tokens == sum(u[1] for u in usage)
    assert Decimal(done.total_cost_usd) == sum(Decimal(u[2]) for u in usage)
    assert plain(result.content) == {"status": "ok", "files": ["index.html"]}
    assert result.sequence_number == 4
    assert [(m.sequence_number, m.message_type) for m in history.messages] == [
        (i, kind) for i, (kind, _, _) in enumerate(turns, start=1)
    ]
    assert [m.sequence_number for m in tool_turns.messages] == [2]


async def test_a_job_queue(stubs: Stubs, tenant: str) -> None:
    kinds = ["thumbnail"] * 12 + ["transcode"] * 6
    enqueued = await stubs.jobs.BatchCreateJobs(
        job_pb2.BatchCreateJobsRequest(
            requests=[
                job_pb2.CreateJobRequest(
                    job=job_pb2.Job(job_type=kind, priority=i % 3, payload=struct({"n": i}))
                )
                for i, kind in enumerate(kinds)
            ]
        ),
        metadata=md(tenant),
    )
    by_id = {job.id: job for job in enqueued.jobs}

    async def worker(name: str, *job_types: str) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        while (job := await claim(stubs, tenant, name, *job_types)) is not None:
            await stubs.jobs.UpdateJobProgress(
                job_pb2.UpdateJobProgressRequest(id=job.id, progress=50), metadata=md(tenant)
            )
            n = int(plain(job.payload)["n"])
            if n % 5 == 4:
                await stubs.jobs.FailJob(
                    job_pb2.FailJobRequest(id=job.id, error_message=f"bad input {n}"),
                    metadata=md(tenant),
                )
                outcomes["failed"] += 1
            else:
                await stubs.jobs.CompleteJob(
                    job_pb2.CompleteJobRequest(id=job.id, result=struct({"n": n})),
                    metadata=md(tenant),
                )
                outcomes["completed"] += 1
        return outcomes

    results = await asyncio.gather(
        worker("w1"), worker("w2", "thumbnail"), worker("w3", "transcode"), worker("w4")
    )

    done = sum(results, Counter())
    expected_failed = sum(1 for i in range(len(kinds)) if i % 5 == 4)
    assert done == Counter(failed=expected_failed, completed=len(kinds) - expected_failed)
    stats = await stubs.jobs.GetJobStatistics(
        job_pb2.GetJobStatisticsRequest(), metadata=md(tenant)
    )
    assert (stats.counts.completed, stats.counts.failed, stats.counts.total) == (
        done["completed"],
        done["failed"],
        len(kinds),
    )
    assert stats.counts.pending == stats.counts.running == 0
    assert {t.job_type: t.counts.total for t in stats.job_types} == dict(Counter(kinds))
    assert stats.HasField("average_run_time")
    finished = await stubs.jobs.ListJobs(
        job_pb2.ListJobsRequest(page_size=100, order_by="update_time desc"), metadata=md(tenant)
    )
    assert {job.id for job in finished.jobs} == set(by_id)
    assert all(
        job.progress == 100 for job in finished.jobs if job.status == job_pb2.JOB_STATUS_COMPLETED
    )

    # A job enqueued after every other finished: its enqueue_time, by the server's clock,
    # is the cutoff.
    marker = await stubs.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=job_pb2.Job(job_type="marker")), metadata=md(tenant)
    )
    purged = await stubs.jobs.PurgeJobs(
        job_pb2.PurgeJobsRequest(cutoff_time=marker.enqueue_time), metadata=md(tenant)
    )
    left = await stubs.jobs.ListJobs(
        job_pb2.ListJobsRequest(show_deleted=True), metadata=md(tenant)
    )

    assert purged.purged_count == len(kinds)
    assert [job.id for job in left.jobs] == [marker.id]

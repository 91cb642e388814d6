"""repogate.v1.JobService: the standard methods, and the queue's life cycle."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeAlias

from google.protobuf import duration_pb2
from grpc import aio

from repogate.v1 import job_pb2 as pb
from repogate.v1 import job_pb2_grpc
from repositories.errors import InvalidArgument
from repositories.jobs import JobRepository, Tally
from schema.declared import resource_of
from server import validation
from server.answers import Encoded
from server.mapping import duration, json_object, parse_etag, stored_enum_names
from server.page_tokens import PageTokens
from server.read_through import ReadThrough
from server.resource_types import Policy
from server.resources import StandardMethods
from server.units import Units

# Declared in job.proto (its repogate.options); these are the checks beyond it.
JOB = resource_of(
    pb.Job,
    JobRepository,
    checks={"job_type": validation.token(64), "payload": validation.json_document},
)
# "running" -> "JOB_STATUS_RUNNING"
STATUS = {
    name: pb.JobStatus.Name(number)
    for number, name in stored_enum_names(pb.JobStatus.DESCRIPTOR).items()
}
MAX_JOB_TYPES = 100

Context: TypeAlias = aio.ServicerContext


class JobService(job_pb2_grpc.JobServiceServicer):
    def __init__(
        self, units: Units, tokens: PageTokens, policy: Policy, cache: ReadThrough
    ) -> None:
        self._units = units
        self._jobs = StandardMethods(JOB, units, tokens, policy, cache)

    async def CreateJob(self, request: pb.CreateJobRequest, context: Context) -> Encoded[pb.Job]:
        return await self._jobs.create(request)

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        return await self._jobs.get(request)

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        page = await self._jobs.page(request)
        return pb.ListJobsResponse(
            jobs=page.items,
            next_page_token=page.next_page_token,
            total_size=page.total_size,
            total_size_exact=page.total_size_exact,
        )

    async def CountJobs(
        self, request: pb.CountJobsRequest, context: Context
    ) -> pb.CountJobsResponse:
        total, exact = await self._jobs.count(request)
        return pb.CountJobsResponse(total_size=total, total_size_exact=exact)

    async def AggregateJobs(
        self, request: pb.AggregateJobsRequest, context: Context
    ) -> pb.AggregateJobsResponse:
        return await self._jobs.aggregate(request, pb.AggregateJobsResponse)

    async def UpdateJob(self, request: pb.UpdateJobRequest, context: Context) -> Encoded[pb.Job]:
        return await self._jobs.update(request)

    async def DeleteJob(self, request: pb.DeleteJobRequest, context: Context) -> Encoded[pb.Job]:
        return await self._jobs.delete(request)

    async def UndeleteJob(
        self, request: pb.UndeleteJobRequest, context: Context
    ) -> Encoded[pb.Job]:
        return await self._jobs.undelete(request)

    async def BatchGetJobs(
        self, request: pb.BatchGetJobsRequest, context: Context
    ) -> pb.BatchGetJobsResponse:
        return pb.BatchGetJobsResponse(jobs=await self._jobs.batch_get(request))

    async def BatchCreateJobs(
        self, request: pb.BatchCreateJobsRequest, context: Context
    ) -> Encoded[pb.BatchCreateJobsResponse]:
        return await self._jobs.batch_create(request, pb.BatchCreateJobsResponse)

    async def BatchUpdateJobs(
        self, request: pb.BatchUpdateJobsRequest, context: Context
    ) -> Encoded[pb.BatchUpdateJobsResponse]:
        return await self._jobs.batch_update(request, pb.BatchUpdateJobsResponse)

    async def BatchDeleteJobs(
        self, request: pb.BatchDeleteJobsRequest, context: Context
    ) -> Encoded[pb.BatchDeleteJobsResponse]:
        return await self._jobs.batch_delete(request, pb.BatchDeleteJobsResponse)

    # ------------------------------------------------------------ the queue

    async def ClaimNextJob(
        self, request: pb.ClaimNextJobRequest, context: Context
    ) -> Encoded[pb.ClaimNextJobResponse]:
        job_types = _job_types(request.job_types)
        worker = validation.valid(request.worker_id, _worker_id, "worker_id")

        async def claim(repo: Any) -> list[Any]:
            job = await repo.sibling(JobRepository).claim_next(job_types, worker)
            return [] if job is None else [job]

        return await self._jobs.write_rows(request, claim, pb.ClaimNextJobResponse)

    async def UpdateJobProgress(
        self, request: pb.UpdateJobProgressRequest, context: Context
    ) -> Encoded[pb.Job]:
        key, version = _target(request)
        if not 0 <= request.progress <= 100:
            raise InvalidArgument.field("progress", "must be from 0 to 100")
        return await self._jobs.write_one(
            request,
            lambda repo: repo.sibling(JobRepository).report_progress(
                key, request.progress, version
            ),
        )

    async def CompleteJob(
        self, request: pb.CompleteJobRequest, context: Context
    ) -> Encoded[pb.Job]:
        result = validation.valid(json_object(request.result), validation.json_document, "result")
        return await self._finish(request, "completed", {"result": result, "progress": 100})

    async def FailJob(self, request: pb.FailJobRequest, context: Context) -> Encoded[pb.Job]:
        message = validation.valid(request.error_message, _error_message, "error_message")
        return await self._finish(request, "failed", {"error_message": message})

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> Encoded[pb.Job]:
        return await self._finish(request, "cancelled", {})

    async def GetQueuePosition(
        self, request: pb.GetQueuePositionRequest, context: Context
    ) -> pb.GetQueuePositionResponse:
        key = validation.resource_id(request.id, "id")
        position, job = await self._units.read(
            lambda uow: uow.repository(JobRepository).queue_position(key)
        )
        return pb.GetQueuePositionResponse(position=position, status=STATUS[job["status"]])

    async def GetJobStatistics(
        self, request: pb.GetJobStatisticsRequest, context: Context
    ) -> pb.GetJobStatisticsResponse:
        where = self._jobs.filters.compile(request.filter)
        tallies = await self._units.read(
            lambda uow: uow.repository(JobRepository).statistics(
                where, show_deleted=request.show_deleted
            )
        )
        return _statistics(tallies)

    async def PurgeJobs(
        self, request: pb.PurgeJobsRequest, context: Context
    ) -> pb.PurgeJobsResponse:
        cutoff = validation.timestamp(
            request.cutoff_time, "cutoff_time", not_after=datetime.now(UTC)
        )
        purged = await self._units.write(lambda uow: uow.repository(JobRepository).purge(cutoff))
        return pb.PurgeJobsResponse(purged_count=purged)

    async def _finish(self, request: Any, status: str, values: dict[str, Any]) -> Encoded[pb.Job]:
        key, version = _target(request)
        return await self._jobs.write_one(
            request, lambda repo: repo.sibling(JobRepository).finish(key, status, values, version)
        )


_worker_id = validation.printable(128)


def _error_message(value: str) -> str | None:
    """1 to 4096 characters; line breaks allowed (stack traces)."""
    if not value:
        return "is required"
    return "must be at most 4096 characters" if len(value) > 4096 else None


def _target(request: Any) -> tuple[Any, int | None]:
    """The job a request names, and the version its etag stands for."""
    return validation.resource_id(request.id, "id"), parse_etag(request.etag, "etag")


def _job_types(names: Iterable[str]) -> list[str]:
    listed = list(names)
    if len(listed) > MAX_JOB_TYPES:
        raise InvalidArgument.field("job_types", f"holds more than {MAX_JOB_TYPES} types")
    check = validation.token(64)
    return [validation.valid(name, check, f"job_types[{i}]") for i, name in enumerate(listed)]


def _statistics(tallies: list[Tally]) -> pb.GetJobStatisticsResponse:
    """Counts by status, per type and over all, with mean run times."""
    counts: dict[str, pb.JobCounts] = defaultdict(pb.JobCounts)
    runs: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for tally in tallies:
        for key in (tally.job_type, ""):  # "": every type
            total = counts[key]
            setattr(total, tally.status, getattr(total, tally.status) + tally.count)
            total.total += tally.count
            runs[key][0] += tally.run_seconds
            runs[key][1] += tally.runs
    return pb.GetJobStatisticsResponse(
        counts=counts[""],
        average_run_time=_mean(runs[""]),
        job_types=[
            pb.JobTypeStatistics(
                job_type=name, counts=counts[name], average_run_time=_mean(runs[name])
            )
            for name in sorted(counts)
            if name
        ],
    )


def _mean(run: list[float]) -> duration_pb2.Duration | None:
    seconds, count = run
    if not count:
        return None
    return duration(seconds / count)

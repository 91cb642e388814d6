"""Jobs: a queue of work, claimed by workers.

pending -> running -> completed | failed; pending or running -> cancelled. Every
change of status is one guarded UPDATE (repositories.lifecycle). Claiming picks
the next pending job with FOR UPDATE SKIP LOCKED on PostgreSQL, so concurrent
workers skip each other's picks instead of waiting or taking the same job; on
SQLite writers are serialised, so the pick and the claim cannot interleave.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_

from repogate.v1 import job_pb2
from repositories.base import Row
from repositories.lifecycle import Lifecycle, StatefulRepository
from repositories.tables import jobs
from schema.entities import entity_of

JOB = entity_of(job_pb2.Job, jobs)

FINISHED = ("completed", "failed", "cancelled")
LIFECYCLE = Lifecycle(
    {
        "pending": {"running", "cancelled"},
        "running": {"completed", "failed", "cancelled"},
        **{status: set() for status in FINISHED},
    }
)
# Jobs whose run time GetJobStatistics averages: those that ran to an end.
_RAN = ("completed", "failed")


@dataclass(frozen=True)
class Tally:
    """Jobs of one type in one status, and how long those that ran took."""

    job_type: str
    status: str
    count: int
    run_seconds: float  # summed over `runs`
    runs: int


class JobRepository(StatefulRepository):
    entity = JOB
    lifecycle = LIFECYCLE

    def entering(self, status: str, now: datetime) -> dict[str, Any]:
        if status == "pending":
            return {"enqueue_time": now}
        if status == "running":
            return {"start_time": now}
        return {"finish_time": now} if status in FINISHED else {}

    async def claim_next(self, job_types: Collection[str], worker_id: str) -> Row | None:
        """Starts the first pending job (of `job_types`, if any are named) in claim order:
        higher priority first, then first enqueued. None when there is none."""
        pick = (
            self.scope.select(self.c.id)
            .where(self._pending(), *([self.c.job_type.in_(job_types)] if job_types else []))
            .order_by(*self._claim_order())
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        now = datetime.now(UTC)
        running = {"status": "running", "worker_id": worker_id, **self.entering("running", now)}
        changes = self._changes(running, now)
        stmt = self.scope.update(changes).where(
            self.c.id == pick.scalar_subquery(), self._pending()
        )
        rows = await self._returning(stmt)
        return next(iter(rows.values()), None)

    async def report_progress(
        self, id_: uuid.UUID, progress: int, expected_version: int | None = None
    ) -> Row:
        return await self.transition(
            id_,
            "running",
            {"progress": progress},
            expected_version,
            sources={"running"},
            action="reporting progress",
        )

    async def finish(
        self,
        id_: uuid.UUID,
        status: str,
        values: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> Row:
        """Completes, fails or cancels a job."""
        return await self.transition(id_, status, values, expected_version)

    async def queue_position(self, id_: uuid.UUID) -> tuple[int, Row]:
        """1 for the job a worker claiming its type would get next, 2 for the one after...;
        0 when the job is not pending. With the job as read."""
        job = await self.get(id_)
        if job["status"] != "pending" or job["delete_time"] is not None:
            return 0, job
        priority, enqueued = job["priority"], job["enqueue_time"]
        ahead = or_(
            self.c.priority > priority,
            and_(
                self.c.priority == priority,
                or_(
                    self.c.enqueue_time < enqueued,
                    and_(self.c.enqueue_time == enqueued, self.c.id < id_),
                ),
            ),
        )
        stmt = self.scope.select(func.count()).where(
            self._pending(), self.c.job_type == job["job_type"], ahead
        )
        return int((await self._execute(stmt)).scalar_one()) + 1, job

    async def statistics(
        self, where: ColumnElement[bool] | None = None, *, show_deleted: bool = False
    ) -> list[Tally]:
        """Counts by type and status, with the run time of jobs that ran to an end."""
        ran = and_(self.c.status.in_(_RAN), self.c.start_time.is_not(None))
        ran = and_(ran, self.c.finish_time.is_not(None))
        stmt = self.scope.select(
            self.c.job_type,
            self.c.status,
            func.count(),
            func.sum(case((ran, self._run_seconds()))),
            func.count(case((ran, 1))),
        )
        stmt = self._matching(stmt, where, show_deleted).group_by(self.c.job_type, self.c.status)
        return [
            Tally(job_type, status, int(count), float(seconds or 0), int(runs))
            for job_type, status, count, seconds, runs in map(tuple, await self._execute(stmt))
        ]

    async def purge(self, cutoff: datetime, batch: int = 1000) -> int:
        """Purges jobs (deleted or not) that finished before `cutoff`; returns how many."""
        finished = and_(self.c.status.in_(FINISHED), self.c.finish_time < cutoff)
        return await self.delete_batches(finished, batch=batch)

    def _pending(self) -> ColumnElement[bool]:
        return and_(self.c.status == "pending", self._live())

    def _claim_order(self) -> list[ColumnElement[Any]]:
        return [self.c.priority.desc(), self.c.enqueue_time.asc(), self.c.id.asc()]

    def _run_seconds(self) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return func.extract("epoch", self.c.finish_time - self.c.start_time)
        # SQLite keeps times as text; julianday reads them (to the millisecond).
        days = func.julianday(self.c.finish_time) - func.julianday(self.c.start_time)
        return days * 86400.0

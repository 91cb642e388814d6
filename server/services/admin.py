"""repogate.v1.AdminService: the pool, dependencies' health, call statistics, the query
profile and index recommendations.

Most of it reads state the server keeps anyway. CheckHealth does one round trip to each
dependency, each bounded by `probe_timeout`, and outside the breakers, so it reports what
is true rather than what they think; GetQueryProfile reads pg_stat_statements when the
database has it; RecommendIndexes runs an EXPLAIN per query shape (server/index_advice.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from grpc import aio

from repogate.v1 import admin_pb2 as pb
from repogate.v1 import admin_pb2_grpc
from repositories import pg_stat_statements
from repositories.database import Database
from repositories.errors import DeadlineExceeded, DomainError, InvalidArgument
from repositories.held import PoolCounts, pool_counts
from repositories.profiler import SlowStatements, StatementTotals
from server.breaker import Breaker, State
from server.cache import CacheBackend
from server.call_stats import CallStats
from server.index_advice import Examined, recommend
from server.mapping import duration, timestamp
from server.units import Units

T = TypeVar("T")

Context: TypeAlias = aio.ServicerContext

# The most statements or shapes one call returns (or EXPLAINs).
MOST = 500

_VERDICTS = {
    "SERVED": pb.SHAPE_VERDICT_SERVED,
    "INDEX_UNUSED": pb.SHAPE_VERDICT_INDEX_UNUSED,
    "NEEDS_INDEX": pb.SHAPE_VERDICT_NEEDS_INDEX,
    "NOT_INDEXABLE": pb.SHAPE_VERDICT_NOT_INDEXABLE,
}

_BREAKER_STATE = {
    State.CLOSED: pb.BREAKER_STATE_CLOSED,
    State.OPEN: pb.BREAKER_STATE_OPEN,
    State.HALF_OPEN: pb.BREAKER_STATE_HALF_OPEN,
}


@dataclass(frozen=True)
class Observed:
    """What the admin service reads: the server's parts and its records of itself."""

    db: Database
    max_overflow: int
    units: Units
    cache: CacheBackend
    breakers: dict[str, Breaker]
    calls: CallStats
    slow: SlowStatements


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self, observed: Observed, probe_timeout: float = 1.0, work_timeout: float | None = 30.0
    ) -> None:
        self._o = observed
        self._probe_timeout = probe_timeout
        # GetQueryProfile's and RecommendIndexes' database work, as any call's without a
        # deadline (REPOGATE_DB_STATEMENT_TIMEOUT): a lock held on a table cannot hang them.
        self._work_timeout = work_timeout

    async def GetPoolStatus(
        self, request: pb.GetPoolStatusRequest, context: Context
    ) -> pb.PoolStatus:
        counts = pool_counts(self._o.db.engine) or PoolCounts(0, 0, 0, 0)
        return pb.PoolStatus(
            dialect=self._o.db.dialect,
            size=counts.size,
            checked_in=counts.checked_in,
            checked_out=counts.checked_out,
            overflow=counts.overflow,
            max_overflow=self._o.max_overflow,
            open_transactions=self._o.units.transactions.stats().open,
        )

    async def CheckHealth(
        self, request: pb.CheckHealthRequest, context: Context
    ) -> pb.HealthReport:
        database = await self._probe("database", self._o.db.ping)
        cache = await self._probe("cache", self._o.cache.ping)
        cache.backend = self._o.cache.name
        replicas = self._o.units.replicas
        # Named by their place in REPOGATE_DATABASE_REPLICA_URLS: no host names here.
        standbys = [
            await self._probe(f"replica {n}", r.db.ping, f"replica {r.name}")
            for n, r in enumerate(replicas.all if replicas is not None else (), 1)
        ]
        if not database.reachable:
            status = pb.HEALTH_STATUS_UNHEALTHY
        elif (
            not cache.reachable
            or not all(standby.reachable for standby in standbys)
            or any(b.state is not State.CLOSED for b in self._o.breakers.values())
        ):
            status = pb.HEALTH_STATUS_DEGRADED
        else:
            status = pb.HEALTH_STATUS_HEALTHY
        return pb.HealthReport(status=status, dependencies=[database, cache, *standbys])

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.ServerStats:
        cache = self._o.cache.stats
        tx = self._o.units.transactions.stats()
        return pb.ServerStats(
            methods=[
                pb.MethodStats(
                    method=m.method,
                    count=m.count,
                    server_errors=m.server_errors,
                    p50=duration(m.p50),
                    p95=duration(m.p95),
                    p99=duration(m.p99),
                )
                for m in self._o.calls.snapshot()
            ],
            cache=pb.CacheStats(
                backend=self._o.cache.name,
                hits=cache.hits,
                misses=cache.misses,
                hit_rate=cache.hit_rate,
                errors=cache.errors,
                evictions=cache.evictions,
                skipped=cache.skipped,
            ),
            transactions=pb.TransactionStats(
                open=tx.open,
                oldest_age=duration(tx.oldest_age),
                begun=tx.outcomes.get("BEGUN", 0),
                committed=tx.outcomes.get("COMMITTED", 0),
                rolled_back=tx.outcomes.get("ROLLED_BACK", 0),
                expired=tx.outcomes.get("EXPIRED", 0),
                aborted=tx.outcomes.get("ABORTED", 0),
                unknown=tx.outcomes.get("UNKNOWN", 0),
            ),
            retries=self._o.units.retried,
            slow_statements=[
                pb.SlowStatement(
                    sql=s.sql, duration=duration(s.seconds), finish_time=timestamp(s.finished)
                )
                for s in self._o.slow.slowest()
            ],
        )

    async def GetQueryProfile(
        self, request: pb.GetQueryProfileRequest, context: Context
    ) -> pb.QueryProfile:
        count = _count(request.max_statements, "max_statements", default=20)
        profile = pb.QueryProfile()
        if self._o.db.dialect == "postgresql":
            found = await self._bounded(pg_stat_statements.top(self._o.db.engine, count))
            if not found.unavailable:
                profile.source = pb.PROFILE_SOURCE_PG_STAT_STATEMENTS
                profile.statements.extend(_statement(s) for s in found.statements)
                if found.since is not None:
                    profile.since.CopyFrom(timestamp(found.since))
                return profile
            profile.fallback_reason = found.unavailable
        own = self._o.slow.statements
        profile.source = pb.PROFILE_SOURCE_REPOGATE
        profile.statements.extend(_statement(s) for s in own.top(count))
        profile.since.CopyFrom(timestamp(own.since))
        return profile

    async def RecommendIndexes(
        self, request: pb.RecommendIndexesRequest, context: Context
    ) -> pb.IndexRecommendations:
        count = _count(request.max_shapes, "max_shapes", default=50)
        examined, recommendations = await self._bounded(
            recommend(self._o.db, self._o.units.shapes.most_called(count))
        )
        return pb.IndexRecommendations(
            dialect=self._o.db.dialect,
            recommendations=[
                pb.IndexRecommendation(
                    table=r.table.name,
                    name=r.name,
                    columns=[column for column, _ in r.columns],
                    create_index=r.create_index,
                    schema_option=r.schema_option,
                    shapes=[_shape(each) for each in r.shapes],
                )
                for r in recommendations
            ],
            shapes=[_shape(each) for each in examined],
        )

    async def _bounded(self, work: Awaitable[T]) -> T:
        if self._work_timeout is None:
            return await work
        try:
            async with asyncio.timeout(self._work_timeout):
                return await work
        except TimeoutError:
            raise DeadlineExceeded(
                f"the database did not answer within {self._work_timeout:g}s"
            ) from None

    async def _probe(
        self, name: str, ping: Callable[[], Awaitable[None]], breaker: str | None = None
    ) -> pb.DependencyHealth:
        """`breaker`: the name of its breaker, when not `name`."""
        state = self._o.breakers[breaker or name].state
        health = pb.DependencyHealth(name=name, breaker=_BREAKER_STATE[state])
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._probe_timeout):
                await ping()
        except TimeoutError:
            health.error = f"no answer within {self._probe_timeout:g}s"
        except DomainError as exc:
            health.error = exc.message  # written for clients: no SQL, no host names
        else:
            health.reachable = True
            health.round_trip.CopyFrom(duration(time.perf_counter() - started))
        return health


def _count(value: int, field: str, default: int) -> int:
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative")
    return min(value or default, MOST)


def _statement(totals: StatementTotals) -> pb.StatementProfile:
    return pb.StatementProfile(
        sql=totals.sql,
        calls=totals.calls,
        total_time=duration(totals.total),
        mean_time=duration(totals.total / totals.calls if totals.calls else 0.0),
        max_time=duration(totals.longest),
    )


def _shape(examined: Examined) -> pb.QueryShape:
    shape = examined.shape
    return pb.QueryShape(
        resource=shape.entity.resource,
        table=shape.entity.table.name,
        method=shape.method,
        filter=shape.filter.text,
        order_by=shape.order_by,
        calls=shape.calls,
        access=examined.plan.describe(),
        verdict=_VERDICTS[examined.verdict],
        index=examined.index,
        estimated_cost=examined.plan.cost,
    )

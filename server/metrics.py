"""Prometheus metrics: RPCs under go-grpc-prometheus's names (server/grpc_metrics.py),
statement time and pool wait (server/db_metrics.py), and the state of the pool,
transactions, retries, cache and circuit breakers, read when scraped.

Each server keeps its own CollectorRegistry (tests run many servers in one
process) and serves it on REPOGATE_METRICS_LISTEN. Without that setting no
metric is kept and no call is timed. Under `serve --workers N` each worker serves
its own on a private port, and the supervisor serves them all (worker_metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.bulkheads import OTHER, TRACKED
from repositories.held import pool_counts
from repositories.profiler import SlowStatements
from repositories.transactions import Outcome
from server import metrics_http
from server.cache.backend import CacheBackend
from server.call_stats import CallStats
from server.db_metrics import DbMetrics
from server.grpc_metrics import LATENCY_BUCKETS, RpcCollector
from server.settings import Settings
from server.units import Units

__all__ = ["LATENCY_BUCKETS", "Metrics"]

log = logging.getLogger(__name__)

# The states a breaker reports; each is a series, 1 for the current one.
BREAKER_STATES = ("CLOSED", "OPEN", "HALF_OPEN")

# Breaker name -> state, one of BREAKER_STATES.
BreakerStates = Callable[[], Mapping[str, str]]


def no_breakers() -> Mapping[str, str]:
    return {}


class Metrics:
    """A server's registry, what it reads when scraped and the endpoint that serves it."""

    def __init__(self, listen: str | None = None, *, reuse_port: bool = False) -> None:
        self.listen = listen
        # A worker's endpoint binds the loopback port its supervisor holds for it.
        self._reuse_port = reuse_port
        self.registry = CollectorRegistry()
        self.address = ""  # host:port actually bound, once started
        self._server: asyncio.Server | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Metrics:
        return cls(settings.metrics_listen, reuse_port=settings.reuse_port)

    def calls(self) -> CallStats:
        """Where the server counts its calls: when metrics are kept, with a latency
        histogram, and read for the gRPC server metrics when scraped."""
        if self.listen is None:
            return CallStats()
        calls = CallStats(buckets=LATENCY_BUCKETS)
        self.registry.register(RpcCollector(calls))
        return calls

    def watch(
        self,
        engine: AsyncEngine,
        units: Units,
        cache: CacheBackend,
        breakers: BreakerStates = no_breakers,
        statements: SlowStatements | None = None,
    ) -> None:
        """Registers what is read at scrape time, and times statements (those
        `statements` times) and pool checkouts. `breakers` is the seam for circuit
        breakers: any callable answering {name: state}."""
        if self.listen is None:
            return
        if statements is not None:
            DbMetrics(self.registry).watch(engine, statements)
        for collector in (
            PoolCollector(engine),
            UnitCollector(units),
            CacheCollector(cache),
            BreakerCollector(breakers),
            # What the default registry would hold: this process's CPU, memory, GC.
            PROCESS_COLLECTOR,
            PLATFORM_COLLECTOR,
            GC_COLLECTOR,
        ):
            self.registry.register(collector)

    def register(self, collector: Collector) -> None:
        """Adds a collector read at scrape time (read replicas', say), when metrics are kept."""
        if self.listen is not None:
            self.registry.register(collector)

    async def start(self) -> None:
        if self.listen is not None:
            self._server, self.address = await metrics_http.serve(
                self.registry, self.listen, reuse_port=self._reuse_port
            )
            log.info("metrics on http://%s%s", self.address, metrics_http.PATH)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()


class PoolCollector:
    """The database pool: connections kept, in use, idle, and opened beyond its size."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        counts = pool_counts(self._engine)  # read now: dispose() replaces the pool
        if counts is None:
            return  # in-memory SQLite's single static connection
        yield _gauge("repogate_db_pool_size", "Connections the pool keeps.", counts.size)
        yield _gauge(
            "repogate_db_pool_checked_out", "Connections in use by calls.", counts.checked_out
        )
        yield _gauge(
            "repogate_db_pool_checked_in",
            "Idle connections: in the pool, or kept for the next call.",
            counts.checked_in,
        )
        yield _gauge(
            "repogate_db_pool_overflow", "Connections open beyond the pool size.", counts.overflow
        )


class UnitCollector:
    """Transactions across calls, retries of single calls, and calls the tenants'
    bulkheads refused."""

    def __init__(self, units: Units) -> None:
        self._units = units

    def collect(self) -> Iterator[Metric]:
        stats = self._units.transactions.stats()
        yield _gauge("repogate_transactions_open", "Transactions open now.", stats.open)
        yield _gauge(
            "repogate_transactions_oldest_age_seconds",
            "Age of the oldest open transaction; 0 when none is open.",
            stats.oldest_age,
        )
        yield _counter(
            "repogate_transactions_begun", "Transactions begun.", stats.outcomes.get("BEGUN", 0)
        )
        ended = CounterMetricFamily(
            "repogate_transactions_ended", "Transactions ended, by outcome.", labels=["outcome"]
        )
        for outcome in Outcome:
            ended.add_metric([outcome.name.lower()], stats.outcomes.get(outcome.name, 0))
        yield ended
        yield _counter(
            "repogate_retries",
            "Single calls run again after a conflict (serialization failure, deadlock, busy).",
            self._units.retried,
        )
        refused = CounterMetricFamily(
            "repogate_tenant_calls_refused",
            "Calls refused because their tenant held REPOGATE_TENANT_MAX_CONCURRENCY "
            f"connections, by tenant (the first {TRACKED} refused; the rest as {OTHER!r}).",
            labels=["tenant"],
        )
        for tenant, count in sorted(self._units.bulkheads.refused.items()):
            refused.add_metric([tenant], count)
        yield refused


class CacheCollector:
    """The cache backend's counters, which read-through and CacheService share."""

    def __init__(self, cache: CacheBackend) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats
        for name, value, help_ in (
            ("hits", stats.hits, "Lookups that found a value."),
            ("misses", stats.misses, "Lookups that found none."),
            ("errors", stats.errors, "Calls that failed: the backend was unreachable or slow."),
            ("evictions", stats.evictions, "Live entries dropped to make room (memory)."),
            ("skipped", stats.skipped, "Read-through calls not made while its breaker was open."),
            (
                "failovers",
                stats.failovers,
                "Primaries of a cluster or Sentinel found promoted since they started.",
            ),
        ):
            family = CounterMetricFamily(f"repogate_cache_{name}", help_, labels=["backend"])
            family.add_metric([self._cache.name], value)
            yield family


class BreakerCollector:
    """Each circuit breaker's state: 1 on the series of its current state, 0 on the others."""

    def __init__(self, states: BreakerStates) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "repogate_breaker_state",
            "Circuit breaker state: 1 for the state each breaker is in.",
            labels=["breaker", "state"],
        )
        for breaker, current in sorted(self._states().items()):
            for state in dict.fromkeys((*BREAKER_STATES, current)):
                family.add_metric([breaker, state], 1 if state == current else 0)
        yield family


def _gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, value=value)


def _counter(name: str, help_: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_, value=value)

"""Histograms of statement time and of the wait for a pooled connection, under the
names OpenTelemetry's database metric conventions give them as Prometheus exports
them (db.client.operation.duration, db.client.connection.wait_time):

    db_client_operation_duration_seconds{db_system,db_operation_name,db_collection_name}
    db_client_connection_wait_time_seconds{db_system}

Statements are timed by the profiler that already times every statement
(repositories/profiler.py, for GetQueryProfile and the slow statement log): a
statement costs one more observation, and no listener of its own.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.held import time_connections
from repositories.profiler import SlowStatements
from server.db_semconv import summary

# Seconds: from a cached primary-key read on loopback (~0.1 ms) to a statement timeout.
STATEMENT_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
# Seconds: an idle connection is handed out in microseconds; a full pool makes calls
# wait up to REPOGATE_DB_POOL_TIMEOUT.
WAIT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)


class DbMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._statements = Histogram(
            "db_client_operation_duration_seconds",
            "Duration of database statements, from sending to the last row, in seconds.",
            ("db_system", "db_operation_name", "db_collection_name"),
            registry=registry,
            buckets=STATEMENT_BUCKETS,
        )
        self._waits = Histogram(
            "db_client_connection_wait_time_seconds",
            "Time a call waited to obtain an open connection from the pool, in seconds.",
            ("db_system",),
            registry=registry,
            buckets=WAIT_BUCKETS,
        )
        # By operation and table: a few dozen series, looked up once each.
        self._series: dict[tuple[str, str | None], Any] = {}
        self._system = ""

    def watch(self, engine: AsyncEngine, statements: SlowStatements) -> None:
        self._system = engine.dialect.name
        statements.observe = self._statement
        time_connections(engine, self._waits.labels(self._system).observe)

    def _statement(self, statement: str, seconds: float) -> None:
        key = summary(statement)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._statements.labels(self._system, key[0], key[1] or "")
        series.observe(seconds)

"""Statements timed at the driver: the slowest recent ones (AdminService.GetStats), and
calls and time per statement shape since start (AdminService.GetQueryProfile).

Statements are kept as SQLAlchemy sent them, with placeholders: values are
always bound parameters, so no row data or tenant's value reaches these lists.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

_STARTED = "repogate_statement_started"
# Execution options that keep a connection's statements out of these statistics: the
# profile's own look at the database is not part of the workload it reports.
UNCOUNTED = {"repogate_uncounted": True}
_SPACE = re.compile(r"\s+")
# A bound parameter as the drivers write it: $1 or $1::UUID (asyncpg), ? (sqlite).
# Casts may be several words: $3::TIMESTAMP WITH TIME ZONE.
_PARAM = r"(?:\$\d+(?:::\w+(?: \w+)*(?:\[\])?)?|\?|%\(\w+\)s|:\w+)"
# Three or more in a row, as an expanded IN list: ($1, $2, $3, ...)
_LIST = re.compile(rf"\((?:\s*{_PARAM}\s*,){{2,}}\s*{_PARAM}\s*\)")
# Rows of a multi-row VALUES, once each is shortened: (…), (…), (…)
_ROWS = re.compile(r"\(…\)(?:\s*,\s*\(…\)){2,}")
# A statement is kept to this many characters; the rest only repeats its shape.
MAX_SQL = 2048


@dataclass(frozen=True)
class SlowStatement:
    sql: str
    seconds: float
    finished: datetime


@dataclass
class StatementTotals:
    """One statement shape's runs: how many, and their total and longest time (seconds)."""

    sql: str
    calls: int = 0
    total: float = 0.0
    longest: float = 0.0


class StatementStats:
    """Calls and time per statement shape since `since`, for at most `keep` shapes: a new
    shape arriving when they are all taken replaces the one with the least total time, so
    what costs the most stays (and a rare shape may be counted from its latest arrival)."""

    def __init__(self, keep: int = 500) -> None:
        self.since = datetime.now(UTC)
        self._keep = keep
        self._by_sql: dict[str, StatementTotals] = {}

    def add(self, statement: str, seconds: float) -> None:
        sql = _shape(statement)
        totals = self._by_sql.get(sql)
        if totals is None:
            if len(self._by_sql) >= self._keep:
                least = min(self._by_sql.values(), key=lambda t: t.total)
                del self._by_sql[least.sql]
            totals = self._by_sql[sql] = StatementTotals(sql)
        totals.calls += 1
        totals.total += seconds
        totals.longest = max(totals.longest, seconds)

    def top(self, count: int) -> list[StatementTotals]:
        """The `count` shapes with the most total time, most first."""
        return heapq.nlargest(count, self._by_sql.values(), key=lambda t: t.total)


class SlowStatements:
    """Times every statement of an engine: keeps the recent slow ones, and feeds
    `statements`, the statistics per shape."""

    def __init__(self, threshold: float, keep: int = 50, shapes: int = 500) -> None:
        self.threshold = threshold
        self._recent: deque[SlowStatement] = deque(maxlen=keep)
        self.statements = StatementStats(shapes)
        # Told each statement and its seconds too (the statement-time histogram).
        self.observe: Callable[[str, float], None] | None = None

    def attach(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "before_cursor_execute", _started)
        event.listen(engine.sync_engine, "after_cursor_execute", self._finished)
        event.listen(engine.sync_engine, "handle_error", _failed)

    def slowest(self) -> list[SlowStatement]:
        return sorted(self._recent, key=lambda s: s.seconds, reverse=True)

    def _finished(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, *_: Any
    ) -> None:
        started = conn.info.get(_STARTED)
        if not started or _uncounted(context):
            return
        seconds = time.perf_counter() - started.pop()
        self.statements.add(statement, seconds)
        if self.observe is not None:
            self.observe(statement, seconds)
        if seconds >= self.threshold:
            self._recent.append(SlowStatement(normalize(statement), seconds, datetime.now(UTC)))


def _started(conn: Any, cursor: Any, statement: str, params: Any, context: Any, *_: Any) -> None:
    if not _uncounted(context):
        conn.info.setdefault(_STARTED, []).append(time.perf_counter())


def _failed(context: Any) -> None:
    # A failed statement never reaches after_cursor_execute: drop its start time.
    conn = context.connection
    started = conn.info.get(_STARTED) if conn is not None else None
    if started and not _uncounted(context.execution_context):
        started.pop()


def _uncounted(context: Any) -> bool:
    return context is not None and context.execution_options.get("repogate_uncounted", False)


def normalize(sql: str) -> str:
    """Whitespace folded, long placeholder lists shortened: one line per kind of statement."""
    short = _ROWS.sub("(…), …", _LIST.sub("(…)", _SPACE.sub(" ", sql).strip()))
    return short if len(short) <= MAX_SQL else short[: MAX_SQL - 1] + "…"


# Every statement is counted: its text, one of the few SQLAlchemy compiles and caches,
# is normalized once.
_shape = lru_cache(maxsize=1024)(normalize)

"""The slowest recent statements, timed at the driver: for AdminService.GetStats.

Statements are kept as SQLAlchemy sent them, with placeholders: values are
always bound parameters, so no row data or tenant's value reaches this list.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

_STARTED = "repogate_statement_started"
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


class SlowStatements:
    def __init__(self, threshold: float, keep: int = 50) -> None:
        self.threshold = threshold
        self._recent: deque[SlowStatement] = deque(maxlen=keep)

    def attach(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "before_cursor_execute", _started)
        event.listen(engine.sync_engine, "after_cursor_execute", self._finished)
        event.listen(engine.sync_engine, "handle_error", _failed)

    def slowest(self) -> list[SlowStatement]:
        return sorted(self._recent, key=lambda s: s.seconds, reverse=True)

    def _finished(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info.get(_STARTED)
        if not started:
            return
        seconds = time.perf_counter() - started.pop()
        if seconds >= self.threshold:
            self._recent.append(SlowStatement(normalize(statement), seconds, datetime.now(UTC)))


def _started(conn: Any, *_: Any) -> None:
    conn.info.setdefault(_STARTED, []).append(time.perf_counter())


def _failed(context: Any) -> None:
    # A failed statement never reaches after_cursor_execute: drop its start time.
    conn = context.connection
    started = conn.info.get(_STARTED) if conn is not None else None
    if started:
        started.pop()


def normalize(sql: str) -> str:
    """Whitespace folded, long placeholder lists shortened: one line per kind of statement."""
    short = _ROWS.sub("(…), …", _LIST.sub("(…)", _SPACE.sub(" ", sql).strip()))
    return short if len(short) <= MAX_SQL else short[: MAX_SQL - 1] + "…"

"""The statements with the most time, from PostgreSQL's pg_stat_statements: for
AdminService.GetQueryProfile, when the database has the extension (its library in
shared_preload_libraries, then CREATE EXTENSION pg_stat_statements in the database).
Repogate neither loads nor installs it.

Only this database's statements run by this server's database user are read, and of
those only plannable ones (SELECT, INSERT, UPDATE, DELETE, WITH, MERGE, VALUES): the
extension keeps those with $1, $2 ... where their constants were, while a utility
statement (SET, DDL, a password change) keeps its text as it was written.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from repositories import driver_faults
from repositories.errors import translate_db_errors
from repositories.profiler import UNCOUNTED, StatementTotals, normalize

_SCHEMA = text(
    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
    "WHERE e.extname = 'pg_stat_statements'"
)
_NOT_INSTALLED = "pg_stat_statements is not installed in this database"
# Why the extension did not answer, by SQLSTATE.
_REFUSALS = {
    "55000": "pg_stat_statements is installed in this database but its library is not "
    "loaded: add it to shared_preload_libraries and restart PostgreSQL",
    "42501": "this server's database user may not read pg_stat_statements",
}
_PLANNABLE = r"^[\s(]*(select|insert|update|delete|with|merge|values)\M"


@dataclass
class Statements:
    """The top statements, or why there are none: `unavailable` says."""

    statements: list[StatementTotals] = field(default_factory=list)
    since: datetime | None = None
    unavailable: str = ""


async def top(engine: AsyncEngine, count: int) -> Statements:
    """The `count` statements with the most total execution time, most first."""
    with translate_db_errors():
        async with engine.connect() as conn:
            # Repogate's own statistics answer when this finds no extension: they should
            # not count the looking.
            await conn.execution_options(**UNCOUNTED)
            schema = (await conn.execute(_SCHEMA)).scalar_one_or_none()
            if schema is None:
                return Statements(unavailable=_NOT_INSTALLED)
            quoted = engine.dialect.identifier_preparer.quote_identifier(schema)
            try:
                return await _read(conn, quoted, count)
            except sa_exc.DBAPIError as exc:
                refusal = _REFUSALS.get(driver_faults.sqlstate(exc) or "")
                if refusal is None:
                    raise
                return Statements(unavailable=refusal)


async def _read(conn: AsyncConnection, schema: str, count: int) -> Statements:
    # PostgreSQL 13 renamed total_time to total_exec_time; 14 added pg_stat_statements_info.
    version = conn.dialect.server_version_info or (0,)
    suffix = "exec_time" if version >= (13,) else "time"
    rows = await conn.execute(
        text(
            f"SELECT query, calls, total_{suffix}, max_{suffix} "
            f"FROM {schema}.pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND userid = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
            "AND query ~* :plannable "
            f"ORDER BY total_{suffix} DESC LIMIT :count"
        ),
        {"plannable": _PLANNABLE, "count": count},
    )
    found = Statements(
        [
            StatementTotals(normalize(sql), int(calls), total / 1000, longest / 1000)
            for sql, calls, total, longest in rows
        ]
    )
    if version >= (14,):
        # Last: an extension older than its server (1.8 on PostgreSQL 14) lacks the view,
        # and the error ends the transaction.
        info = text(f"SELECT stats_reset FROM {schema}.pg_stat_statements_info")
        with contextlib.suppress(sa_exc.ProgrammingError):
            found.since = (await conn.execute(info)).scalar_one_or_none()
    return found

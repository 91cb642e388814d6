"""What an exception from the database driver means: the codes and texts that tell a
conflict from a lost connection, a pooler in the way, or the driver's own failure.

repositories/errors.py turns these readings into domain errors; this module only reads.
"""

from __future__ import annotations

import logging
import sys

from sqlalchemy import exc as sa_exc

log = logging.getLogger("repositories.errors")

# SQLSTATEs that mean "another transaction won": serialization failure, deadlock.
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
# A write in a READ ONLY transaction: the database's own guard behind ours.
READ_ONLY_SQLSTATE = "25006"
# A prepared statement the server connection lacks (26000) or already has (42P05).
# Repogate prepares none by name itself: these come from a pooler in transaction mode
# handing the driver's cached statements to server connections that never saw them.
POOLER_SQLSTATES = frozenset({"26000", "42P05"})
_pooler_advised = False


def sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    orig = exc.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def constraint_name(exc: sa_exc.IntegrityError) -> str:
    """The violated constraint's name (PostgreSQL), else the driver message (SQLite)."""
    cause = getattr(exc.orig, "__cause__", None)
    name = getattr(cause, "constraint_name", None)
    return name if isinstance(name, str) else str(exc.orig)


def is_conflict(exc: sa_exc.DBAPIError) -> bool:
    """Another transaction won (a serialization failure, a deadlock, SQLite's busy lock),
    or another process changed a table under a statement this connection had prepared
    (a migration widening a column): it ran nothing, and prepared anew it runs."""
    text = str(exc.orig)
    return (
        sqlstate(exc) in CONFLICT_SQLSTATES
        or "database is locked" in text
        or "database table is locked" in text
        # SQLAlchemy's asyncpg dialect has dropped its prepared statements by now.
        or type(exc.orig).__name__ == "InvalidCachedStatementError"
    )


def is_pooler_statement(exc: sa_exc.DBAPIError) -> bool:
    """A pooler in transaction mode lost or duplicated the driver's named statement; says
    once per process what that means and how to fix it."""
    global _pooler_advised
    if sqlstate(exc) not in POOLER_SQLSTATES:
        return False
    if not _pooler_advised:
        _pooler_advised = True
        log.error(
            "a prepared statement was missing on (or already on) the database connection: "
            "a pooler in transaction mode (PgBouncer) stands between Repogate and "
            "PostgreSQL; set REPOGATE_DB_PGBOUNCER=true"
        )
    return True


def is_driver_fault(exc: BaseException | None) -> bool:
    """asyncpg's side of the connection failed: its InterfaceErrors (an operation it
    found in progress, a connection it closed), but not those about the values given
    (DataError, ClientConfigurationError, both ValueErrors); and its internal errors,
    which SQLAlchemy passes on unwrapped (a protocol state it did not expect, a stale
    schema cache). Looked up only when asyncpg is loaded: SQLite never imports it."""
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return False
    errors = asyncpg.exceptions
    return isinstance(exc, errors.InternalClientError) or (
        isinstance(exc, errors.InterfaceError) and not isinstance(exc, ValueError)
    )


def is_unavailable(exc: sa_exc.DBAPIError) -> bool:
    """Connection-level trouble, as opposed to a fault in the statement or schema."""
    if exc.connection_invalidated:
        return True
    state = sqlstate(exc) or ""
    # 08: connection exception; 53: insufficient resources; 57P0x: server shutting down.
    if state.startswith(("08", "53", "57P0")):
        return True
    text = str(exc.orig)
    return (
        "unable to open database" in text
        or "disk I/O error" in text
        or (isinstance(exc, sa_exc.InterfaceError) and "closed" in text)
        or is_driver_fault(getattr(exc.orig, "__cause__", None))
    )

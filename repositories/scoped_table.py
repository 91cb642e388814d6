"""The one door every repository's statements go through: `ScopedTable._execute` (and
`_rows`, which runs a statement that returns rows on the lean path where it can) runs
only statements its tenant scope built, translates database errors, counts writes against
the unit of work's `Writes`, and records what a statement changed for the caches."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, cast

from sqlalchemy import CursorResult, Delete, Select, Table, Update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

from repositories import prepared
from repositories.changes import Changes
from repositories.errors import (
    DeadlineExceeded,
    DomainError,
    ErrorContext,
    Unavailable,
    translate_db_errors,
)
from repositories.explain import Explain
from repositories.scope import Params, ScopeViolation, TenantScope

T = TypeVar("T", bound="ScopedTable")
# A row as repositories hand it on: a dict from the lean path, or SQLAlchemy's RowMapping.
Row = Mapping[str, Any]


def mappings(result: CursorResult[Any]) -> list[Row]:
    """A result's rows, typed as repositories hand rows on."""
    return cast(list[Row], list(result.mappings()))


class Writes:
    """The writes the repositories of one unit of work may still run, shared by them:
    none (a read-only unit), one (a unit in autocommit, whose write commits as it runs,
    so a second could leave half a call behind), or any (`allowed` None). A locking read
    counts as a write: its lock is worth nothing outside a transaction."""

    def __init__(self, allowed: int | None = None) -> None:
        self._allowed = allowed
        self._left = allowed

    def take(self, stmt: Executable) -> bool:
        """Counts `stmt` if it writes; refuses it if no write is left. Whether it writes."""
        if not _writes(stmt):
            return False
        if self._left is None:
            return True
        if self._left == 0:
            if self._allowed == 0:
                raise ScopeViolation("a read-only unit of work cannot write")
            raise ScopeViolation(f"a unit of work in autocommit runs {self._allowed} write")
        self._left -= 1
        return True


def _writes(stmt: Executable) -> bool:
    if isinstance(stmt, Select):
        return stmt._for_update_arg is not None
    return not isinstance(stmt, Explain)


def _refused(exc: BaseException) -> bool:
    """Whether the database answered a statement with an error, so that it did nothing."""
    return isinstance(exc, DomainError) and not isinstance(exc, (Unavailable, DeadlineExceeded))


class ScopedTable:
    """Runs statements built by one tenant scope on one connection.

    The base of every repository: `_execute` refuses statements the scope did
    not build, turns database errors into domain errors, remembers failure, and
    records what it changed in `changes` (for caches, after commit).
    """

    table: ClassVar[Table]
    errors: ClassVar[ErrorContext]

    def __init__(
        self,
        conn: AsyncConnection,
        tenant: str,
        *,
        actor: str | None = None,
        writes: Writes | None = None,
        changes: Changes | None = None,
        source: Callable[[type[ScopedTable]], ScopedTable] | None = None,
    ) -> None:
        self._conn = conn
        self._writes = writes or Writes()
        self.changes = changes if changes is not None else Changes()
        # What built this repository (the unit of work's Repositories), for `sibling`.
        self._source = source
        self.scope = TenantScope(self.table, tenant)
        self.c = self.table.c
        self.actor = actor
        # Set when a statement failed: PostgreSQL would turn a later COMMIT into a
        # silent ROLLBACK, so the unit of work refuses to commit after it.
        self.failed = False
        # The lean path for this connection's dialect (repositories/prepared.py), or None.
        self._lean = prepared.statements(conn.dialect)

    @property
    def dialect(self) -> str:
        return self._conn.dialect.name

    def sibling(self, cls: type[T]) -> T:
        """The repository of another table in this one's unit of work: the same connection,
        tenant and actor, its changes recorded and its failures seen with this one's."""
        if self._source is not None:
            repo = self._source(cls)
        else:
            repo = cls(
                self._conn,
                self.scope.tenant,
                actor=self.actor,
                writes=self._writes,
                changes=self.changes,
            )
        assert isinstance(repo, cls)
        return repo

    async def _execute(
        self,
        stmt: Executable,
        params: Params = None,
        *,
        rows_recorded: bool = False,
    ) -> CursorResult[Any]:
        """Runs a statement of this scope. An UPDATE or DELETE whose caller does not record
        the rows it changed (`rows_recorded`) counts as changing the tenant's whole table."""
        writing = self._admit(stmt)
        try:
            with translate_db_errors(self.errors):
                result = await self._conn.execute(stmt, self.scope.bind(stmt, params))
        except BaseException as exc:
            self._failed(writing, exc)
            raise
        self._ran(stmt, rows_recorded)
        return result

    async def _rows(
        self,
        stmt: Executable,
        params: dict[str, Any] | None = None,
        *,
        rows_recorded: bool = False,
    ) -> list[Row]:
        """`_execute`, for the rows a statement returns: on the lean path
        (repositories/prepared.py) where it runs, else through SQLAlchemy."""
        lean = self._lean
        if lean is None:
            return mappings(await self._execute(stmt, params, rows_recorded=rows_recorded))
        writing = self._admit(stmt)
        bound = self.scope.bind(stmt, params)
        assert not isinstance(bound, list)
        try:
            with translate_db_errors(self.errors):
                rows: list[Row] | None = await prepared.fetch(lean, self._conn, stmt, bound)
                if rows is None:
                    rows = mappings(await self._conn.execute(stmt, bound))
        except BaseException as exc:
            self._failed(writing, exc)
            raise
        self._ran(stmt, rows_recorded)
        return rows

    def _admit(self, stmt: Executable) -> bool:
        """Refuses a statement this scope did not build, or a write the unit has no room
        for; whether it writes."""
        self.scope.check(stmt)
        return self._writes.take(stmt)

    def _failed(self, writing: bool, exc: BaseException) -> None:
        self.failed = True
        if writing and not _refused(exc):
            # Cut off (cancelled, connection lost) rather than refused: in autocommit
            # it may have committed, so what caches this table must forget the tenant's.
            self.changes.tables.add((self.table.name, self.scope.tenant))

    def _ran(self, stmt: Executable, rows_recorded: bool) -> None:
        if not rows_recorded and isinstance(stmt, (Update, Delete)):
            self.changes.tables.add((self.table.name, self.scope.tenant))

"""The one door to tenant-scoped tables.

Every SELECT, INSERT, UPDATE and DELETE a repository runs is built here, with
the tenant already in it, and marked; `Repository` refuses to execute a
statement that does not carry this scope's mark. A repository method cannot
forget the tenant, and bulk statements are scoped like single-row ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Delete,
    Insert,
    Select,
    Table,
    Update,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.sql.base import Executable

from repositories.explain import Explain

_MARK = "repogate_tenant"
TENANT_COLUMN = "tenant_id"
_S = TypeVar("_S", bound=Executable)


class ScopeViolation(RuntimeError):
    """A statement reached the database without the tenant scope: a programming error."""


class TenantScope:
    def __init__(self, table: Table, tenant: str) -> None:
        if not tenant:
            raise ScopeViolation("a tenant scope needs a tenant")
        self.table = table
        self.tenant = tenant
        self._tenant_column = table.c[TENANT_COLUMN]

    def select(self, *columns: Any) -> Select[Any]:
        stmt = select(*columns) if columns else select(self.table)
        return self._mark(stmt.where(self._tenant_column == self.tenant))

    def insert(self, rows: Iterable[Mapping[str, Any]]) -> Insert:
        scoped = [{**row, TENANT_COLUMN: self.tenant} for row in rows]
        return self._mark(insert(self.table).values(scoped))

    def insert_many(self, rows: Sequence[Mapping[str, Any]]) -> tuple[Insert, list[dict[str, Any]]]:
        """One INSERT for any number of rows, run as an executemany (SQLAlchemy caches its
        compiled form), and the rows as its parameters: each with this scope's tenant, and
        all with the same keys, a row's missing ones taking their column's default."""
        keys = {key for row in rows for key in row} - {TENANT_COLUMN}
        defaults = {key: _scalar_default(self.table.c[key]) for key in keys}
        params = [{**defaults, **row, TENANT_COLUMN: self.tenant} for row in rows]
        return self._mark(insert(self.table)), params

    def update(self, values: Mapping[str, Any]) -> Update:
        # Keys may be names or Column objects; both name the tenant column.
        if any(getattr(key, "key", key) == TENANT_COLUMN for key in values):
            raise ScopeViolation("a row cannot move to another tenant")
        stmt = update(self.table).where(self._tenant_column == self.tenant).values(dict(values))
        return self._mark(stmt)

    def delete(self) -> Delete:
        return self._mark(delete(self.table).where(self._tenant_column == self.tenant))

    def explain(self, stmt: Select[Any]) -> Explain:
        """The plan of a statement this scope built."""
        self.check(stmt)
        return self._mark(Explain(stmt))

    def check(self, stmt: Executable) -> None:
        if stmt.get_execution_options().get(_MARK) is not self:
            raise ScopeViolation("statement was not built by this repository's tenant scope")

    def _mark(self, stmt: _S) -> _S:
        return stmt.execution_options(**{_MARK: self})


def _scalar_default(column: Column[Any]) -> Any:
    default = column.default
    return default.arg if default is not None and default.is_scalar else None  # type: ignore[attr-defined]

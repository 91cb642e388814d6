"""The one door to tenant-scoped tables.

Every SELECT, INSERT, UPDATE and DELETE a repository runs is built here, with
the tenant already in it, and marked; `Repository` refuses to execute a
statement that does not carry this scope's mark. A repository method cannot
forget the tenant, and bulk statements are scoped like single-row ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Delete, Insert, Select, Table, Update, delete, insert, select, update
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

"""The generic repository: standard methods for any tenant-scoped entity.

Statements are SQLAlchemy Core, executed on the unit of work's connection, and
come back as row mappings: the ORM's identity map and unit-of-work bookkeeping
cost more CPU per call than the database does, and nothing here needs them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

from sqlalchemy import ColumnElement, CursorResult, RowMapping, Select, func
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

from repositories.entity import Entity
from repositories.errors import EtagMismatch, NotFound, translate_db_errors
from repositories.ordering import Order
from repositories.ordering import after as keyset_after
from repositories.scope import ScopeViolation, TenantScope

Row = RowMapping


class Repository:
    """Standard methods over one entity, scoped to one tenant.

    Subclasses set `entity` and add domain queries built from `self.scope`.
    """

    entity: ClassVar[Entity]

    def __init__(self, conn: AsyncConnection, tenant: str, *, read_only: bool = False) -> None:
        self._conn = conn
        self._read_only = read_only
        self.scope = TenantScope(self.entity.table, tenant)
        self.c = self.entity.table.c
        # Set when a statement failed: PostgreSQL would turn a later COMMIT into a
        # silent ROLLBACK, so the unit of work refuses to commit after it.
        self.failed = False

    async def get(self, id_: uuid.UUID) -> Row:
        result = await self._execute(self.scope.select().where(self.c.id == id_))
        row = result.mappings().one_or_none()
        if row is None:
            raise NotFound(self.entity.resource_type, str(id_))
        return row

    async def page(
        self,
        limit: int,
        after: Sequence[Any] | None = None,
        *,
        where: ColumnElement[bool] | None = None,
        order: Order | None = None,
        skip: int = 0,
    ) -> tuple[list[Row], bool]:
        """One page of rows matching `where` in `order` (default: the entity's), starting
        after the keyset position `after` and then skipping `skip` rows. The flag says
        whether more rows follow."""
        order = order or self.entity.order
        stmt = self.scope.select().order_by(*(key.clause() for key in order))
        if where is not None:
            stmt = stmt.where(where)
        if after is not None:
            stmt = stmt.where(keyset_after(order, after))
        stmt = stmt.offset(skip or None).limit(limit + 1)
        rows = list((await self._execute(stmt)).mappings())
        return rows[:limit], len(rows) > limit

    async def count(self, where: ColumnElement[bool] | None = None) -> int:
        stmt = self.scope.select(func.count())
        if where is not None:
            stmt = stmt.where(where)
        return int((await self._execute(stmt)).scalar_one())

    async def create(self, values: Mapping[str, Any]) -> Row:
        now = datetime.now(UTC)
        row = {**values, "id": uuid.uuid4(), "version": 1, "create_time": now, "update_time": now}
        result = await self._execute(self.scope.insert([row]).returning(self.entity.table))
        return result.mappings().one()

    async def update(
        self, id_: uuid.UUID, values: Mapping[str, Any], expected_version: int | None = None
    ) -> Row:
        """Applies `values`; with `expected_version`, only if the row is still at it."""
        changes = {**values, "version": self.c.version + 1, "update_time": datetime.now(UTC)}
        stmt = self.scope.update(changes).where(self._identity(id_, expected_version))
        row = (await self._execute(stmt.returning(self.entity.table))).mappings().one_or_none()
        if row is None:
            await self._raise_missing_or_stale(id_)
        return row

    async def delete(self, id_: uuid.UUID, expected_version: int | None = None) -> Row:
        stmt = self.scope.delete().where(self._identity(id_, expected_version))
        row = (await self._execute(stmt.returning(self.entity.table))).mappings().one_or_none()
        if row is None:
            await self._raise_missing_or_stale(id_)
        return row

    async def update_where(self, values: Mapping[str, Any], *criteria: ColumnElement[bool]) -> int:
        """Bulk update of this tenant's rows matching `criteria`; returns the count."""
        changes = {**values, "version": self.c.version + 1, "update_time": datetime.now(UTC)}
        result = await self._execute(self.scope.update(changes).where(*criteria))
        return _rowcount(result)

    async def delete_where(self, *criteria: ColumnElement[bool]) -> int:
        """Bulk delete of this tenant's rows matching `criteria`; returns the count."""
        return _rowcount(await self._execute(self.scope.delete().where(*criteria)))

    async def _execute(self, stmt: Executable) -> CursorResult[Any]:
        self.scope.check(stmt)
        if self._read_only and not isinstance(stmt, Select):
            raise ScopeViolation("a read-only unit of work cannot write")
        try:
            with translate_db_errors(self.entity.errors):
                return await self._conn.execute(stmt)
        except Exception:
            self.failed = True
            raise

    def _identity(self, id_: uuid.UUID, expected_version: int | None) -> ColumnElement[bool]:
        match = self.c.id == id_
        return match if expected_version is None else match & (self.c.version == expected_version)

    async def _raise_missing_or_stale(self, id_: uuid.UUID) -> NoReturn:
        found = await self._execute(self.scope.select(self.c.id).where(self.c.id == id_))
        if found.first() is None:
            raise NotFound(self.entity.resource_type, str(id_))
        raise EtagMismatch(self.entity.resource_type, str(id_))


def _rowcount(result: CursorResult[Any]) -> int:
    return int(result.rowcount)

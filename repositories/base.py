"""The generic repository: standard methods for any tenant-scoped entity.

Statements are SQLAlchemy Core, executed on the unit of work's connection, and
come back as row mappings: the ORM's identity map and unit-of-work bookkeeping
cost more CPU per call than the database does, and nothing here needs them.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, NoReturn

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    CursorResult,
    Delete,
    Select,
    Table,
    Update,
    any_,
    func,
    literal,
    or_,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY

from repositories import scoped_table
from repositories.entity import Entity
from repositories.errors import (
    Conflict,
    EtagMismatch,
    NotDeleted,
    NotFound,
    ResourceDeleted,
)
from repositories.ordering import Order
from repositories.ordering import after as keyset_after
from repositories.scope import ID_PARAM, VERSION_PARAM, set_param
from repositories.scoped_table import ScopedTable, mappings

Row = scoped_table.Row


class Repository(ScopedTable):
    """Standard methods over one entity, scoped to one tenant.

    Subclasses set `entity` and add domain queries built from `self.scope`.
    Rows are soft-deleted by `delete` (AIP-164): `get` still returns them,
    `page` and `count` hide them unless asked, and writes refuse them.
    """

    entity: ClassVar[Entity]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "entity" in cls.__dict__:
            cls.table = cls.entity.table
            cls.errors = cls.entity.errors

    @classmethod
    def inherits(cls, *methods: str) -> bool:
        """Whether this repository runs the generic `methods` as they are. For one row,
        `create`, `update`, `undelete` and `delete_many` each run one write statement."""
        return all(getattr(cls, name) is getattr(Repository, name) for name in methods)

    async def get(self, id_: uuid.UUID) -> Row:
        rows = await self._rows(self.scope.select_by_id(), {ID_PARAM: id_})
        if not rows:
            raise NotFound(self.entity.resource_type, str(id_))
        return rows[0]

    async def get_many(
        self, ids: Sequence[uuid.UUID], *, columns: Sequence[ColumnElement[Any]] = ()
    ) -> list[Row]:
        """The rows with `ids`, in that order; NotFound names the first one missing.
        `columns`: only these (with `id`), not the whole row."""
        stmt = self.scope.select(*columns).where(self._one_of(ids))
        by_id = {row["id"]: row for row in await self._rows(stmt)}
        for id_ in ids:
            if id_ not in by_id:
                raise NotFound(self.entity.resource_type, str(id_))
        return [by_id[id_] for id_ in ids]

    async def page(
        self,
        limit: int,
        after: Sequence[Any] | None = None,
        *,
        where: ColumnElement[bool] | None = None,
        order: Order | None = None,
        skip: int = 0,
        show_deleted: bool = False,
        columns: Sequence[ColumnElement[Any]] = (),
    ) -> tuple[list[Row], bool]:
        """One page of rows matching `where` in `order` (default: the entity's), starting
        after the keyset position `after` and then skipping `skip` rows. The flag says
        whether more rows follow. `columns`: only these (with the order's), not whole rows."""
        stmt = self.page_statement(
            limit,
            after,
            where=where,
            order=order,
            skip=skip,
            show_deleted=show_deleted,
            columns=columns,
        )
        rows = await self._rows(stmt)
        return rows[:limit], len(rows) > limit

    def page_statement(
        self,
        limit: int,
        after: Sequence[Any] | None = None,
        *,
        where: ColumnElement[bool] | None = None,
        order: Order | None = None,
        skip: int = 0,
        show_deleted: bool = False,
        columns: Sequence[ColumnElement[Any]] = (),
    ) -> Select[Any]:
        """The statement `page` runs: one row more than `limit`, to tell whether more follow.
        Index advice EXPLAINs it (repositories/plans.py)."""
        order = order or self.entity.order
        stmt = self._matching(self.scope.select(*columns), where, show_deleted)
        stmt = stmt.order_by(*(key.clause() for key in order))
        if after is not None:
            stmt = stmt.where(keyset_after(order, after))
        return stmt.offset(skip or None).limit(limit + 1)

    async def count(
        self, where: ColumnElement[bool] | None = None, *, show_deleted: bool = False
    ) -> int:
        (row,) = await self._rows(self.count_statement(where, show_deleted=show_deleted))
        (count,) = row.values()
        return int(count)

    def count_statement(
        self, where: ColumnElement[bool] | None = None, *, show_deleted: bool = False
    ) -> Select[Any]:
        """The statement `count` runs."""
        return self._matching(self.scope.select(func.count()), where, show_deleted)

    async def estimate(
        self, where: ColumnElement[bool] | None = None, *, show_deleted: bool = False
    ) -> int | None:
        """The PostgreSQL planner's row estimate for the count; None elsewhere."""
        if self.dialect != "postgresql":
            return None
        stmt = self._matching(self.scope.select(self.c.id), where, show_deleted)
        plan = (await self._execute(self.scope.explain(stmt))).scalar_one()
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    async def create(self, values: Mapping[str, Any]) -> Row:
        (row,) = await self.create_many([values])
        return row

    async def create_many(
        self, values: Sequence[Mapping[str, Any]], *, now: datetime | None = None
    ) -> list[Row]:
        """Inserts every row, created `now` (default: the current time); returns them in the
        order given. One statement, compiled once: on PostgreSQL an INSERT from unnested
        column arrays, elsewhere an executemany sent as multi-row INSERTs. A row's `id` is
        a new UUID, unless its values hold one (an upsert's, which the client chose)."""
        now = now or datetime.now(UTC)
        count = len(values)
        ids = [each.get("id") or uuid.uuid4() for each in values]
        stamps = {
            "version": 1,
            "create_time": now,
            "update_time": now,
            "created_by": self.actor,
            "updated_by": self.actor,
        }
        if count > 1 and self.dialect == "postgresql":
            insert, columns = self.scope.insert_columns(values, {"id": ids}, stamps)
            rows = await self._rows(insert.returning(self.entity.table), columns)
            by_id = {row["id"]: row for row in rows}
            return [by_id[id_] for id_ in ids]
        rows = [{**each, "id": id_, **stamps} for each, id_ in zip(values, ids, strict=True)]
        stmt, params = self.scope.insert_many(rows)
        if len(params) == 1:
            # One row runs as a plain execute: SQLAlchemy's executemany path costs
            # about 60 µs more, for nothing to batch.
            return await self._rows(self.scope.insert_returning(), params[0])
        returning = stmt.returning(self.entity.table, sort_by_parameter_order=True)
        return mappings(await self._execute(returning, params))  # executemany

    async def update(
        self, id_: uuid.UUID, values: Mapping[str, Any], expected_version: int | None = None
    ) -> Row:
        """Applies `values` to a live row; with `expected_version`, only if still at it."""
        return await self._change_one(id_, expected_version, values, deleted=False)

    async def delete(
        self,
        id_: uuid.UUID,
        expected_version: int | None = None,
        *,
        force: bool = False,
        retention: timedelta | None = None,
    ) -> Row:
        """Soft-deletes a live row (purge_time = now + `retention`), or with `force`
        deletes any row for good. Returns the row as it was left."""
        (row,) = await self.delete_many([(id_, expected_version, force)], retention=retention)
        return row

    async def delete_many(
        self,
        items: Sequence[tuple[uuid.UUID, int | None, bool]],
        *,
        retention: timedelta | None = None,
    ) -> list[Row]:
        """(id, expected version, force) for each row; one statement for the soft
        deletes and one for the forced. All or nothing: the first row that cannot
        be deleted raises, and the caller's unit of work rolls back."""
        done: dict[uuid.UUID, Row] = {}
        soft = [(id_, version) for id_, version, force in items if not force]
        forced = [(id_, version) for id_, version, force in items if force]
        if soft:
            now = datetime.now(UTC)
            purge = now + retention if retention else None
            changes = self._changes({"delete_time": now, "purge_time": purge}, now)
            stmt = self.scope.update(changes).where(self._identities(soft), self._live())
            done |= await self._returning(stmt)
        if forced:
            done |= await self._returning(self.scope.delete().where(self._identities(forced)))
        for id_, version, force in items:
            if id_ not in done:
                # Other items are already changed in this transaction: it must not commit.
                self.failed = self.failed or bool(done)
                await self._raise_why(id_, version, deleted=None if force else False)
        return [done[id_] for id_, _, _ in items]

    async def undelete(self, id_: uuid.UUID, expected_version: int | None = None) -> Row:
        values = {"delete_time": None, "purge_time": None}
        return await self._change_one(id_, expected_version, values, deleted=True)

    async def update_where(self, values: Mapping[str, Any], *criteria: ColumnElement[bool]) -> int:
        """Bulk update of this tenant's rows matching `criteria`; returns the count."""
        result = await self._execute(self.scope.update(self._changes(values)).where(*criteria))
        return _rowcount(result)

    async def delete_where(self, *criteria: ColumnElement[bool]) -> int:
        """Bulk hard delete of this tenant's rows matching `criteria`; returns the count."""
        return _rowcount(await self._execute(self.scope.delete().where(*criteria)))

    async def delete_batches(self, *criteria: ColumnElement[bool], batch: int = 1000) -> int:
        """As `delete_where`, `batch` rows per statement: each statement's work and locks
        stay bounded however many rows match. Returns the count."""
        total = 0
        while True:
            chosen = self.scope.select(self.c.id).where(*criteria).limit(batch)
            deleted = await self.delete_where(self.c.id.in_(chosen))
            total += deleted
            if deleted < batch:
                return total

    def _one_of(self, ids: Sequence[uuid.UUID]) -> ColumnElement[bool]:
        """`id` is one of `ids`. On PostgreSQL as `= ANY(array)`: one parameter, so the
        statement has one shape however many ids (an IN list has one per length, and
        leaves the lean path of repositories/prepared.py)."""
        if self.dialect == "postgresql":
            return self.c.id == any_(literal(sorted(set(ids)), ARRAY(self.c.id.type)))
        return self.c.id.in_(set(ids))

    def _live(self) -> ColumnElement[bool]:
        return _live(self.table)

    def _matching(
        self, stmt: Select[Any], where: ColumnElement[bool] | None, show_deleted: bool
    ) -> Select[Any]:
        if where is not None:
            stmt = stmt.where(where)
        return stmt if show_deleted else stmt.where(self._live())

    def _changes(self, values: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
        return {
            **values,
            "version": self.c.version + 1,
            "update_time": now or datetime.now(UTC),
            "updated_by": self.actor,
        }

    def _identity(self, id_: uuid.UUID, expected_version: int | None) -> ColumnElement[bool]:
        match = self.c.id == id_
        return match if expected_version is None else match & (self.c.version == expected_version)

    def _identities(self, items: Sequence[tuple[uuid.UUID, int | None]]) -> ColumnElement[bool]:
        if len(items) == 1:
            # One row: equality, which compiles to one shape (an IN list to one per length).
            return self._identity(*items[0])
        plain = [id_ for id_, version in items if version is None]
        pinned = [(id_, version) for id_, version in items if version is not None]
        clauses = []
        if plain:
            clauses.append(self.c.id.in_(plain))
        if pinned:
            clauses.append(tuple_(self.c.id, self.c.version).in_(pinned))
        return or_(*clauses)

    async def _change_one(
        self,
        id_: uuid.UUID,
        expected_version: int | None,
        values: Mapping[str, Any],
        *,
        deleted: bool,
    ) -> Row:
        """Updates one row that is soft-deleted (`deleted`) or live; says why if none matched."""
        if any(isinstance(value, ClauseElement) for value in values.values()):
            # A value computed in SQL (x = x + 1): a statement of its own.
            state = self.c.delete_time.is_not(None) if deleted else self._live()
            stmt = self.scope.update(self._changes(values)).where(
                self._identity(id_, expected_version), state
            )
            row = (await self._returning(stmt)).get(id_)
        else:
            row = (await self._update_one(id_, expected_version, values, deleted)).get(id_)
        if row is None:
            await self._raise_why(id_, expected_version, deleted=deleted)
        return row

    async def _update_one(
        self,
        id_: uuid.UUID,
        expected_version: int | None,
        values: Mapping[str, Any],
        deleted: bool,
    ) -> dict[uuid.UUID, Row]:
        """`_change_one`'s UPDATE of plain values, as a statement built once per shape."""
        sets = {**values, "update_time": datetime.now(UTC), "updated_by": self.actor}
        sets.pop("version", None)  # always one up, as in `_changes`
        versioned = expected_version is not None
        stmt = self.scope.update_one(tuple(sorted(sets)), versioned=versioned, deleted=deleted)
        params = {set_param(key): value for key, value in sets.items()}
        params[ID_PARAM] = id_
        if versioned:
            params[VERSION_PARAM] = expected_version
        return await self._returning(stmt, params)

    async def _returning(
        self, stmt: Update | Delete, params: dict[str, Any] | None = None
    ) -> dict[uuid.UUID, Row]:
        """Runs an UPDATE or DELETE and returns the rows it changed, by id. A statement
        that does not return its rows yet is made to."""
        if not stmt._returning:
            stmt = stmt.returning(self.entity.table)
        returned = await self._rows(stmt, params, rows_recorded=True)
        rows = {row["id"]: row for row in returned}
        gone = isinstance(stmt, Delete)
        tenant = self.scope.tenant
        self.changes.rows.extend(
            (self.table.name, tenant, id_, None if gone else row["version"])
            for id_, row in rows.items()
        )
        return rows

    async def _raise_why(
        self, id_: uuid.UUID, expected_version: int | None, *, deleted: bool | None
    ) -> NoReturn:
        """Says why a write matched no row. `deleted`: the state the write needed
        (True: soft-deleted, False: live, None: either)."""
        kind = self.entity.resource_type
        stmt = self.scope.select(self.c.version, self.c.delete_time).where(self.c.id == id_)
        found = (await self._execute(stmt)).first()
        if found is None:
            raise NotFound(kind, str(id_))
        is_deleted = found.delete_time is not None
        if deleted is False and is_deleted:
            raise ResourceDeleted(kind, str(id_))
        if deleted is True and not is_deleted:
            raise NotDeleted(kind, str(id_))
        if expected_version is not None and found.version != expected_version:
            raise EtagMismatch(kind, str(id_))
        # The row changed between the write and this look: another call won.
        raise Conflict(f"{kind} {str(id_)!r} changed concurrently; retry")


@functools.cache
def _live(table: Table) -> ColumnElement[bool]:
    """`delete_time IS NULL`, built once per table."""
    return table.c.delete_time.is_(None)


def _rowcount(result: CursorResult[Any]) -> int:
    return int(result.rowcount)

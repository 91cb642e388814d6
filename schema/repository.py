"""The repository of a declared resource: the generic one, plus what its fields'
options ask of writes (references, per-parent sequences, counters).

One class per resource is made at load (`repository_class`); the behaviour is
here, once, for every declared resource.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, func

from repositories.base import Repository, Row
from repositories.entity import Entity
from repositories.errors import NotFound, ResourceDeleted


class DeclaredRepository(Repository):
    """Subclasses set `entity`, and `references` once every class exists. The
    subclasses below override the generic writes only for resources that need it:
    the generic ones run a single-row write as one statement (`Repository.inherits`)."""

    # Reference field -> the repository of the resource it refers to.
    references: ClassVar[dict[str, type[DeclaredRepository]]] = {}
    # (sequence field, its parent reference field), when the resource has one.
    sequence: ClassVar[tuple[str, str] | None] = None

    async def increment(
        self, id_: uuid.UUID, deltas: Mapping[str, int], expected_version: int | None = None
    ) -> Row:
        """Adds each delta to its counter, in one statement."""
        values = {name: self.c[name] + delta for name, delta in deltas.items()}
        return await self._change_one(id_, expected_version, values, deleted=False)

    async def update_if(
        self, id_: uuid.UUID, values: Mapping[str, Any], *criteria: ColumnElement[bool]
    ) -> Row | None:
        """Applies `values` to the live row `id_` if it meets `criteria`, in one statement
        (atomic on both databases); None when it does not (or is no live row)."""
        stmt = self.scope.update(self._changes(values)).where(
            self.c.id == id_, self._live(), *criteria
        )
        return (await self._returning(stmt)).get(id_)

    async def hold_live(self, ids: Collection[uuid.UUID], *, exclusive: bool = False) -> None:
        """Raises NotFound for the first of `ids` that is no row of this tenant, and
        ResourceDeleted for one that is soft-deleted. On PostgreSQL the rows stay locked
        until commit: FOR SHARE (none can be purged meanwhile) or, `exclusive`, FOR NO
        KEY UPDATE (also: one transaction at a time numbers their children)."""
        wanted = sorted(set(ids))
        stmt = self.scope.select(self.c.id, self.c.delete_time).where(self.c.id.in_(wanted))
        stmt = stmt.with_for_update(key_share=exclusive, read=not exclusive)
        found = {row.id: row.delete_time for row in await self._execute(stmt)}
        kind = self.entity.resource_type
        for id_ in ids:
            if id_ not in found:
                raise NotFound(kind, str(id_))
            if found[id_] is not None:
                raise ResourceDeleted(kind, str(id_))

    async def _number(self, rows: list[dict[str, Any]], field: str, parent: str) -> None:
        """Gives each row the next numbers of its parent, in the order given."""
        positions: dict[uuid.UUID, list[int]] = defaultdict(list)
        for index, row in enumerate(rows):
            positions[row[parent]].append(index)
        stmt = (
            self.scope.select(self.c[parent], func.max(self.c[field]))
            .where(self.c[parent].in_(sorted(positions)))
            .group_by(self.c[parent])
        )
        last: dict[Any, int] = dict((await self._execute(stmt)).all())  # type: ignore[arg-type]
        for key, indexes in positions.items():
            start = (last.get(key) or 0) + 1
            for number, index in enumerate(indexes, start=start):
                rows[index][field] = number


class Purging(DeclaredRepository):
    """Deletes for good (force) tell caches that the database changed other tables'
    rows too: children it deleted (ON DELETE CASCADE) or cleared (SET NULL)."""

    # Tables whose rows a purge of this one's may change, however deep.
    purges: ClassVar[tuple[str, ...]] = ()

    async def delete_many(
        self,
        items: Sequence[tuple[uuid.UUID, int | None, bool]],
        *,
        retention: timedelta | None = None,
    ) -> list[Row]:
        rows = await super().delete_many(items, retention=retention)
        if any(force for _, _, force in items):
            self.changes.tables.update((table, self.scope.tenant) for table in self.purges)
        return rows


class Referring(DeclaredRepository):
    """Creates and undeletes check that the rows they refer to are live rows of the
    tenant; creates number a sequence after the last of its parent."""

    async def create_many(
        self, values: Sequence[Mapping[str, Any]], *, now: datetime | None = None
    ) -> list[Row]:
        rows = [dict(each) for each in values]
        numbered = self.sequence[1] if self.sequence else None
        for field, referred in self.references.items():
            ids = [row[field] for row in rows if row.get(field) is not None]
            if ids:
                # The parent of a sequence is locked for writing: numbers are taken in turn.
                await self.sibling(referred).hold_live(ids, exclusive=field == numbered)
        if self.sequence is not None:
            number, parent = self.sequence
            await self._number(rows, number, parent)
        return await super().create_many(rows, now=now)

    async def undelete(self, id_: uuid.UUID, expected_version: int | None = None) -> Row:
        """Restores a row whose referred rows are live (RESOURCE_DELETED otherwise), as a
        create would need them."""
        row = await self.get(id_)
        if row["delete_time"] is not None:
            for field, referred in self.references.items():
                if row[field] is not None:
                    await self.sibling(referred).hold_live([row[field]])
        return await super().undelete(id_, expected_version)


class ReferringUpdates(Referring):
    """As Referring; so do updates, for references that may change."""

    async def update(
        self, id_: uuid.UUID, values: Mapping[str, Any], expected_version: int | None = None
    ) -> Row:
        for field, referred in self.references.items():
            if values.get(field) is not None:
                await self.sibling(referred).hold_live([values[field]])
        return await super().update(id_, values, expected_version)


def repository_class(
    message_name: str,
    entity: Entity,
    *,
    references: bool,
    mutable_references: bool,
    sequence: tuple[str, str] | None,
    purges: tuple[str, ...] = (),
) -> type[DeclaredRepository]:
    base: type[DeclaredRepository] = DeclaredRepository
    if mutable_references:
        base = ReferringUpdates
    elif references or sequence:
        base = Referring
    bases: tuple[type[DeclaredRepository], ...] = (Purging, base) if purges else (base,)
    return type(
        f"{message_name}Repository",
        bases,
        {"entity": entity, "sequence": sequence, "references": {}, "purges": purges},
    )

"""Entities with a status column and rules for which status may follow which.

A change of status is one UPDATE whose WHERE names the statuses it may come
from, so two concurrent changes cannot both pass the rule: the loser matches no
row, and is told why (INVALID_STATUS_TRANSITION naming both states, or the
usual NOT_FOUND, RESOURCE_DELETED, ETAG_MISMATCH).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

from sqlalchemy import case

from repositories.base import Repository, Row
from repositories.errors import InvalidTransition


@dataclass(frozen=True)
class Lifecycle:
    """status -> the statuses that may follow it. Statuses without successors are final."""

    transitions: Mapping[str, Collection[str]]
    column: str = "status"

    def sources(self, target: str) -> frozenset[str]:
        """The statuses a row may go to `target` from."""
        return frozenset(s for s, following in self.transitions.items() if target in following)


class StatefulRepository(Repository):
    """A repository whose entity moves through a `Lifecycle`. The generic update goes
    through `transition` when it writes the status; writing the current status again
    is no transition and always allowed."""

    lifecycle: ClassVar[Lifecycle]

    def entering(self, status: str, now: datetime) -> dict[str, Any]:
        """Columns a row takes on when it enters `status` (such as the time it finished)."""
        return {}

    async def create_many(
        self, values: Sequence[Mapping[str, Any]], *, now: datetime | None = None
    ) -> list[Row]:
        now = now or datetime.now(UTC)
        column = self.lifecycle.column
        rows = [{**each, **self.entering(each[column], now)} for each in values]
        return await super().create_many(rows, now=now)

    async def update(
        self, id_: uuid.UUID, values: Mapping[str, Any], expected_version: int | None = None
    ) -> Row:
        target = values.get(self.lifecycle.column)
        if target is None:
            return await super().update(id_, values, expected_version)
        sources = self.lifecycle.sources(target) | {target}
        return await self.transition(id_, target, values, expected_version, sources=sources)

    async def transition(
        self,
        id_: uuid.UUID,
        target: str,
        values: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        *,
        sources: Collection[str] | None = None,
        action: str | None = None,
    ) -> Row:
        """Moves a live row to `target`, writing `values` too, if its status is one of
        `sources` (by default, those the lifecycle allows to go to `target`). `action`
        names what is refused, for work that needs the row to be in `target` already."""
        allowed = self.lifecycle.sources(target) if sources is None else frozenset(sources)
        status = self.c[self.lifecycle.column]
        now = datetime.now(UTC)
        # Entering a status sets its columns; staying in it leaves them as they are.
        entered = {
            name: case((status == target, self.c[name]), else_=value)
            for name, value in self.entering(target, now).items()
        }
        changes = self._changes({**(values or {}), **entered, status.key: target}, now)
        stmt = self.scope.update(changes).where(
            self._identity(id_, expected_version), self._live(), status.in_(sorted(allowed))
        )
        row = (await self._returning(stmt)).get(id_)
        if row is None:
            await self._refuse(id_, target, allowed, expected_version, action)
        return row

    async def _refuse(
        self,
        id_: uuid.UUID,
        target: str,
        allowed: frozenset[str],
        expected_version: int | None,
        action: str | None,
    ) -> NoReturn:
        status = self.c[self.lifecycle.column]
        stmt = self.scope.select(status, self.c.version, self.c.delete_time).where(self.c.id == id_)
        found = (await self._execute(stmt)).first()
        if (
            found is not None
            and found.delete_time is None
            and expected_version in (None, found.version)
            and found[0] not in allowed
        ):
            kind = self.entity.resource_type
            raise InvalidTransition(kind, str(id_), found[0], target, action=action)
        await self._raise_why(id_, expected_version, deleted=False)

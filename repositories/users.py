"""Users: the generic repository over the users table, plus look-ups and logins."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func

from repogate.v1 import user_pb2
from repositories.base import Repository, Row
from repositories.errors import NotFound, UserNotLive
from repositories.tables import users
from schema.entities import entity_of

USER = entity_of(user_pb2.User, users)


class UserRepository(Repository):
    entity = USER

    async def find(self, field: str, value: str) -> Row:
        """The live user whose `field` (email or username) is `value`, ignoring case as
        the unique indexes do."""
        column = self.c[field]
        stmt = self.scope.select().where(func.lower(column) == func.lower(value), self._live())
        rows = await self._rows(stmt)
        row = rows[0] if rows else None
        if row is None:
            raise NotFound(self.entity.resource_type, f"{field}={value}")
        return row

    async def taken(self, email: str, username: str) -> tuple[bool, bool]:
        """Whether a live user has this email, and this username (empty: not asked)."""
        email_match = func.lower(self.c.email) == func.lower(email)
        username_match = func.lower(self.c.username) == func.lower(username)
        stmt = self.scope.select(email_match, username_match).where(
            self._live(), email_match | username_match
        )
        found = [tuple(row) for row in await self._execute(stmt)]
        return (
            bool(email) and any(row[0] for row in found),
            bool(username) and any(row[1] for row in found),
        )

    async def record_login(self, id_: uuid.UUID) -> Row:
        return await self.update(id_, {"last_login_time": datetime.now(UTC)})

    async def lock_live(self, ids: Collection[uuid.UUID]) -> None:
        """Raises UserNotLive for the first of `ids` that is not a live user. On PostgreSQL
        the users stay locked (FOR SHARE) until commit: none can be deleted meanwhile."""
        stmt = (
            self.scope.select(self.c.id)
            .where(self.c.id.in_(sorted(set(ids))), self._live())
            .with_for_update(read=True)
        )
        found = set((await self._execute(stmt)).scalars())
        for id_ in ids:
            if id_ not in found:
                raise UserNotLive(str(id_))

    async def delete_many(
        self,
        items: Sequence[tuple[uuid.UUID, int | None, bool]],
        *,
        retention: timedelta | None = None,
    ) -> list[Row]:
        """As Repository.delete_many; a user is purged (force) only without live sessions,
        and its deleted sessions go with it."""
        purged = [id_ for id_, _, force in items if force]
        if purged:
            # Sessions refer to users: imported here, where it is needed.
            from repositories.sessions import SessionRepository

            await self.sibling(SessionRepository).release_users(purged)
        return await super().delete_many(items, retention=retention)

"""Sessions: a user's conversations with an agent, with counters kept in SQL.

Every counter changes by `SET x = x + :n` in one UPDATE, so concurrent increments
add up; the row lock (PostgreSQL) or the write lock (SQLite) orders them.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, or_

from repogate.v1 import session_pb2
from repositories.base import Row
from repositories.errors import UserHasSessions
from repositories.lifecycle import Lifecycle, StatefulRepository
from repositories.tables import messages, sessions
from repositories.users import UserRepository
from schema.entities import entity_of

# total_cost_usd: exact decimal text in the message, a number in the column.
SESSION = entity_of(session_pb2.Session, sessions, {"total_cost_usd": "float"})

# What CountActiveSessions counts (as the agent-sessions API did).
ACTIVE = ("active", "waiting", "processing")
FINISHED = ("completed", "failed", "terminated")
LIFECYCLE = Lifecycle(
    {
        "created": {*ACTIVE, *FINISHED},
        **{status: {*ACTIVE, *FINISHED} - {status} for status in ACTIVE},
        **{status: set() for status in FINISHED},
    }
)


class SessionRepository(StatefulRepository):
    entity = SESSION
    lifecycle = LIFECYCLE

    def entering(self, status: str, now: datetime) -> dict[str, Any]:
        return {"completed_time": now} if status in FINISHED else {}

    async def create_many(
        self, values: Sequence[Mapping[str, Any]], *, now: datetime | None = None
    ) -> list[Row]:
        """Sessions of live users of this tenant only (USER_NOT_LIVE otherwise)."""
        await self.sibling(UserRepository).lock_live([each["user_id"] for each in values])
        now = now or datetime.now(UTC)
        rows = [{**each, "last_access_time": now} for each in values]
        return await super().create_many(rows, now=now)

    async def undelete(self, id_: uuid.UUID, expected_version: int | None = None) -> Row:
        """Restores a session whose user is live (USER_NOT_LIVE otherwise)."""
        session = await self.get(id_)
        if session["delete_time"] is not None:
            await self.sibling(UserRepository).lock_live([session["user_id"]])
        return await super().undelete(id_, expected_version)

    async def delete_many(
        self,
        items: Sequence[tuple[uuid.UUID, int | None, bool]],
        *,
        retention: timedelta | None = None,
    ) -> list[Row]:
        """As Repository.delete_many. Soft delete leaves a session's messages as they are;
        purging it (force) purges them (ON DELETE CASCADE)."""
        rows = await super().delete_many(items, retention=retention)
        if any(force for _, _, force in items):
            self._messages_purged()
        return rows

    async def count_active(self, user_id: uuid.UUID) -> int:
        stmt = self.scope.select(func.count()).where(
            self.c.user_id == user_id, self.c.status.in_(ACTIVE), self._live()
        )
        return int((await self._execute(stmt)).scalar_one())

    async def increment(self, id_: uuid.UUID, amounts: Mapping[str, int | Decimal]) -> Row:
        """Adds `amounts` to the counters they name, in SQL; touches the session."""
        values: dict[str, Any] = {name: self.c[name] + amount for name, amount in amounts.items()}
        return await self.touch(id_, values)

    async def touch(self, id_: uuid.UUID, values: Mapping[str, Any] | None = None) -> Row:
        """Sets last_access_time to now (with `values`) on a live session."""
        changes = {**(values or {}), "last_access_time": datetime.now(UTC)}
        return await self._change_one(id_, None, changes, deleted=False)

    async def take_sequence_numbers(self, id_: uuid.UUID, count: int) -> int:
        """Reserves the next `count` message sequence numbers of a live session; returns the
        last. The UPDATE holds the session's row (or SQLite's write lock) until commit, so
        concurrent appends take turns, and a rolled-back append returns its numbers."""
        counter = self.c.last_sequence_number
        row = await self.touch(id_, {counter.key: counter + count})
        return int(row[counter.key])

    async def purge(self, cutoff: datetime, batch: int = 1000) -> int:
        """Purges sessions (deleted or not) completed, or last accessed, before `cutoff`,
        with their messages, `batch` sessions per statement. Returns how many."""
        stale = or_(self.c.completed_time < cutoff, self.c.last_access_time < cutoff)
        purged = await self.delete_batches(stale, batch=batch)
        if purged:
            self._messages_purged()
        return purged

    async def release_users(self, user_ids: Collection[uuid.UUID]) -> None:
        """Before users are purged: USER_HAS_SESSIONS while one has live sessions; otherwise
        purges their deleted sessions. A session created meanwhile still stops the purge:
        the foreign key restricts it (FAILED_PRECONDITION)."""
        ids = sorted(set(user_ids))
        stmt = (
            self.scope.select(self.c.user_id, func.count(case((self._live(), 1))))
            .where(self.c.user_id.in_(ids))
            .group_by(self.c.user_id)
        )
        # Users with any session -> how many of them are live.
        live = {user: int(count) for user, count in map(tuple, await self._execute(stmt))}
        for user_id in user_ids:
            if live.get(user_id):
                raise UserHasSessions(str(user_id), live[user_id])
        if live:
            await self._returning(self.scope.delete().where(self.c.user_id.in_(ids)))
            self._messages_purged()

    def _messages_purged(self) -> None:
        # The database removed them (ON DELETE CASCADE): record it for caches.
        self.changes.tables.add((messages.name, self.scope.tenant))

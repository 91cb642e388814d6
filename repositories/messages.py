"""Messages: the numbered entries of a session.

A create takes its sequence numbers from the session's counter
(SessionRepository.take_sequence_numbers) in the same transaction, so numbers
per session are 1, 2, 3, ... without gaps or repeats however many appends race;
the unique index (tenant, session, sequence) stands behind that.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement

from repogate.v1 import message_pb2
from repositories.base import Repository, Row
from repositories.errors import NoMessage
from repositories.json_match import contains
from repositories.sessions import SessionRepository
from repositories.tables import messages
from schema.entities import entity_of

MESSAGE = entity_of(message_pb2.Message, messages)


class MessageRepository(Repository):
    entity = MESSAGE

    async def create_many(
        self, values: Sequence[Mapping[str, Any]], *, now: datetime | None = None
    ) -> list[Row]:
        """Numbers each message after the last of its session, in the order given."""
        positions: dict[uuid.UUID, list[int]] = defaultdict(list)
        for index, each in enumerate(values):
            positions[each["session_id"]].append(index)
        numbered = [dict(each) for each in values]
        sessions = self.sibling(SessionRepository)
        # Sessions in one order for every call: two batches never wait for each other.
        for session_id in sorted(positions):
            indexes = positions[session_id]
            last = await sessions.take_sequence_numbers(session_id, len(indexes))
            for number, index in enumerate(indexes, start=last - len(indexes) + 1):
                numbered[index]["sequence_number"] = number
        return await super().create_many(numbered, now=now)

    async def latest(self, session_id: uuid.UUID, message_type: str = "") -> Row:
        """The live message of the session with the highest sequence number, of
        `message_type` when given."""
        stmt = self.scope.select().where(self.c.session_id == session_id, self._live())
        if message_type:
            stmt = stmt.where(self.c.message_type == message_type)
        stmt = stmt.order_by(self.c.sequence_number.desc()).limit(1)
        rows = await self._rows(stmt)
        row = rows[0] if rows else None
        if row is None:
            await self.sibling(SessionRepository).get(session_id)  # NOT_FOUND for the session
            raise NoMessage(str(session_id), message_type)
        return row

    @staticmethod
    def containing(content: dict[str, Any]) -> ColumnElement[bool]:
        """Messages whose content contains `content` (PostgreSQL's jsonb @>)."""
        return contains(messages.c.content, content)

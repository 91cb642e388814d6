"""Request ids for idempotent writes (AIP-155), kept per tenant until they expire.

A write with a request id claims the id first, in the write's own
transaction, so the claim and the write commit or roll back together. Two
calls racing with one id collide on the primary key: the loser's transaction
rolls back and it replays what the winner stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from repositories.errors import ErrorContext
from repositories.scoped_table import ScopedTable
from repositories.tables import request_ids

# PostgreSQL names the primary key; SQLite names its columns.
_ERRORS = ErrorContext(
    "request",
    {"pk_request_ids": "request_id", "request_ids.tenant_id, request_ids.id": "request_id"},
)


@dataclass(frozen=True)
class Recorded:
    """What the first call with a request id did."""

    method: str
    digest: str
    response: bytes

    @property
    def items(self) -> list[bytes]:
        """The serialized messages its response held, in order."""
        return unpack(self.response)


class RequestLog(ScopedTable):
    table = request_ids
    errors = _ERRORS

    async def find(self, id_: uuid.UUID) -> Recorded | None:
        """The unexpired record of `id_`, if any."""
        stmt = self.scope.select(self.c.method, self.c.digest, self.c.response).where(
            self.c.id == id_, self.c.expire_time > datetime.now(UTC)
        )
        row = (await self._execute(stmt)).first()
        return None if row is None else Recorded(row.method, row.digest, row.response)

    async def claim(self, id_: uuid.UUID, method: str, digest: str, keep: timedelta) -> None:
        """Takes the id for this transaction. AlreadyExists (field request_id) if a live
        record has it; on PostgreSQL a concurrent claim waits for ours to end."""
        now = datetime.now(UTC)
        # An expired record may still be here until the purge job runs.
        await self._execute(self.scope.delete().where(self.c.id == id_, self.c.expire_time <= now))
        row = {
            "id": id_,
            "method": method,
            "digest": digest,
            "response": b"",
            "create_time": now,
            "expire_time": now + keep,
        }
        await self._execute(self.scope.insert([row]))

    async def complete(self, id_: uuid.UUID, items: Sequence[bytes]) -> None:
        """Stores the response a retry will get: the messages it held, serialized."""
        stmt = self.scope.update({"response": pack(items)}).where(self.c.id == id_)
        await self._execute(stmt)


def pack(items: Sequence[bytes]) -> bytes:
    """Length-prefixed items."""
    return b"".join(len(item).to_bytes(4, "big") + item for item in items)


def unpack(data: bytes) -> list[bytes]:
    items, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        items.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return items

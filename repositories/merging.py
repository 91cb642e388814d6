"""Read-modify-write of one row, with no write of another call in between.

An update that sets one key of a JSON document keeps the rest of the document as
it is at the moment of the write: the row is read locked (FOR UPDATE on PostgreSQL;
SQLite's write transaction holds the database), the new values are computed from
it, and the update is pinned to the version read, so a write that slipped in would
make it a conflict to retry rather than a lost update.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from repositories.base import Repository, Row


async def update_merged(
    repo: Repository,
    id_: uuid.UUID,
    values: Callable[[Row], Mapping[str, Any]],
    expected_version: int | None = None,
) -> Row:
    """Updates the live row `id_` with `values(row)`, `row` being the row as it is,
    locked. Raises as `Repository.update` does for a row that is missing, deleted, or
    not at `expected_version`; `values` may raise to write nothing."""
    stmt = repo.scope.select().where(repo.c.id == id_).with_for_update()
    rows = await repo._rows(stmt)
    row = rows[0] if rows else None
    if (
        row is None
        or row["delete_time"] is not None
        or (expected_version is not None and row["version"] != expected_version)
    ):
        await repo._raise_why(id_, expected_version, deleted=False)
    return await repo.update(id_, values(row), row["version"])

"""What a unit of work changed, so that caches forget it once, and only if, it commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass
class Changes:
    """Rows changed by a unit of work, recorded where every write passes (ScopedTable),
    or announced by the database (repositories/notify.py)."""

    # (table, tenant, id, version now; None when the row is gone for good)
    rows: list[tuple[str, str, uuid.UUID, int | None]] = field(default_factory=list)
    # (table, tenant) changed by statements that named no rows (bulk updates and deletes)
    tables: set[tuple[str, str]] = field(default_factory=set)
    # tables whose rows of any tenant may have changed
    everywhere: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.rows or self.tables or self.everywhere)

    def extend(self, other: Changes) -> None:
        self.rows.extend(other.rows)
        self.tables |= other.tables
        self.everywhere |= other.everywhere

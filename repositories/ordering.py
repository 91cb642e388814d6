"""`order_by` (AIP-132): parsing over a whitelist, and keyset positions.

Every order ends with the id, so rows have a total order and a keyset
position (the sort values of the last row seen) names one place in it.

A nullable column sorts NULL after every value: last ascending, first
descending. That is PostgreSQL's default, so an ordinary index serves both
directions there; SQLite, whose default is the reverse, is told NULLS LAST or
NULLS FIRST. A keyset position may hold NULL, and `after` compares with NULL
as the greatest value, so pages cross from values to NULLs and back.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from repositories.errors import InvalidArgument

MAX_ORDER_BY = 512
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TERM = re.compile(rf"\s*({_NAME})(?:\s+(asc|desc))?\s*", re.IGNORECASE)
# A term whose name may be a path (`payload.tool`, `create_time.day`), as aggregates order.
_DOTTED_TERM = re.compile(rf"\s*({_NAME}(?:\.{_NAME})*)(?:\s+(asc|desc))?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class SortKey:
    name: str
    column: ColumnElement[Any]
    descending: bool = False

    @property
    def nullable(self) -> bool:
        return bool(getattr(self.column, "nullable", False))

    def clause(self) -> ColumnElement[Any]:
        if self.descending:
            return self.column.desc().nulls_first() if self.nullable else self.column.desc()
        return self.column.asc().nulls_last() if self.nullable else self.column.asc()

    def same(self, value: Any) -> ColumnElement[bool]:
        return self.column.is_(None) if value is None else self.column == value

    def beyond(self, value: Any) -> ColumnElement[bool] | None:
        """Rows after `value` in this key's direction, NULL being the greatest; None
        when no row can be (ascending past NULL)."""
        if value is None:
            return self.column.is_not(None) if self.descending else None
        if self.descending:
            below: ColumnElement[bool] = self.column < value
            return below
        above: ColumnElement[bool] = self.column > value
        return or_(above, self.column.is_(None)) if self.nullable else above

    def bound(self, value: Any) -> ColumnElement[bool] | None:
        """The range of this key `beyond` stays in, as an index range scan can use it;
        None where that is no plain range."""
        if value is None:
            return None if self.descending else self.column.is_(None)
        if self.descending:
            most: ColumnElement[bool] = self.column <= value
            return most
        least: ColumnElement[bool] = self.column >= value
        return None if self.nullable else least


Order = tuple[SortKey, ...]


def parse_order_by(text: str, sortable: Mapping[str, ColumnElement[Any]], default: str) -> Order:
    """'display_name desc, create_time' -> sort keys, with `id` appended as the tie-breaker."""
    keys: list[SortKey] = []
    for name, descending in order_terms(text.strip() or default):
        if name not in sortable:
            raise _invalid(
                f"cannot sort by {name!r}; sortable fields: {', '.join(sorted(sortable))}"
            )
        keys.append(SortKey(name, sortable[name], descending))
    if keys[-1].name != "id" and all(key.name != "id" for key in keys):
        keys.append(SortKey("id", sortable["id"]))
    return tuple(keys)


def order_terms(
    text: str, *, limit: int = MAX_ORDER_BY, dotted: bool = False, noun: str = "field"
) -> Iterator[tuple[str, bool]]:
    """The (name, descending) terms of an `order_by` text, one at a time, so that a caller's
    refusal of a name comes before a later term's fault. INVALID_ORDER_BY (field order_by)
    for a text over `limit` characters, a malformed term or a name given twice. `dotted`:
    names may be paths. A blank text has none."""
    if len(text) > limit:
        raise _invalid(f"is longer than {limit} characters")
    if not text.strip():
        return
    seen: set[str] = set()
    for part in text.split(","):
        match = (_DOTTED_TERM if dotted else _TERM).fullmatch(part)
        if match is None:
            raise _invalid(f"{part.strip()!r} is not '{noun}' or '{noun} desc'")
        name = match.group(1)
        if name in seen:
            raise _invalid(f"{name!r} appears twice")
        seen.add(name)
        yield name, (match.group(2) or "").lower() == "desc"


def after(order: Order, position: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after `position` in `order`: (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ...

    Written out rather than as a row comparison because directions may differ per key.
    """
    clauses = []
    for i, key in enumerate(order):
        beyond = key.beyond(position[i])
        if beyond is not None:
            equal = [order[j].same(position[j]) for j in range(i)]
            clauses.append(and_(*equal, beyond))
    # Implied by the OR, but only this form bounds an index range scan: without it a
    # deep page reads and discards every row before it.
    bound = order[0].bound(position[0])
    later = or_(*clauses)
    return later if bound is None else and_(bound, later)


def position_of(order: Order, row: Mapping[Any, Any]) -> list[Any]:
    """The JSON-safe keyset position of `row`."""
    values: list[Any] = []
    for key in order:
        value = row[key.name]
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        values.append(value)
    return values


def position_from(order: Order, values: Any) -> list[Any]:
    """Parses a position decoded from a page token back into column values."""
    if not isinstance(values, list) or len(values) != len(order):
        raise ValueError("position does not match the order")
    parsed: list[Any] = []
    for key, value in zip(order, values, strict=True):
        python_type = key.column.type.python_type
        if value is None:
            if not key.nullable:
                raise ValueError(f"{key.name}: null in a column that holds none")
            parsed.append(None)
        elif python_type is datetime:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError(f"{key.name}: timestamp without an offset")
            parsed.append(moment)
        elif python_type is uuid.UUID:
            parsed.append(uuid.UUID(value))
        elif isinstance(value, python_type) and not (
            python_type is int and isinstance(value, bool)
        ):
            parsed.append(value)
        else:
            raise ValueError(f"{key.name}: {type(value).__name__} is not {python_type.__name__}")
    return parsed


def _invalid(problem: str) -> InvalidArgument:
    return InvalidArgument.field("order_by", problem, reason="INVALID_ORDER_BY")

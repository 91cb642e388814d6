"""Column types that behave the same on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp.

    SQLite keeps no offset, so values are stored as naive UTC there and read
    back as aware; PostgreSQL uses TIMESTAMPTZ.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.driver == "asyncpg":
            # asyncpg gives TIMESTAMPTZ as aware datetimes in UTC already: nothing to do
            # for each of a row's timestamps (five a user, 250 in a page of 50).
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class FixedDecimal(TypeDecorator[Decimal]):
    """An exact decimal with `scale` digits after the point, stored as a BIGINT count of
    10**-scale units.

    SQLite has no exact decimal type (NUMERIC is stored as REAL there), and integer
    arithmetic in SQL (`SET x = x + :n`) is exact and atomic on both databases.
    """

    impl = BigInteger
    cache_ok = True

    def __init__(self, scale: int = 9) -> None:
        super().__init__()
        self.scale = scale

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal

    def process_bind_param(self, value: Decimal | float | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        # repr() gives a float's shortest decimal form (0.1, not 0.1000000000000000055...).
        exact = value if isinstance(value, Decimal) else Decimal(repr(value))
        return int(exact.scaleb(self.scale).to_integral_value(ROUND_HALF_EVEN))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(int(value)).scaleb(-self.scale)


def json_document() -> TypeEngine[Any]:
    """A JSON column: JSONB on PostgreSQL (containment, GIN indexes), JSON text on SQLite.
    Python None is SQL NULL, not JSON null."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

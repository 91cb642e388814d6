"""The schema. Migrations under migrations/versions are the source of truth for
the database; these Core tables describe it to the code and must agree."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    text,
)

from repositories.types import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TENANT_ID_MAX = 128
ACTOR_MAX = 256
LIVE = text("delete_time IS NULL")


def standard_columns() -> list[Column[object]]:
    """The columns the generic repository manages on every entity table."""
    return [
        Column("tenant_id", String(TENANT_ID_MAX), primary_key=True),
        Column("id", Uuid(as_uuid=True), primary_key=True),
        Column("version", Integer, nullable=False, default=1),
        Column("create_time", UTCDateTime(), nullable=False),
        Column("update_time", UTCDateTime(), nullable=False),
        Column("delete_time", UTCDateTime(), nullable=True),
        Column("purge_time", UTCDateTime(), nullable=True),
        Column("created_by", String(ACTOR_MAX), nullable=True),
        Column("updated_by", String(ACTOR_MAX), nullable=True),
    ]


def live_unique(name: str, *columns: Any) -> Index:
    """A unique index over live rows only: soft-deleted rows free their values."""
    return Index(name, *columns, unique=True, postgresql_where=LIVE, sqlite_where=LIVE)


users = Table(
    "users",
    metadata,
    *standard_columns(),
    Column("email", String(254), nullable=False),
    Column("username", String(64), nullable=False),
    Column("display_name", String(256), nullable=False, default=""),
    Column("is_active", Boolean, nullable=False, default=True),
)
# Case-insensitive uniqueness per tenant; the names are how errors name the field.
live_unique("uq_users_tenant_email", users.c.tenant_id, func.lower(users.c.email))
live_unique("uq_users_tenant_username", users.c.tenant_id, func.lower(users.c.username))
# The default list order, walked by keyset.
Index("ix_users_tenant_create_time", users.c.tenant_id, users.c.create_time, users.c.id)
# The purge job's scan.
Index(
    "ix_users_purge_time",
    users.c.purge_time,
    postgresql_where=users.c.purge_time.is_not(None),
    sqlite_where=users.c.purge_time.is_not(None),
)

# AIP-155 request ids: the first response to each, replayed to retries.
request_ids = Table(
    "request_ids",
    metadata,
    Column("tenant_id", String(TENANT_ID_MAX), primary_key=True),
    Column("id", Uuid(as_uuid=True), primary_key=True),
    Column("method", String(128), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("expire_time", UTCDateTime(), nullable=False),
)
Index("ix_request_ids_expire_time", request_ids.c.expire_time)

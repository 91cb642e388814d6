"""The schema. Migrations under migrations/versions are the source of truth for
the database; these Core tables describe it to the code and must agree."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, MetaData, String, Table, Uuid, func

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

users = Table(
    "users",
    metadata,
    Column("tenant_id", String(TENANT_ID_MAX), primary_key=True),
    Column("id", Uuid(as_uuid=True), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("username", String(64), nullable=False),
    Column("display_name", String(256), nullable=False, default=""),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("version", Integer, nullable=False, default=1),
    Column("create_time", UTCDateTime(), nullable=False),
    Column("update_time", UTCDateTime(), nullable=False),
)
# Case-insensitive uniqueness per tenant; the names are how errors name the field.
Index("uq_users_tenant_email", users.c.tenant_id, func.lower(users.c.email), unique=True)
Index("uq_users_tenant_username", users.c.tenant_id, func.lower(users.c.username), unique=True)
# The default list order, walked by keyset.
Index("ix_users_tenant_create_time", users.c.tenant_id, users.c.create_time, users.c.id)

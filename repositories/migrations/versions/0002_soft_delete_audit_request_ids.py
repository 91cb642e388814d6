"""Soft delete and audit columns on users; request ids for idempotent writes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from repositories.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "delete_time IS NULL"
UNIQUE = {"uq_users_tenant_email": "email", "uq_users_tenant_username": "username"}


def _unique(name: str, column: str, where: str | None) -> None:
    condition = None if where is None else sa.text(where)
    op.create_index(
        name,
        "users",
        ["tenant_id", sa.text(f"lower({column})")],
        unique=True,
        postgresql_where=condition,
        sqlite_where=condition,
    )


def upgrade() -> None:
    op.add_column("users", sa.Column("delete_time", UTCDateTime(), nullable=True))
    op.add_column("users", sa.Column("purge_time", UTCDateTime(), nullable=True))
    op.add_column("users", sa.Column("created_by", sa.String(256), nullable=True))
    op.add_column("users", sa.Column("updated_by", sa.String(256), nullable=True))
    # Uniqueness ignores soft-deleted users: a deleted user's email can be taken again.
    for name, column in UNIQUE.items():
        op.drop_index(name, table_name="users")
        _unique(name, column, LIVE)
    op.create_index(
        "ix_users_purge_time",
        "users",
        ["purge_time"],
        postgresql_where=sa.text("purge_time IS NOT NULL"),
        sqlite_where=sa.text("purge_time IS NOT NULL"),
    )
    op.create_table(
        "request_ids",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("method", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("expire_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_request_ids"),
    )
    op.create_index("ix_request_ids_expire_time", "request_ids", ["expire_time"])


def downgrade() -> None:
    op.drop_table("request_ids")
    op.drop_index("ix_users_purge_time", table_name="users")
    # Fails if deleted and live users now share an email: purge those first.
    for name, column in UNIQUE.items():
        op.drop_index(name, table_name="users")
        _unique(name, column, None)
    for column in ("updated_by", "created_by", "purge_time", "delete_time"):
        op.drop_column("users", column)

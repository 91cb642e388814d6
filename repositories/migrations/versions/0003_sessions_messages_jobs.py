"""Sessions, their messages, jobs; users' last login.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from repositories.types import FixedDecimal, UTCDateTime, json_document

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSION_STATUSES = (
    "created",
    "active",
    "waiting",
    "processing",
    "completed",
    "failed",
    "terminated",
)
JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
PENDING = "status = 'pending' AND delete_time IS NULL"


def _standard_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("create_time", UTCDateTime(), nullable=False),
        sa.Column("update_time", UTCDateTime(), nullable=False),
        sa.Column("delete_time", UTCDateTime(), nullable=True),
        sa.Column("purge_time", UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.Column("updated_by", sa.String(256), nullable=True),
    ]


def _one_of(name: str, statuses: tuple[str, ...]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{status}'" for status in statuses)
    return sa.CheckConstraint(f"status IN ({listed})", name=name)


def _partial(name: str, table: str, columns: list[str | sa.TextClause], where: str) -> None:
    condition = sa.text(where)
    op.create_index(name, table, columns, postgresql_where=condition, sqlite_where=condition)


def _tenant_indexes(table: str) -> None:
    """What every entity table has: the default list order and the purge job's scan."""
    op.create_index(f"ix_{table}_tenant_create_time", table, ["tenant_id", "create_time", "id"])
    _partial(f"ix_{table}_purge_time", table, ["purge_time"], "purge_time IS NOT NULL")


def upgrade() -> None:
    op.add_column("users", sa.Column("last_login_time", UTCDateTime(), nullable=True))

    op.create_table(
        "sessions",
        *_standard_columns(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("preferences", json_document(), nullable=False),
        sa.Column("total_messages", sa.BigInteger(), nullable=False),
        sa.Column("total_tool_calls", sa.BigInteger(), nullable=False),
        sa.Column("total_cost_usd", FixedDecimal(9), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence_number", sa.BigInteger(), nullable=False),
        sa.Column("last_access_time", UTCDateTime(), nullable=False),
        sa.Column("completed_time", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_sessions"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["users.tenant_id", "users.id"],
            name="fk_sessions_tenant_id_users",
            ondelete="RESTRICT",
        ),
        _one_of("ck_sessions_status", SESSION_STATUSES),
    )
    op.create_index("ix_sessions_tenant_user_id", "sessions", ["tenant_id", "user_id", "status"])
    op.create_index(
        "ix_sessions_tenant_last_access_time", "sessions", ["tenant_id", "last_access_time"]
    )
    _partial(
        "ix_sessions_tenant_completed_time",
        "sessions",
        ["tenant_id", "completed_time"],
        "completed_time IS NOT NULL",
    )
    _tenant_indexes("sessions")

    op.create_table(
        "messages",
        *_standard_columns(),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("sequence_number", sa.BigInteger(), nullable=False),
        sa.Column("message_type", sa.String(64), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("content", json_document(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "session_id"],
            ["sessions.tenant_id", "sessions.id"],
            name="fk_messages_tenant_id_sessions",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "uq_messages_tenant_session_id_sequence_number",
        "messages",
        ["tenant_id", "session_id", "sequence_number"],
        unique=True,
    )
    op.create_index(
        "ix_messages_tenant_session_id_message_type",
        "messages",
        ["tenant_id", "session_id", "message_type", "sequence_number"],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_messages_content",
            "messages",
            ["content"],
            postgresql_using="gin",
            postgresql_ops={"content": "jsonb_path_ops"},
        )
    _tenant_indexes("messages")

    op.create_table(
        "jobs",
        *_standard_columns(),
        sa.Column("job_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("payload", json_document(), nullable=False),
        sa.Column("result", json_document(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("enqueue_time", UTCDateTime(), nullable=False),
        sa.Column("start_time", UTCDateTime(), nullable=True),
        sa.Column("finish_time", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_jobs"),
        _one_of("ck_jobs_status", JOB_STATUSES),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name="ck_jobs_progress"),
    )
    queue: list[str | sa.TextClause] = [sa.text("priority DESC"), "enqueue_time", "id"]
    _partial("ix_jobs_queue", "jobs", ["tenant_id", *queue], PENDING)
    _partial("ix_jobs_queue_job_type", "jobs", ["tenant_id", "job_type", *queue], PENDING)
    op.create_index("ix_jobs_tenant_job_type_status", "jobs", ["tenant_id", "job_type", "status"])
    _partial(
        "ix_jobs_tenant_finish_time",
        "jobs",
        ["tenant_id", "finish_time"],
        "finish_time IS NOT NULL",
    )
    _tenant_indexes("jobs")


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("messages")
    op.drop_table("sessions")
    op.drop_column("users", "last_login_time")

"""The schema. Migrations under migrations/versions are the source of truth for
the database; these Core tables describe it to the code and must agree."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)

from repositories.types import FixedDecimal, UTCDateTime, json_document

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


def partial_index(name: str, *columns: Any, where: Any) -> Index:
    return Index(name, *columns, postgresql_where=where, sqlite_where=where)


def purge_index(table: Table) -> Index:
    """The purge job's scan of a table's soft-deleted rows."""
    due = table.c.purge_time.is_not(None)
    return partial_index(f"ix_{table.name}_purge_time", table.c.purge_time, where=due)


def one_of(name: str, column: str, values: tuple[str, ...]) -> CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({listed})", name=name)


def tenant_reference(columns: list[str], parent: str, *, ondelete: str) -> ForeignKeyConstraint:
    """A foreign key that includes the tenant: a row can only refer to its own tenant's."""
    return ForeignKeyConstraint(
        ["tenant_id", *columns], [f"{parent}.tenant_id", f"{parent}.id"], ondelete=ondelete
    )


users = Table(
    "users",
    metadata,
    *standard_columns(),
    Column("email", String(254), nullable=False),
    Column("username", String(64), nullable=False),
    Column("display_name", String(256), nullable=False, default=""),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("last_login_time", UTCDateTime(), nullable=True),
)
# Case-insensitive uniqueness per tenant; the names are how errors name the field.
live_unique("uq_users_tenant_email", users.c.tenant_id, func.lower(users.c.email))
live_unique("uq_users_tenant_username", users.c.tenant_id, func.lower(users.c.username))
# The default list order, walked by keyset.
Index("ix_users_tenant_create_time", users.c.tenant_id, users.c.create_time, users.c.id)
# The purge job's scan.
purge_index(users)

# The states of a session and of a job, as stored (the proto enums' names, lower case).
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

sessions = Table(
    "sessions",
    metadata,
    *standard_columns(),
    Column("user_id", Uuid(as_uuid=True), nullable=False),
    Column("name", String(256), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("preferences", json_document(), nullable=False),
    Column("total_messages", BigInteger, nullable=False, default=0),
    Column("total_tool_calls", BigInteger, nullable=False, default=0),
    # US dollars to the nano-dollar, exact: see FixedDecimal.
    Column("total_cost_usd", FixedDecimal(9), nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    # The counter AppendMessage takes message sequence numbers from.
    Column("last_sequence_number", BigInteger, nullable=False, default=0),
    Column("last_access_time", UTCDateTime(), nullable=False),
    Column("completed_time", UTCDateTime(), nullable=True),
    # A user with sessions cannot be purged (USER_HAS_SESSIONS is checked first; this is
    # the database's own guard).
    tenant_reference(["user_id"], "users", ondelete="RESTRICT"),
    one_of("ck_sessions_status", "status", SESSION_STATUSES),
)
# A user's sessions by status (CountActiveSessions, ListSessions by user, USER_HAS_SESSIONS).
Index("ix_sessions_tenant_user_id", sessions.c.tenant_id, sessions.c.user_id, sessions.c.status)
Index("ix_sessions_tenant_create_time", sessions.c.tenant_id, sessions.c.create_time, sessions.c.id)
# PurgeSessions: inactive before a cutoff, and completed before it.
Index("ix_sessions_tenant_last_access_time", sessions.c.tenant_id, sessions.c.last_access_time)
partial_index(
    "ix_sessions_tenant_completed_time",
    sessions.c.tenant_id,
    sessions.c.completed_time,
    where=sessions.c.completed_time.is_not(None),
)
purge_index(sessions)

messages = Table(
    "messages",
    metadata,
    *standard_columns(),
    Column("session_id", Uuid(as_uuid=True), nullable=False),
    Column("sequence_number", BigInteger, nullable=False),
    Column("message_type", String(64), nullable=False),
    Column("role", String(64), nullable=False, default=""),
    Column("content", json_document(), nullable=False),
    # Purging a session purges its messages.
    tenant_reference(["session_id"], "sessions", ondelete="CASCADE"),
)
# One number per message of a session; also the walk of a session in sequence order.
Index(
    "uq_messages_tenant_session_id_sequence_number",
    messages.c.tenant_id,
    messages.c.session_id,
    messages.c.sequence_number,
    unique=True,
)
# GetLatestMessage of a type.
Index(
    "ix_messages_tenant_session_id_message_type",
    messages.c.tenant_id,
    messages.c.session_id,
    messages.c.message_type,
    messages.c.sequence_number,
)
Index("ix_messages_tenant_create_time", messages.c.tenant_id, messages.c.create_time, messages.c.id)
# SearchMessages' containment (@>) on PostgreSQL; SQLite has no index for it.
Index(
    "ix_messages_content",
    messages.c.content,
    postgresql_using="gin",
    postgresql_ops={"content": "jsonb_path_ops"},
).ddl_if(dialect="postgresql")
purge_index(messages)

jobs = Table(
    "jobs",
    metadata,
    *standard_columns(),
    Column("job_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("progress", Integer, nullable=False, default=0),
    Column("payload", json_document(), nullable=False),
    Column("result", json_document(), nullable=True),
    Column("error_message", Text, nullable=False, default=""),
    Column("worker_id", String(128), nullable=False, default=""),
    Column("enqueue_time", UTCDateTime(), nullable=False),
    Column("start_time", UTCDateTime(), nullable=True),
    Column("finish_time", UTCDateTime(), nullable=True),
    one_of("ck_jobs_status", "status", JOB_STATUSES),
    CheckConstraint("progress BETWEEN 0 AND 100", name="ck_jobs_progress"),
)
# The queue in claim order (ClaimNextJob, GetQueuePosition), with and without a job type.
_PENDING = text("status = 'pending' AND delete_time IS NULL")
partial_index(
    "ix_jobs_queue",
    jobs.c.tenant_id,
    jobs.c.priority.desc(),
    jobs.c.enqueue_time,
    jobs.c.id,
    where=_PENDING,
)
partial_index(
    "ix_jobs_queue_job_type",
    jobs.c.tenant_id,
    jobs.c.job_type,
    jobs.c.priority.desc(),
    jobs.c.enqueue_time,
    jobs.c.id,
    where=_PENDING,
)
Index("ix_jobs_tenant_create_time", jobs.c.tenant_id, jobs.c.create_time, jobs.c.id)
# GetJobStatistics groups by type and status.
Index("ix_jobs_tenant_job_type_status", jobs.c.tenant_id, jobs.c.job_type, jobs.c.status)
# PurgeJobs: finished before a cutoff.
partial_index(
    "ix_jobs_tenant_finish_time",
    jobs.c.tenant_id,
    jobs.c.finish_time,
    where=jobs.c.finish_time.is_not(None),
)
purge_index(jobs)

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

# How transactions across calls ended (see migration 0004): the row that commits
# with a transaction, or the one a peer writes first to keep it from committing.
TRANSACTION_ID_MAX = 256
TRANSACTION_OUTCOMES = ("COMMITTED", "ABORTED")
transaction_outcomes = Table(
    "transaction_outcomes",
    metadata,
    Column("id", String(TRANSACTION_ID_MAX), primary_key=True),
    Column("tenant_id", String(TENANT_ID_MAX), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("expire_time", UTCDateTime(), nullable=False),
    one_of("ck_transaction_outcomes_outcome", "outcome", TRANSACTION_OUTCOMES),
)
Index("ix_transaction_outcomes_expire_time", transaction_outcomes.c.expire_time)

# What a declared schema changed, newest last (migration 0006, schema/migrations.py).
schema_history = Table(
    "repogate_schema",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("applied_time", UTCDateTime(), nullable=False),
    # sha256 of `snapshot`: the declared tables as this change left them.
    Column("digest", String(64), nullable=False),
    Column("snapshot", json_document(), nullable=False),
    Column("statements", json_document(), nullable=False),
)

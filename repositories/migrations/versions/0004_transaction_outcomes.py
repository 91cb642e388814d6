"""How transactions across calls ended, for every process of a fleet to read.

A row per read-write transaction that committed (written inside it, so it exists
exactly when the commit does) or that a peer process gave up on (written first,
so the owner's own row can no longer be written and its commit fails). The
primary key decides which came first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from repositories.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transaction_outcomes",
        sa.Column("id", sa.String(256), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("expire_time", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transaction_outcomes"),
        sa.CheckConstraint(
            "outcome IN ('COMMITTED', 'ABORTED')", name="ck_transaction_outcomes_outcome"
        ),
    )
    op.create_index("ix_transaction_outcomes_expire_time", "transaction_outcomes", ["expire_time"])


def downgrade() -> None:
    op.drop_table("transaction_outcomes")

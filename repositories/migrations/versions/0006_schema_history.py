"""The history of the changes a declared schema made (schema/migrations.py): one row per
change applied, with the schema's shape after it, so the next start compares against it.

The tables of declared resources are not Alembic's: schema/migrations.py creates and
alters them right after this chain's upgrade, in the same transaction, and records
each change here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from repositories.types import UTCDateTime, json_document

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "repogate_schema",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("applied_time", UTCDateTime(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("snapshot", json_document(), nullable=False),
        sa.Column("statements", json_document(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_repogate_schema"),
    )


def downgrade() -> None:
    op.drop_table("repogate_schema")

"""Entity tables record their committed writes in a change log (PostgreSQL only), so
that every process's cache can forget them; see repositories/change_log.py.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from repositories import change_log

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The entity tables as of this revision; later ones add their triggers where they
# are created.
TABLES = ("users", "sessions", "messages", "jobs")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one process: its writer's own invalidation is enough
    op.execute(change_log.CREATE_TABLE)
    op.execute(change_log.CREATE_INDEX)
    op.execute(change_log.CREATE_FUNCTION)
    for table in TABLES:
        for statement in change_log.create_triggers(table):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        for statement in change_log.drop_triggers(table):
            op.execute(statement)
    op.execute(change_log.DROP_FUNCTION)
    op.execute(change_log.DROP_TABLE)

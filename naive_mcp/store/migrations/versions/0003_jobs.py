"""Jobs: calls run in the background (`background: true`, MCP tasks), readable from any process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("project_id", sa.String(128)),
        sa.Column("tool", sa.String(60), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("partial_text", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("runner", sa.String(40), nullable=False),
        sa.Column("cancel_asked_at", sa.Float),
    )
    op.create_index("ix_jobs_owner", "jobs", ["key_digest", "created_at"])
    op.create_index("ix_jobs_expires_at", "jobs", ["expires_at"])


def downgrade() -> None:
    op.drop_table("jobs")

"""Threads: conversations kept so that a chat can continue one without resending it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("project_id", sa.String(128)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("system", sa.Text),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("turns", sa.Integer, nullable=False),
        sa.Column("chars", sa.Integer, nullable=False),
    )
    op.create_index("ix_threads_owner", "threads", ["key_digest", "updated_at"])
    op.create_index("ix_threads_expires_at", "threads", ["expires_at"])
    op.create_table(
        "turns",
        sa.Column(
            "thread_id", sa.String(40), sa.ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("chars", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("turns")
    op.drop_table("threads")

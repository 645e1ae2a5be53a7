"""The state store: caps, holds, leases, ledger, balances, rates, cancels.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "caps",
        sa.Column("scope", sa.String(300), primary_key=True),
        sa.Column("period", sa.String(20), primary_key=True),
        sa.Column("spent", sa.Float, nullable=False),
        sa.Column("reserved", sa.Float, nullable=False),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(40), nullable=False, index=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("credits", sa.Float, nullable=False),
        sa.Column("rows", sa.Text, nullable=False),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("project_id", sa.String(128)),
        sa.Column("model_asked", sa.String(200), nullable=False),
        sa.Column("generation_id", sa.String(200)),
        sa.Column("ending", sa.String(20)),
    )
    op.create_table(
        "leases",
        sa.Column("owner", sa.String(40), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(40), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=False),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("project_id", sa.String(128)),
        sa.Column("model_asked", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("provider", sa.String(200)),
        sa.Column("generation_id", sa.String(200)),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("cost_usd", sa.Float),
        sa.Column("credits", sa.Float),
        sa.Column("credits_reported", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
    )
    op.create_index("ix_ledger_ended_at", "ledger", ["ended_at"])
    op.create_index("ix_ledger_generation_id", "ledger", ["generation_id"])
    op.create_table(
        "balances",
        sa.Column("key_digest", sa.String(64), primary_key=True),
        sa.Column("credits_remaining", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )
    op.create_table(
        "rates",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("credits", sa.Float, nullable=False),
        sa.Column("usd", sa.Float, nullable=False),
    )
    op.create_table(
        "cancels",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in ("cancels", "rates", "balances", "ledger", "leases", "holds", "caps"):
        op.drop_table(table)

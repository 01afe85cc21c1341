"""The tables as of the first migration: silences, notification log, retry queue, saved dashboards.

Databases made before migrations existed already hold some of these tables
(created with ``create_all``); they are left as they are and only the
missing ones are created, so every database arrives at the same schema.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[tuple[str, list[Any]]]:
    return [
        ("silences", [
            sa.Column("tenant", sa.String(150), primary_key=True),
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("doc", sa.Text, nullable=False),
            sa.Column("ends_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        ]),
        ("nflog", [
            sa.Column("tenant", sa.String(150), primary_key=True),
            sa.Column("receiver", sa.String(512), primary_key=True),
            sa.Column("group_key", sa.Text, primary_key=True),
            sa.Column("timestamp", sa.Float, nullable=False),
            sa.Column("firing", sa.Text, nullable=False),
            sa.Column("resolved", sa.Text, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        ]),
        ("pending_notifications", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("tenant", sa.String(150), nullable=False),
            sa.Column("receiver", sa.String(512), nullable=False),
            sa.Column("group_key", sa.Text, nullable=False),
            sa.Column("seq", sa.Integer, nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_attempt", sa.Float, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("last_error", sa.Text, nullable=False),
            sa.UniqueConstraint("tenant", "receiver", "group_key", name="pending_one_per_group"),
        ]),
        ("ui_dashboards", [
            sa.Column("tenant", sa.String(150), primary_key=True),
            sa.Column("uid", sa.String(128), primary_key=True),
            sa.Column("yaml", sa.Text, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        ]),
    ]


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, items in _tables():
        if name not in existing:
            op.create_table(name, *items)


def downgrade() -> None:
    for name, _ in reversed(_tables()):
        op.drop_table(name)

"""Add sessionmeta's metadata tables beside the Agents SDK's (and its sessions table if missing).

Revision ID: 0001_sessionmeta
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

from sessionmeta import migrations

revision = "0001_sessionmeta"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(op)


def downgrade() -> None:
    migrations.downgrade(op)

"""organisation registration: status, registered_at, decided_at, decision_reason

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 01:50:00.000000

Written by hand. Only columns are added, so SQLite needs no batch copy of `organisation`: a batch copy would
drop and recreate a table that user_account, facility, affiliation and others reference, and with
`PRAGMA foreign_keys=ON` (set on every connection, and not switchable inside the migration's transaction)
dropping it would cascade into affiliation. ALTER TABLE ADD/DROP COLUMN with the constraint inline is valid on
both databases (SQLite >= 3.35 for DROP COLUMN). Existing organisations become approved.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.types

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE organisation ADD COLUMN status VARCHAR(32) DEFAULT 'approved' NOT NULL "
               "CONSTRAINT ck_organisation_organisation_status "
               "CHECK (status IN ('pending', 'approved', 'rejected'))")
    op.add_column('organisation', sa.Column('registered_at', core.types.UtcDateTime(timezone=True), nullable=True))
    op.add_column('organisation', sa.Column('decided_at', core.types.UtcDateTime(timezone=True), nullable=True))
    op.add_column('organisation', sa.Column('decision_reason', sa.String(length=500), nullable=True))
    op.create_index(op.f('ix_organisation_status'), 'organisation', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_organisation_status'), table_name='organisation')
    for column in ('decision_reason', 'decided_at', 'registered_at', 'status'):
        op.execute(f"ALTER TABLE organisation DROP COLUMN {column}")

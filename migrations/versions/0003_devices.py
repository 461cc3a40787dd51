"""devices

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 18:22:11.912300
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.types

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('device',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('usage_source', sa.Enum('events', 'status', 'power', name='usage_source', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('power_threshold_w', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('debounce_s', sa.Integer(), nullable=False),
    sa.Column('heartbeat_timeout_s', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('credential_hash', sa.String(length=200), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("usage_source <> 'power' OR power_threshold_w IS NOT NULL", name=op.f('ck_device_power_needs_threshold')),
    sa.CheckConstraint('debounce_s >= 0 AND debounce_s <= 3600', name=op.f('ck_device_debounce_range')),
    sa.CheckConstraint('heartbeat_timeout_s >= 10 AND heartbeat_timeout_s <= 86400', name=op.f('ck_device_heartbeat_range')),
    sa.CheckConstraint('power_threshold_w IS NULL OR power_threshold_w >= 0', name=op.f('ck_device_threshold_not_negative')),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_device_resource_id_resource')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device')),
    sa.UniqueConstraint('device_id', name=op.f('uq_device_device_id'))
    )
    with op.batch_alter_table('device', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_resource_id'), ['resource_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('device', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_resource_id'))

    op.drop_table('device')

"""telemetry points

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 18:25:34.944591
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('telemetry_point',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('field', sa.String(length=64), nullable=False),
    sa.Column('ts_ns', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Double(), nullable=True),
    sa.Column('flag', sa.Boolean(), nullable=True),
    sa.CheckConstraint('(value IS NULL) <> (flag IS NULL)', name=op.f('ck_telemetry_point_value_or_flag')),
    sa.PrimaryKeyConstraint('device_id', 'field', 'ts_ns', name=op.f('pk_telemetry_point'))
    )
    with op.batch_alter_table('telemetry_point', schema=None) as batch_op:
        batch_op.create_index('ix_telemetry_point_device_time', ['device_id', 'ts_ns'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('telemetry_point', schema=None) as batch_op:
        batch_op.drop_index('ix_telemetry_point_device_time')

    op.drop_table('telemetry_point')

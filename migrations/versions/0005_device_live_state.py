"""device live state, usage sessions, dead letters

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 20:11:01.752104
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.types

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dead_letter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('topic', sa.String(length=300), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.String(length=300), nullable=False),
    sa.Column('payload_head', sa.String(length=800), nullable=False),
    sa.Column('payload_size', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letter'))
    )
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dead_letter_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dead_letter_reason'), ['reason'], unique=False)
        batch_op.create_index(batch_op.f('ix_dead_letter_received_at'), ['received_at'], unique=False)

    op.create_table('device_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_pk', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('ts_ns', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['device_pk'], ['device.id'], name=op.f('fk_device_event_device_pk_device'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_event')),
    sa.UniqueConstraint('device_pk', 'event_id', name='uq_device_event_once')
    )
    with op.batch_alter_table('device_event', schema=None) as batch_op:
        batch_op.create_index('ix_device_event_device_time', ['device_pk', 'ts_ns'], unique=False)

    op.create_table('device_sample',
    sa.Column('device_pk', sa.Integer(), nullable=False),
    sa.Column('ts_ns', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('power_w', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['device_pk'], ['device.id'], name=op.f('fk_device_sample_device_pk_device'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_pk', 'ts_ns', name=op.f('pk_device_sample'))
    )
    op.create_table('device_state_observation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_pk', sa.Integer(), nullable=False),
    sa.Column('ts_ns', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.Enum('offline', 'idle', 'running', 'fault', 'maintenance', name='observed_state', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('cause', sa.Enum('status', 'heartbeat', 'alarm', 'alarm_cleared', name='observation_cause', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('detail', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['device_pk'], ['device.id'], name=op.f('fk_device_state_observation_device_pk_device'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_state_observation')),
    sa.UniqueConstraint('device_pk', 'ts_ns', 'cause', name='uq_device_state_observation_once')
    )
    op.create_table('usage_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_pk', sa.Integer(), nullable=False),
    sa.Column('start_ns', sa.BigInteger(), nullable=False),
    sa.Column('end_ns', sa.BigInteger(), nullable=True),
    sa.Column('started_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('truncated', sa.Boolean(), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=True),
    sa.Column('start_decided_ns', sa.BigInteger(), nullable=False),
    sa.Column('end_decided_ns', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('end_ns IS NULL OR end_ns > start_ns', name=op.f('ck_usage_session_positive_length')),
    sa.ForeignKeyConstraint(['device_pk'], ['device.id'], name=op.f('fk_usage_session_device_pk_device'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_session')),
    sa.UniqueConstraint('device_pk', 'start_ns', name='uq_usage_session_start')
    )
    with op.batch_alter_table('usage_session', schema=None) as batch_op:
        batch_op.create_index('ix_usage_session_started_at', ['started_at'], unique=False)

    with op.batch_alter_table('device', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.Enum('offline', 'idle', 'running', 'fault', 'maintenance', name='live_state', native_enum=False, create_constraint=True, length=32), nullable=False, server_default='offline'))
        batch_op.add_column(sa.Column('state_ts_ns', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('state_cause', sa.Enum('status', 'heartbeat', 'alarm', 'alarm_cleared', name='state_cause', native_enum=False, create_constraint=True, length=32), nullable=True))
        batch_op.add_column(sa.Column('state_detail', sa.String(length=500), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('last_seen_ns', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('usage_tail', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('device', schema=None) as batch_op:
        batch_op.drop_column('usage_tail')
        batch_op.drop_column('last_seen_ns')
        batch_op.drop_column('state_detail')
        batch_op.drop_constraint(op.f('ck_device_state_cause'), type_='check')
        batch_op.drop_column('state_cause')
        batch_op.drop_column('state_ts_ns')
        batch_op.drop_constraint(op.f('ck_device_live_state'), type_='check')
        batch_op.drop_column('state')

    with op.batch_alter_table('usage_session', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_session_started_at')

    op.drop_table('usage_session')
    op.drop_table('device_state_observation')
    op.drop_table('device_sample')
    with op.batch_alter_table('device_event', schema=None) as batch_op:
        batch_op.drop_index('ix_device_event_device_time')

    op.drop_table('device_event')
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letter_received_at'))
        batch_op.drop_index(batch_op.f('ix_dead_letter_reason'))
        batch_op.drop_index(batch_op.f('ix_dead_letter_device_id'))

    op.drop_table('dead_letter')

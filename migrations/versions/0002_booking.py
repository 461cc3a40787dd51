"""booking

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 17:52:12.478678
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.types

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


DEFAULTED_COLUMNS = ("search_text", "granularity_min", "min_duration_min", "max_duration_min", "lead_time_min",
                     "horizon_days", "bookable_hours", "approval_required", "qualification_required",
                     "cancellation_deadline_h")


def upgrade() -> None:
    op.create_table('outbound_email',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('to_address', sa.String(length=254), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('sent_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_outbound_email_user_id_user_account'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbound_email'))
    )
    with op.batch_alter_table('outbound_email', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbound_email_next_attempt_at'), ['next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbound_email_user_id'), ['user_id'], unique=False)

    op.create_table('blackout',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('starts_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.Enum('maintenance', 'calibration', 'holiday', name='blackout_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('ends_at > starts_at', name=op.f('ck_blackout_window_positive')),
    sa.ForeignKeyConstraint(['created_by_id'], ['user_account.id'], name=op.f('fk_blackout_created_by_id_user_account')),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_blackout_resource_id_resource')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blackout'))
    )
    with op.batch_alter_table('blackout', schema=None) as batch_op:
        batch_op.create_index('ix_blackout_resource_window', ['resource_id', 'starts_at', 'ends_at'], unique=False)

    op.create_table('calendar_feed',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('resource_id', sa.Integer(), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(user_id IS NULL) <> (resource_id IS NULL)', name=op.f('ck_calendar_feed_one_owner')),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_calendar_feed_resource_id_resource'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_calendar_feed_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calendar_feed')),
    sa.UniqueConstraint('digest', name=op.f('uq_calendar_feed_digest')),
    sa.UniqueConstraint('resource_id', name=op.f('uq_calendar_feed_resource_id')),
    sa.UniqueConstraint('user_id', name=op.f('uq_calendar_feed_user_id'))
    )
    op.create_table('qualification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('granted_by_id', sa.Integer(), nullable=True),
    sa.Column('granted_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['granted_by_id'], ['user_account.id'], name=op.f('fk_qualification_granted_by_id_user_account')),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_qualification_resource_id_resource'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_qualification_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qualification')),
    sa.UniqueConstraint('user_id', 'resource_id', name=op.f('uq_qualification_user_id_resource_id'))
    )
    with op.batch_alter_table('qualification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_qualification_resource_id'), ['resource_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_qualification_user_id'), ['user_id'], unique=False)

    op.create_table('reservation_series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('frequency', sa.Enum('daily', 'weekly', name='repeat_frequency', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('occurrences', sa.Integer(), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_reservation_series_resource_id_resource')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_reservation_series_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservation_series'))
    )
    with op.batch_alter_table('reservation_series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservation_series_resource_id'), ['resource_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reservation_series_user_id'), ['user_id'], unique=False)

    op.create_table('waitlist_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('starts_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('notified_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('ends_at > starts_at', name=op.f('ck_waitlist_entry_window_positive')),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_waitlist_entry_resource_id_resource')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_waitlist_entry_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_waitlist_entry'))
    )
    with op.batch_alter_table('waitlist_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_waitlist_entry_resource_id'), ['resource_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_waitlist_entry_user_id'), ['user_id'], unique=False)

    op.create_table('reservation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('billed_org_id', sa.Integer(), nullable=False),
    sa.Column('starts_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('state', sa.Enum('pending', 'confirmed', 'rejected', 'cancelled', 'completed', 'no_show', name='reservation_state', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('kind', sa.Enum('self_service', 'technician', name='reservation_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('sample_count', sa.Integer(), nullable=True),
    sa.Column('series_id', sa.Integer(), nullable=True),
    sa.Column('late_cancellation', sa.Boolean(), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=False),
    sa.Column('cancelled_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('reminder_sent_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('ends_at > starts_at', name=op.f('ck_reservation_window_positive')),
    sa.CheckConstraint('sample_count IS NULL OR sample_count > 0', name=op.f('ck_reservation_sample_count_positive')),
    sa.ForeignKeyConstraint(['billed_org_id'], ['organisation.id'], name=op.f('fk_reservation_billed_org_id_organisation')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['user_account.id'], name=op.f('fk_reservation_decided_by_id_user_account')),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_reservation_resource_id_resource')),
    sa.ForeignKeyConstraint(['series_id'], ['reservation_series.id'], name=op.f('fk_reservation_series_id_reservation_series')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_reservation_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservation'))
    )
    with op.batch_alter_table('reservation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservation_billed_org_id'), ['billed_org_id'], unique=False)
        batch_op.create_index('ix_reservation_resource_window', ['resource_id', 'starts_at', 'ends_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_reservation_series_id'), ['series_id'], unique=False)
        batch_op.create_index('ix_reservation_user_window', ['user_id', 'starts_at'], unique=False)

    op.create_table('sample_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('billed_org_id', sa.Integer(), nullable=False),
    sa.Column('sample_count', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('hazards', sa.Text(), nullable=False),
    sa.Column('state', sa.Enum('requested', 'scheduled', 'rejected', 'cancelled', name='sample_request_state', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('reservation_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('sample_count > 0', name=op.f('ck_sample_request_sample_count_positive')),
    sa.ForeignKeyConstraint(['billed_org_id'], ['organisation.id'], name=op.f('fk_sample_request_billed_org_id_organisation')),
    sa.ForeignKeyConstraint(['reservation_id'], ['reservation.id'], name=op.f('fk_sample_request_reservation_id_reservation')),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_sample_request_resource_id_resource')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_sample_request_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sample_request'))
    )
    with op.batch_alter_table('sample_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sample_request_resource_id'), ['resource_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sample_request_user_id'), ['user_id'], unique=False)

    op.create_table('resource_photo',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=100), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('caption', sa.String(length=200), nullable=False),
    sa.Column('uploaded_by_id', sa.Integer(), nullable=True),
    sa.Column('uploaded_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['resource.id'], name=op.f('fk_resource_photo_resource_id_resource'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uploaded_by_id'], ['user_account.id'], name=op.f('fk_resource_photo_uploaded_by_id_user_account'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resource_photo')),
    sa.UniqueConstraint('filename', name=op.f('uq_resource_photo_filename'))
    )
    with op.batch_alter_table('resource_photo', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_resource_photo_resource_id'), ['resource_id'], unique=False)

    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_text', sa.Text(), nullable=False, server_default=sa.text("''")))
        batch_op.add_column(sa.Column('granularity_min', sa.Integer(), nullable=False, server_default='30'))
        batch_op.add_column(sa.Column('min_duration_min', sa.Integer(), nullable=False, server_default='30'))
        batch_op.add_column(sa.Column('max_duration_min', sa.Integer(), nullable=False, server_default='480'))
        batch_op.add_column(sa.Column('lead_time_min', sa.Integer(), nullable=False, server_default='60'))
        batch_op.add_column(sa.Column('horizon_days', sa.Integer(), nullable=False, server_default='90'))
        batch_op.add_column(sa.Column('bookable_hours', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('approval_required', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('qualification_required', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('max_active_per_user', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cancellation_deadline_h', sa.Integer(), nullable=False, server_default='24'))
        batch_op.add_column(sa.Column('batch_days', sa.Integer(), nullable=True))


    # The defaults above only fill existing rows; the application sets every value explicitly.
    with op.batch_alter_table('resource', schema=None) as batch_op:
        for column in DEFAULTED_COLUMNS:
            batch_op.alter_column(column, server_default=None)
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_resource_granularity_range"), "granularity_min > 0 AND granularity_min <= 1440")
        batch_op.create_check_constraint(op.f("ck_resource_duration_range"),
                                         "min_duration_min > 0 AND max_duration_min >= min_duration_min")
        batch_op.create_check_constraint(op.f("ck_resource_rule_values"),
                                         "lead_time_min >= 0 AND horizon_days > 0 AND cancellation_deadline_h >= 0")
        batch_op.create_check_constraint(op.f("ck_resource_max_active_positive"), "max_active_per_user IS NULL OR max_active_per_user > 0")
        batch_op.create_check_constraint(op.f("ck_resource_batch_days_positive"), "batch_days IS NULL OR batch_days > 0")
    # Existing rows: pilot lines book whole days, and every row gets its search text.
    op.execute("UPDATE resource SET granularity_min = 1440, min_duration_min = 1440, max_duration_min = 43200, "
               "horizon_days = 365, cancellation_deadline_h = 72 WHERE kind = 'pilot_line'")
    op.execute("UPDATE resource SET search_text = lower(name_zh || ' ' || name_en || ' ' || model || ' ' || manufacturer)")

    if op.get_bind().dialect.name == "postgresql":
        # No two live reservations of a resource overlap: the database refuses it (see booking.models).
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute("ALTER TABLE reservation ADD CONSTRAINT reservation_no_overlap EXCLUDE USING gist "
                   "(resource_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) "
                   "WHERE (state IN ('pending', 'confirmed'))")
        # Substring search ("电镜" finds 扫描电镜) served by a trigram index.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_resource_search_text_trgm ON resource USING gin (search_text gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_resource_search_text_trgm")
    with op.batch_alter_table('resource', schema=None) as batch_op:
        for name in ("granularity_range", "duration_range", "rule_values", "max_active_positive",
                     "batch_days_positive"):
            batch_op.drop_constraint(op.f(f"ck_resource_{name}"), type_="check")
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_column('batch_days')
        batch_op.drop_column('cancellation_deadline_h')
        batch_op.drop_column('max_active_per_user')
        batch_op.drop_column('qualification_required')
        batch_op.drop_column('approval_required')
        batch_op.drop_column('bookable_hours')
        batch_op.drop_column('horizon_days')
        batch_op.drop_column('lead_time_min')
        batch_op.drop_column('max_duration_min')
        batch_op.drop_column('min_duration_min')
        batch_op.drop_column('granularity_min')
        batch_op.drop_column('search_text')

    with op.batch_alter_table('sample_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sample_request_user_id'))
        batch_op.drop_index(batch_op.f('ix_sample_request_resource_id'))

    with op.batch_alter_table('resource_photo', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resource_photo_resource_id'))
    op.drop_table('resource_photo')
    op.drop_table('sample_request')
    with op.batch_alter_table('reservation', schema=None) as batch_op:
        batch_op.drop_index('ix_reservation_user_window')
        batch_op.drop_index(batch_op.f('ix_reservation_series_id'))
        batch_op.drop_index('ix_reservation_resource_window')
        batch_op.drop_index(batch_op.f('ix_reservation_billed_org_id'))

    op.drop_table('reservation')
    with op.batch_alter_table('waitlist_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_waitlist_entry_user_id'))
        batch_op.drop_index(batch_op.f('ix_waitlist_entry_resource_id'))

    op.drop_table('waitlist_entry')
    with op.batch_alter_table('reservation_series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reservation_series_user_id'))
        batch_op.drop_index(batch_op.f('ix_reservation_series_resource_id'))

    op.drop_table('reservation_series')
    with op.batch_alter_table('qualification', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_qualification_user_id'))
        batch_op.drop_index(batch_op.f('ix_qualification_resource_id'))

    op.drop_table('qualification')
    op.drop_table('calendar_feed')
    with op.batch_alter_table('blackout', schema=None) as batch_op:
        batch_op.drop_index('ix_blackout_resource_window')

    op.drop_table('blackout')
    with op.batch_alter_table('outbound_email', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbound_email_user_id'))
        batch_op.drop_index(batch_op.f('ix_outbound_email_next_attempt_at'))

    op.drop_table('outbound_email')

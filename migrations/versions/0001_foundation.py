"""accounts, audit log, facilities and resources

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:39:03.716918
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.types
from core.audit import POSTGRESQL_DROP, POSTGRESQL_TRIGGERS, SQLITE_TRIGGERS

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('organisation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name_zh', sa.String(length=200), nullable=False),
    sa.Column('name_en', sa.String(length=200), nullable=False),
    sa.Column('credit_code', sa.String(length=18), nullable=False),
    sa.Column('kind', sa.Enum('university', 'institute', 'enterprise', 'government', name='organisation_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('city', sa.String(length=6), nullable=False),
    sa.Column('tech_sme', sa.Boolean(), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('length(credit_code) = 18', name=op.f('ck_organisation_credit_code_length')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organisation')),
    sa.UniqueConstraint('credit_code', name=op.f('uq_organisation_credit_code'))
    )
    with op.batch_alter_table('organisation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_organisation_city'), ['city'], unique=False)

    op.create_table('affiliation',
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('related_id', sa.Integer(), nullable=False),
    sa.Column('declared_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('organisation_id <> related_id', name=op.f('ck_affiliation_not_self')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisation.id'], name=op.f('fk_affiliation_organisation_id_organisation'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['related_id'], ['organisation.id'], name=op.f('fk_affiliation_related_id_organisation'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('organisation_id', 'related_id', name=op.f('pk_affiliation'))
    )
    op.create_table('facility',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name_zh', sa.String(length=200), nullable=False),
    sa.Column('name_en', sa.String(length=200), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('city', sa.String(length=6), nullable=False),
    sa.Column('address_zh', sa.String(length=300), nullable=False),
    sa.Column('address_en', sa.String(length=300), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('opening_hours', sa.JSON(), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['organisation.id'], name=op.f('fk_facility_owner_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_facility'))
    )
    with op.batch_alter_table('facility', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_facility_city'), ['city'], unique=False)
        batch_op.create_index(batch_op.f('ix_facility_owner_id'), ['owner_id'], unique=False)

    op.create_table('user_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('name_zh', sa.String(length=100), nullable=False),
    sa.Column('name_en', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('locale', sa.Enum('zh_CN', 'en', name='locale', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('email = lower(email)', name=op.f('ck_user_account_email_lowercase')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisation.id'], name=op.f('fk_user_account_organisation_id_organisation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_account')),
    sa.UniqueConstraint('email', name=op.f('uq_user_account_email'))
    )
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_account_organisation_id'), ['organisation_id'], unique=False)

    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', core.types.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_api_token_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('digest', name=op.f('uq_api_token_digest')),
    sa.UniqueConstraint('user_id', 'name', name=op.f('uq_api_token_user_id_name'))
    )
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_token_user_id'), ['user_id'], unique=False)

    op.create_table('audit_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['user_account.id'], name=op.f('fk_audit_entry_actor_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entry'))
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entry_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_at'), ['at'], unique=False)

    op.create_table('facility_manager',
    sa.Column('facility_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('granted_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['facility_id'], ['facility.id'], name=op.f('fk_facility_manager_facility_id_facility'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_facility_manager_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('facility_id', 'user_id', name=op.f('pk_facility_manager'))
    )
    with op.batch_alter_table('facility_manager', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_facility_manager_user_id'), ['user_id'], unique=False)

    op.create_table('resource',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('facility_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('instrument', 'pilot_line', name='resource_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('name_zh', sa.String(length=200), nullable=False),
    sa.Column('name_en', sa.String(length=200), nullable=False),
    sa.Column('description_zh', sa.Text(), nullable=False),
    sa.Column('description_en', sa.Text(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('manufacturer', sa.String(length=200), nullable=False),
    sa.Column('original_value', core.types.Money(precision=14, scale=2), nullable=False),
    sa.Column('category', sa.Enum('research_development', 'tech_transfer', 'pilot_scale', 'incubation', 'tech_promotion', 'testing', 'information_technology', 'engineering', 'sci_tech_finance', 'intellectual_property', 'consulting', name='service_category', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('operation_mode', sa.Enum('self_service', 'technician', 'both', name='operation_mode', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('voucher_eligible', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Enum('active', 'retired', name='resource_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('specs', sa.JSON(), nullable=False),
    sa.Column('created_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('original_value >= 0', name=op.f('ck_resource_original_value_not_negative')),
    sa.ForeignKeyConstraint(['facility_id'], ['facility.id'], name=op.f('fk_resource_facility_id_facility')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resource'))
    )
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_resource_facility_id'), ['facility_id'], unique=False)

    op.create_table('user_role',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.Enum('researcher', 'lab_manager', 'finance', 'admin', name='role', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('granted_at', core.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_user_role_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'role', name=op.f('pk_user_role'))
    )

    triggers = SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else POSTGRESQL_TRIGGERS
    for statement in triggers:
        op.execute(statement)

def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRESQL_DROP:
            op.execute(statement)
    op.drop_table('user_role')
    with op.batch_alter_table('resource', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resource_facility_id'))

    op.drop_table('resource')
    with op.batch_alter_table('facility_manager', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_facility_manager_user_id'))

    op.drop_table('facility_manager')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_entry_at'))
        batch_op.drop_index(batch_op.f('ix_audit_entry_actor_id'))
        batch_op.drop_index(batch_op.f('ix_audit_entry_action'))

    op.drop_table('audit_entry')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_token_user_id'))

    op.drop_table('api_token')
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_account_organisation_id'))

    op.drop_table('user_account')
    with op.batch_alter_table('facility', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_facility_owner_id'))
        batch_op.drop_index(batch_op.f('ix_facility_city'))

    op.drop_table('facility')
    op.drop_table('affiliation')
    with op.batch_alter_table('organisation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_organisation_city'))

    op.drop_table('organisation')

"""assignment

Revision ID: a4a1assign0001
Revises: c3b1leads0001
Create Date: 2026-11-22 14:06:34.147529+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'a4a1assign0001'
down_revision: str | None = 'c3b1leads0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('assignment_rules',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('conditions', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('target_team_id', sa.Uuid(), nullable=True),
    sa.Column('target_user_ids', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('strategy', sa.String(length=16), nullable=False),
    sa.Column('respect_working_hours', sa.Boolean(), nullable=False),
    sa.Column('contact_sla', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('sla_action', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_assignment_rules_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_team_id'], ['teams.id'], name=op.f('fk_assignment_rules_target_team_id_teams'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assignment_rules'))
    )
    op.create_index(op.f('ix_assignment_rules_created_at'), 'assignment_rules', ['created_at'], unique=False)
    op.create_index(op.f('ix_assignment_rules_org_id'), 'assignment_rules', ['org_id'], unique=False)
    op.create_index(op.f('ix_assignment_rules_position'), 'assignment_rules', ['position'], unique=False)
    op.create_index(op.f('ix_assignment_rules_updated_at'), 'assignment_rules', ['updated_at'], unique=False)
    op.create_table('assignment_cursors',
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('rule_id', sa.Uuid(), nullable=False),
    sa.Column('state', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_assignment_cursors_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rule_id'], ['assignment_rules.id'], name=op.f('fk_assignment_cursors_rule_id_assignment_rules'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('rule_id', name=op.f('pk_assignment_cursors'))
    )
    op.create_index(op.f('ix_assignment_cursors_org_id'), 'assignment_cursors', ['org_id'], unique=False)
    op.create_table('assignment_decisions',
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('lead_id', sa.Uuid(), nullable=False),
    sa.Column('trigger', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('trigger_key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('rule_id', sa.Uuid(), nullable=True),
    sa.Column('rule_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('strategy', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('chosen_user_id', sa.Uuid(), nullable=True),
    sa.Column('previous_owner_id', sa.Uuid(), nullable=True),
    sa.Column('explanation', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('rules_considered', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('candidates', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state_before', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state_after', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('sla_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sla_handled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_assignment_decisions_lead_id_leads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_assignment_decisions_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assignment_decisions')),
    sa.UniqueConstraint('org_id', 'trigger_key', name=op.f('uq_assignment_decisions_org_id_trigger_key'))
    )
    op.create_index(op.f('ix_assignment_decisions_chosen_user_id'), 'assignment_decisions', ['chosen_user_id'], unique=False)
    op.create_index(op.f('ix_assignment_decisions_created_at'), 'assignment_decisions', ['created_at'], unique=False)
    op.create_index(op.f('ix_assignment_decisions_lead_id'), 'assignment_decisions', ['lead_id'], unique=False)
    op.create_index(op.f('ix_assignment_decisions_org_id'), 'assignment_decisions', ['org_id'], unique=False)
    op.create_index(op.f('ix_assignment_decisions_sla_due_at'), 'assignment_decisions', ['sla_due_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_assignment_decisions_sla_due_at'), table_name='assignment_decisions')
    op.drop_index(op.f('ix_assignment_decisions_org_id'), table_name='assignment_decisions')
    op.drop_index(op.f('ix_assignment_decisions_lead_id'), table_name='assignment_decisions')
    op.drop_index(op.f('ix_assignment_decisions_created_at'), table_name='assignment_decisions')
    op.drop_index(op.f('ix_assignment_decisions_chosen_user_id'), table_name='assignment_decisions')
    op.drop_table('assignment_decisions')
    op.drop_index(op.f('ix_assignment_cursors_org_id'), table_name='assignment_cursors')
    op.drop_table('assignment_cursors')
    op.drop_index(op.f('ix_assignment_rules_updated_at'), table_name='assignment_rules')
    op.drop_index(op.f('ix_assignment_rules_position'), table_name='assignment_rules')
    op.drop_index(op.f('ix_assignment_rules_org_id'), table_name='assignment_rules')
    op.drop_index(op.f('ix_assignment_rules_created_at'), table_name='assignment_rules')
    op.drop_table('assignment_rules')

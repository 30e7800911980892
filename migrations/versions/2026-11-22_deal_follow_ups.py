"""deal follow-ups

Revision ID: a4a3dealfu001
Revises: m1merge0001
Create Date: 2026-11-22 14:36:08.607627+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'a4a3dealfu001'
down_revision: str | None = 'm1merge0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('activities', sa.Column('deal_id', sa.Uuid(), nullable=True))
    op.create_index(op.f('ix_activities_deal_id'), 'activities', ['deal_id'], unique=False)
    op.create_foreign_key(op.f('fk_activities_deal_id_deals'), 'activities', 'deals', ['deal_id'], ['id'], ondelete='CASCADE')
    op.add_column('followup_policies', sa.Column('deal_stage_id', sa.Uuid(), nullable=True))
    op.alter_column('followup_policies', 'lead_status',
               existing_type=sa.VARCHAR(length=16),
               nullable=True)
    op.create_unique_constraint(op.f('uq_followup_policies_org_id_deal_stage_id'), 'followup_policies', ['org_id', 'deal_stage_id'])
    op.create_foreign_key(op.f('fk_followup_policies_deal_stage_id_stages'), 'followup_policies', 'stages', ['deal_stage_id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    op.drop_constraint(op.f('fk_followup_policies_deal_stage_id_stages'), 'followup_policies', type_='foreignkey')
    op.drop_constraint(op.f('uq_followup_policies_org_id_deal_stage_id'), 'followup_policies', type_='unique')
    op.alter_column('followup_policies', 'lead_status',
               existing_type=sa.VARCHAR(length=16),
               nullable=False)
    op.drop_column('followup_policies', 'deal_stage_id')
    op.drop_constraint(op.f('fk_activities_deal_id_deals'), 'activities', type_='foreignkey')
    op.drop_index(op.f('ix_activities_deal_id'), table_name='activities')
    op.drop_column('activities', 'deal_id')

"""followup policies

Revision ID: a4a2followup01
Revises: a4a1assign0001
Create Date: 2026-11-22 14:12:49.332888+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = 'a4a2followup01'
down_revision: str | None = 'a4a1assign0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('followup_policies',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('lead_status', sa.String(length=16), nullable=False),
    sa.Column('interval', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('task_subject', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_followup_policies_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_followup_policies')),
    sa.UniqueConstraint('org_id', 'lead_status', name=op.f('uq_followup_policies_org_id_lead_status'))
    )
    op.create_index(op.f('ix_followup_policies_created_at'), 'followup_policies', ['created_at'], unique=False)
    op.create_index(op.f('ix_followup_policies_org_id'), 'followup_policies', ['org_id'], unique=False)
    op.create_index(op.f('ix_followup_policies_updated_at'), 'followup_policies', ['updated_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_followup_policies_updated_at'), table_name='followup_policies')
    op.drop_index(op.f('ix_followup_policies_org_id'), table_name='followup_policies')
    op.drop_index(op.f('ix_followup_policies_created_at'), table_name='followup_policies')
    op.drop_table('followup_policies')

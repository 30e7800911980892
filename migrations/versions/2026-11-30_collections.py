"""collections (回款): payments and allocations, dunning policies, steps and log, outbound
messages, risks; direct orders; write-offs and promises on installments; the finance flag.

The new tables are tenant-keyed like every other: primary key (org_id, id), composite foreign
keys (org_id, x_id) -> (org_id, id).

Revision ID: c11coll0001
Revises: b6c1hostile001
Create Date: 2026-11-30 01:31:20.200436+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'c11coll0001'
down_revision: str | None = 'b6c1hostile001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dunning_policies',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_dunning_policies_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'id', name=op.f('pk_dunning_policies'))
    )
    op.create_index(op.f('ix_dunning_policies_created_at'), 'dunning_policies', ['created_at'], unique=False)
    op.create_index(op.f('ix_dunning_policies_updated_at'), 'dunning_policies', ['updated_at'], unique=False)
    op.create_index('uq_dunning_policies_org_id_default', 'dunning_policies', ['org_id'], unique=True, postgresql_where=sa.text('is_default'))
    op.create_table('receivable_risks',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('subject_id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('raised_on', sa.Date(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_receivable_risks_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'id', name=op.f('pk_receivable_risks')),
    sa.UniqueConstraint('org_id', 'subject_id', 'reason', name=op.f('uq_receivable_risks_org_id_subject_id_reason'))
    )
    op.create_table('dunning_steps',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('policy_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('offset_days', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=True),
    sa.Column('subject_template', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('body_template', sa.Text(), nullable=True),
    sa.Column('retired', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['org_id', 'policy_id'], ['dunning_policies.org_id', 'dunning_policies.id'], name='fk_dunning_steps_policy_id_dunning_policies', ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_dunning_steps_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'id', name=op.f('pk_dunning_steps')),
    sa.UniqueConstraint('org_id', 'policy_id', 'position', name=op.f('uq_dunning_steps_org_id_policy_id_position'))
    )
    op.create_table('payments',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('received_at', sa.Date(), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('reference', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('requested_allocations', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('exchange_rate', sa.Numeric(precision=20, scale=10), nullable=True),
    sa.Column('created_by_id', sa.Uuid(), nullable=True),
    sa.Column('confirmed_by_id', sa.Uuid(), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rejected_by_id', sa.Uuid(), nullable=True),
    sa.Column('rejected_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reject_reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('reversed_by_id', sa.Uuid(), nullable=True),
    sa.Column('reversed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reversed_on', sa.Date(), nullable=True),
    sa.Column('reversal_reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['org_id', 'account_id'], ['accounts.org_id', 'accounts.id'], name='fk_payments_account_id_accounts', ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_payments_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'id', name=op.f('pk_payments'))
    )
    op.create_index(op.f('ix_payments_created_at'), 'payments', ['created_at'], unique=False)
    op.create_index('ix_payments_org_id_account_id_received_at', 'payments', ['org_id', 'account_id', 'received_at'], unique=False)
    op.create_index(op.f('ix_payments_updated_at'), 'payments', ['updated_at'], unique=False)
    op.create_table('dunning_log',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('installment_id', sa.Uuid(), nullable=False),
    sa.Column('step_id', sa.Uuid(), nullable=False),
    sa.Column('policy_id', sa.Uuid(), nullable=False),
    sa.Column('offset_days', sa.Integer(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('trigger_date', sa.Date(), nullable=False),
    sa.Column('run_for', sa.Date(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('task_id', sa.Uuid(), nullable=True),
    sa.Column('message_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id', 'installment_id'], ['installments.org_id', 'installments.id'], name='fk_dunning_log_installment_id_installments', ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id', 'step_id'], ['dunning_steps.org_id', 'dunning_steps.id'], name='fk_dunning_log_step_id_dunning_steps', ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_dunning_log_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'id', name=op.f('pk_dunning_log')),
    sa.UniqueConstraint('org_id', 'installment_id', 'step_id', name=op.f('uq_dunning_log_org_id_installment_id_step_id'))
    )
    op.create_table('outbound_messages',
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('installment_id', sa.Uuid(), nullable=True),
    sa.Column('account_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('to_address', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=False),
    sa.Column('transport', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_id', 'installment_id'], ['installments.org_id', 'installments.id'], name='fk_outbound_messages_installment_id_installments', ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_outbound_messages_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'id', name=op.f('pk_outbound_messages'))
    )
    op.create_index(op.f('ix_outbound_messages_created_at'), 'outbound_messages', ['created_at'], unique=False)
    op.create_index('ix_outbound_messages_org_id_created_at', 'outbound_messages', ['org_id', 'created_at'], unique=False)
    op.create_index(op.f('ix_outbound_messages_updated_at'), 'outbound_messages', ['updated_at'], unique=False)
    op.create_table('payment_allocations',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('payment_id', sa.Uuid(), nullable=False),
    sa.Column('installment_id', sa.Uuid(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('applied_amount', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('applied_currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('exchange_rate', sa.Numeric(precision=20, scale=10), nullable=True),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['org_id', 'installment_id'], ['installments.org_id', 'installments.id'], name='fk_payment_allocations_installment_id_installments', ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['org_id', 'payment_id'], ['payments.org_id', 'payments.id'], name='fk_payment_allocations_payment_id_payments', ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_payment_allocations_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'id', name=op.f('pk_payment_allocations'))
    )
    op.create_index('ix_payment_allocations_org_id_installment_id', 'payment_allocations', ['org_id', 'installment_id'], unique=False)
    op.create_index('ix_payment_allocations_org_id_payment_id', 'payment_allocations', ['org_id', 'payment_id'], unique=False)
    op.add_column('accounts', sa.Column('billing_email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
    op.add_column('accounts', sa.Column('dunning_policy_id', sa.Uuid(), nullable=True))
    op.add_column('accounts', sa.Column('legal_notice', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('accounts', sa.Column('legal_notice_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('accounts', sa.Column('credit_rating_previous', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
    op.create_foreign_key('fk_accounts_dunning_policy_id_dunning_policies', 'accounts', 'dunning_policies', ['org_id', 'dunning_policy_id'], ['org_id', 'id'], ondelete='SET NULL (dunning_policy_id)')
    op.add_column('installments', sa.Column('written_off_amount', sa.Numeric(precision=18, scale=4), nullable=False, server_default='0'))
    op.add_column('installments', sa.Column('written_off_on', sa.Date(), nullable=True))
    op.add_column('installments', sa.Column('promise_date', sa.Date(), nullable=True))
    op.add_column('installments', sa.Column('promise_amount', sa.Numeric(precision=18, scale=4), nullable=True))
    op.add_column('installments', sa.Column('promise_note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True))
    op.add_column('installments', sa.Column('promise_made_on', sa.Date(), nullable=True))
    op.add_column('orders', sa.Column('lines', postgresql.JSONB(astext_type=sa.Text()), nullable=False, server_default='[]'))
    op.add_column('orders', sa.Column('created_by_id', sa.Uuid(), nullable=True))
    op.add_column('orders', sa.Column('cancelled_on', sa.Date(), nullable=True))
    op.add_column('orders', sa.Column('cancel_reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True))
    op.add_column('orders', sa.Column('credit_override_by_id', sa.Uuid(), nullable=True))
    op.add_column('orders', sa.Column('credit_override_reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True))
    op.alter_column('orders', 'deal_id',
               existing_type=sa.UUID(),
               nullable=True)
    op.alter_column('orders', 'quote_id',
               existing_type=sa.UUID(),
               nullable=True)
    op.add_column('users', sa.Column('finance', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column('users', 'finance')
    op.alter_column('orders', 'quote_id',
               existing_type=sa.UUID(),
               nullable=False)
    op.alter_column('orders', 'deal_id',
               existing_type=sa.UUID(),
               nullable=False)
    op.drop_column('orders', 'credit_override_reason')
    op.drop_column('orders', 'credit_override_by_id')
    op.drop_column('orders', 'cancel_reason')
    op.drop_column('orders', 'cancelled_on')
    op.drop_column('orders', 'created_by_id')
    op.drop_column('orders', 'lines')
    op.drop_column('installments', 'promise_made_on')
    op.drop_column('installments', 'promise_note')
    op.drop_column('installments', 'promise_amount')
    op.drop_column('installments', 'promise_date')
    op.drop_column('installments', 'written_off_on')
    op.drop_column('installments', 'written_off_amount')
    op.drop_constraint('fk_accounts_dunning_policy_id_dunning_policies', 'accounts', type_='foreignkey')
    op.drop_column('accounts', 'credit_rating_previous')
    op.drop_column('accounts', 'legal_notice_at')
    op.drop_column('accounts', 'legal_notice')
    op.drop_column('accounts', 'dunning_policy_id')
    op.drop_column('accounts', 'billing_email')
    op.drop_index('ix_payment_allocations_org_id_payment_id', table_name='payment_allocations')
    op.drop_index('ix_payment_allocations_org_id_installment_id', table_name='payment_allocations')
    op.drop_table('payment_allocations')
    op.drop_index(op.f('ix_outbound_messages_updated_at'), table_name='outbound_messages')
    op.drop_index('ix_outbound_messages_org_id_created_at', table_name='outbound_messages')
    op.drop_index(op.f('ix_outbound_messages_created_at'), table_name='outbound_messages')
    op.drop_table('outbound_messages')
    op.drop_table('dunning_log')
    op.drop_index(op.f('ix_payments_updated_at'), table_name='payments')
    op.drop_index('ix_payments_org_id_account_id_received_at', table_name='payments')
    op.drop_index(op.f('ix_payments_created_at'), table_name='payments')
    op.drop_table('payments')
    op.drop_table('dunning_steps')
    op.drop_table('receivable_risks')
    op.drop_index('uq_dunning_policies_org_id_default', table_name='dunning_policies', postgresql_where=sa.text('is_default'))
    op.drop_index(op.f('ix_dunning_policies_updated_at'), table_name='dunning_policies')
    op.drop_index(op.f('ix_dunning_policies_created_at'), table_name='dunning_policies')
    op.drop_table('dunning_policies')

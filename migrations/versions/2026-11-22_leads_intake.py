"""leads intake: leads, activities, scoring rules, intake sources, inbound events

Revision ID: c3b1leads0001
Revises: e6f129de69cb
Create Date: 2026-11-22 14:29:49.831115+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'c3b1leads0001'
down_revision: str | None = 'e6f129de69cb'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Intake dedupe in one round trip (app.services.leads.ingest.lock_and_find): advisory locks on the
# email/phone keys, then the oldest open lead with the email, else the phone. plpgsql and
# VOLATILE, so its lookups take a fresh snapshot after the locks are granted. Its "open lead"
# condition is app.models.lead.OPEN_LEAD_SQL; tests/models/test_lead_open.py checks they agree.
LOCK_OPEN_LEAD = """
CREATE OR REPLACE FUNCTION loudou_lock_open_lead(p_org uuid, p_email text, p_phone text, p_keys text[])
RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k text;
    found uuid;
BEGIN
    FOREACH k IN ARRAY p_keys LOOP
        PERFORM pg_advisory_xact_lock(hashtext(k));
    END LOOP;
    IF p_email IS NOT NULL THEN
        SELECT id INTO found FROM leads
        WHERE org_id = p_org AND email = p_email
          AND status IN ('new', 'working', 'qualified')
          AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL
        ORDER BY created_at, id LIMIT 1;
        IF found IS NOT NULL THEN
            RETURN found;
        END IF;
    END IF;
    IF p_phone IS NOT NULL THEN
        SELECT id INTO found FROM leads
        WHERE org_id = p_org AND phone = p_phone
          AND status IN ('new', 'working', 'qualified')
          AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL
        ORDER BY created_at, id LIMIT 1;
    END IF;
    RETURN found;
END
$$;
"""


def upgrade() -> None:
    op.create_table('scoring_rules',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('field', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('operator', sa.String(length=16), nullable=False),
    sa.Column('value', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_scoring_rules_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scoring_rules'))
    )
    op.create_index(op.f('ix_scoring_rules_created_at'), 'scoring_rules', ['created_at'], unique=False)
    op.create_index(op.f('ix_scoring_rules_org_id'), 'scoring_rules', ['org_id'], unique=False)
    op.create_index(op.f('ix_scoring_rules_updated_at'), 'scoring_rules', ['updated_at'], unique=False)
    op.create_table('intake_sources',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('field_mapping', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('default_country', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=True),
    sa.Column('honeypot_field', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('redirect_url', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('allowed_origins', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('signing_key', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('basic_auth_username', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('basic_auth_password', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('secret', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('previous_secret', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('default_owner_id', sa.Uuid(), nullable=True),
    sa.Column('default_team_id', sa.Uuid(), nullable=True),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('rate_limit_per_minute', sa.Integer(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['default_owner_id'], ['users.id'], name=op.f('fk_intake_sources_default_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['default_team_id'], ['teams.id'], name=op.f('fk_intake_sources_default_team_id_teams'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_intake_sources_org_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_intake_sources')),
    sa.UniqueConstraint('key', name=op.f('uq_intake_sources_key'))
    )
    op.create_index(op.f('ix_intake_sources_created_at'), 'intake_sources', ['created_at'], unique=False)
    op.create_index(op.f('ix_intake_sources_org_id'), 'intake_sources', ['org_id'], unique=False)
    op.create_index(op.f('ix_intake_sources_updated_at'), 'intake_sources', ['updated_at'], unique=False)
    op.create_table('leads',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('source_id', sa.Uuid(), nullable=True),
    sa.Column('source_detail', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('company', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('country', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=True),
    sa.Column('industry', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('attributes', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('score_breakdown', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('owner_id', sa.Uuid(), nullable=True),
    sa.Column('team_id', sa.Uuid(), nullable=True),
    sa.Column('pooled', sa.Boolean(), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_contacted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_touch_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('touch_count', sa.Integer(), nullable=False),
    sa.Column('duplicate_of', sa.Uuid(), nullable=True),
    sa.Column('possible_duplicate_of', sa.Uuid(), nullable=True),
    sa.Column('converted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('converted_account_id', sa.Uuid(), nullable=True),
    sa.Column('converted_contact_id', sa.Uuid(), nullable=True),
    sa.Column('converted_deal_id', sa.Uuid(), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['duplicate_of'], ['leads.id'], name=op.f('fk_leads_duplicate_of_leads'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_leads_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_leads_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['possible_duplicate_of'], ['leads.id'], name=op.f('fk_leads_possible_duplicate_of_leads'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['source_id'], ['intake_sources.id'], name=op.f('fk_leads_source_id_intake_sources'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_leads_team_id_teams'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leads'))
    )
    op.create_index(op.f('ix_leads_created_at'), 'leads', ['created_at'], unique=False)
    op.create_index('ix_leads_org_email', 'leads', ['org_id', 'email'], unique=False)
    op.create_index(op.f('ix_leads_org_id'), 'leads', ['org_id'], unique=False)
    op.create_index('ix_leads_org_phone', 'leads', ['org_id', 'phone'], unique=False)
    op.create_index(op.f('ix_leads_owner_id'), 'leads', ['owner_id'], unique=False)
    op.create_index(op.f('ix_leads_source_id'), 'leads', ['source_id'], unique=False)
    op.create_index(op.f('ix_leads_status'), 'leads', ['status'], unique=False)
    op.create_index(op.f('ix_leads_team_id'), 'leads', ['team_id'], unique=False)
    op.create_index(op.f('ix_leads_updated_at'), 'leads', ['updated_at'], unique=False)
    op.create_table('inbound_events',
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('source_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('content_type', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('headers', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=True),
    sa.Column('body_size', sa.Integer(), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=998), nullable=True),
    sa.Column('signature', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('lead_id', sa.Uuid(), nullable=True),
    sa.Column('first_event_id', sa.Uuid(), nullable=True),
    sa.Column('replays', sa.Integer(), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_inbound_events_lead_id_leads'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_inbound_events_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['source_id'], ['intake_sources.id'], name=op.f('fk_inbound_events_source_id_intake_sources'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_events')),
    sa.UniqueConstraint('org_id', 'source_id', 'external_id', name=op.f('uq_inbound_events_org_id_source_id_external_id'))
    )
    op.create_index(op.f('ix_inbound_events_lead_id'), 'inbound_events', ['lead_id'], unique=False)
    op.create_index(op.f('ix_inbound_events_org_id'), 'inbound_events', ['org_id'], unique=False)
    op.create_index('ix_inbound_events_org_message_id', 'inbound_events', ['org_id', 'message_id'], unique=False, postgresql_where=sa.text('message_id IS NOT NULL'))
    op.create_index(op.f('ix_inbound_events_received_at'), 'inbound_events', ['received_at'], unique=False)
    op.create_index(op.f('ix_inbound_events_source_id'), 'inbound_events', ['source_id'], unique=False)
    op.create_table('activities',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('lead_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner_id', sa.Uuid(), nullable=True),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('inbound_event_id', sa.Uuid(), nullable=True),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=998), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_activities_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['inbound_event_id'], ['inbound_events.id'], name=op.f('fk_activities_inbound_event_id_inbound_events'), ondelete='SET NULL', initially='DEFERRED', deferrable=True),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_activities_lead_id_leads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_activities_org_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_activities_owner_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_activities'))
    )
    op.create_index(op.f('ix_activities_created_at'), 'activities', ['created_at'], unique=False)
    op.create_index(op.f('ix_activities_lead_id'), 'activities', ['lead_id'], unique=False)
    op.create_index(op.f('ix_activities_org_id'), 'activities', ['org_id'], unique=False)
    op.create_index('ix_activities_org_message_id', 'activities', ['org_id', 'message_id'], unique=False, postgresql_where=sa.text('message_id IS NOT NULL'))
    op.create_index(op.f('ix_activities_updated_at'), 'activities', ['updated_at'], unique=False)

    op.execute(LOCK_OPEN_LEAD)

def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS loudou_lock_open_lead(uuid, text, text, text[])")
    op.drop_index(op.f('ix_activities_updated_at'), table_name='activities')
    op.drop_index('ix_activities_org_message_id', table_name='activities', postgresql_where=sa.text('message_id IS NOT NULL'))
    op.drop_index(op.f('ix_activities_org_id'), table_name='activities')
    op.drop_index(op.f('ix_activities_lead_id'), table_name='activities')
    op.drop_index(op.f('ix_activities_created_at'), table_name='activities')
    op.drop_table('activities')
    op.drop_index(op.f('ix_inbound_events_source_id'), table_name='inbound_events')
    op.drop_index(op.f('ix_inbound_events_received_at'), table_name='inbound_events')
    op.drop_index('ix_inbound_events_org_message_id', table_name='inbound_events', postgresql_where=sa.text('message_id IS NOT NULL'))
    op.drop_index(op.f('ix_inbound_events_org_id'), table_name='inbound_events')
    op.drop_index(op.f('ix_inbound_events_lead_id'), table_name='inbound_events')
    op.drop_table('inbound_events')
    op.drop_index(op.f('ix_leads_updated_at'), table_name='leads')
    op.drop_index(op.f('ix_leads_team_id'), table_name='leads')
    op.drop_index(op.f('ix_leads_status'), table_name='leads')
    op.drop_index(op.f('ix_leads_source_id'), table_name='leads')
    op.drop_index(op.f('ix_leads_owner_id'), table_name='leads')
    op.drop_index('ix_leads_org_phone', table_name='leads')
    op.drop_index(op.f('ix_leads_org_id'), table_name='leads')
    op.drop_index('ix_leads_org_email', table_name='leads')
    op.drop_index(op.f('ix_leads_created_at'), table_name='leads')
    op.drop_table('leads')
    op.drop_index(op.f('ix_intake_sources_updated_at'), table_name='intake_sources')
    op.drop_index(op.f('ix_intake_sources_org_id'), table_name='intake_sources')
    op.drop_index(op.f('ix_intake_sources_created_at'), table_name='intake_sources')
    op.drop_table('intake_sources')
    op.drop_index(op.f('ix_scoring_rules_updated_at'), table_name='scoring_rules')
    op.drop_index(op.f('ix_scoring_rules_org_id'), table_name='scoring_rules')
    op.drop_index(op.f('ix_scoring_rules_created_at'), table_name='scoring_rules')
    op.drop_table('scoring_rules')

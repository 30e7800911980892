"""leads: one statement locks, checks and inserts the new leads of many intake posts

Concurrent web-form posts in one API process are written together (`app.services.leads.batch`):
one statement for the candidate look-ups of all of them, one for their inserts. This function is
the inserts' lock and check for a whole batch, as `loudou_lock_open_lead` is for one post: it
takes the advisory locks of every post's email and phone (the caller sends them sorted and
distinct, so batches and single posts always lock in one order and never deadlock), then, with
the fresh snapshot of each statement in a VOLATILE function, finds for each post the oldest open
lead with its email, else its phone. The answer has one element a post, in order: NULL where the
post's lead may be inserted. Two posts of one batch never share a key (the batcher keeps them
apart), so a lead inserted by the batch cannot be one another post of it should have found.

Revision ID: speed0010batches
Revises: speed0009candidates
Create Date: 2026-12-01 09:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0010batches"
down_revision: str | None = "speed0009candidates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Open: app.models.lead.OPEN_LEAD_SQL (tests/models/test_lead_open.py checks the two agree).
_OPEN = (
    "status IN ('new', 'working', 'qualified')"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)

LOCK_OPEN_LEADS = f"""
CREATE FUNCTION loudou_lock_open_leads(
    p_orgs uuid[], p_emails text[], p_phones text[], p_keys text[]
) RETURNS uuid[] LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    k text;
    i int;
    one uuid;
    found uuid[] := '{{}}';
BEGIN
    FOREACH k IN ARRAY p_keys LOOP
        PERFORM pg_advisory_xact_lock(hashtext(k));
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(p_orgs, 1), 0) LOOP
        one := NULL;
        IF p_emails[i] IS NOT NULL THEN
            SELECT id INTO one FROM leads
            WHERE org_id = p_orgs[i] AND email = p_emails[i] AND {_OPEN}
            ORDER BY created_at, id LIMIT 1;
        END IF;
        IF one IS NULL AND p_phones[i] IS NOT NULL THEN
            SELECT id INTO one FROM leads
            WHERE org_id = p_orgs[i] AND phone = p_phones[i] AND {_OPEN}
            ORDER BY created_at, id LIMIT 1;
        END IF;
        found := array_append(found, one);
    END LOOP;
    RETURN found;
END
$$;
"""


def upgrade() -> None:
    op.execute(LOCK_OPEN_LEADS)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS loudou_lock_open_leads(uuid[], text[], text[], text[])")

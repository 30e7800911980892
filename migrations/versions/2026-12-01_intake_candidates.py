"""leads: the full form's one look-up also answers the open lead with its email or phone

A full-form post (a name and a company) makes two round trips before it answers: the fuzzy
candidates (`loudou_fuzzy_candidates`), then the statement that takes the dedupe locks and inserts
unless an open lead has the email or phone. When that lead exists (a repeat submission), the
candidates were fetched for nothing and the insert was refused, and only then was the lead merged.

`loudou_intake_candidates` looks for that open lead first, with the same rule as
`loudou_lock_open_lead` (the oldest open lead with the email, else with the phone), and returns the
fuzzy candidates only when there is none. A repeat submission then goes straight to the merge; a
new lead pays two index probes more. The look-up takes no lock: the insert still takes them and
checks again, and the merge writes only over the version it read.

Revision ID: speed0009candidates
Revises: speed0008onesort
Create Date: 2026-12-01 06:15:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0009candidates"
down_revision: str | None = "speed0008onesort"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Open: app.models.lead.OPEN_LEAD_SQL (tests/models/test_lead_open.py checks the two agree).
_OPEN = (
    "status IN ('new', 'working', 'qualified')"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)

INTAKE_CANDIDATES = f"""
CREATE FUNCTION loudou_intake_candidates(
    p_org uuid, p_email text, p_phone text, p_company text, p_name text, p_exclude uuid,
    OUT open_id uuid, OUT ids uuid[], OUT labels text[]
) LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF p_email IS NOT NULL THEN
        SELECT id INTO open_id FROM leads
        WHERE org_id = p_org AND email = p_email AND {_OPEN}
        ORDER BY created_at, id LIMIT 1;
    END IF;
    IF open_id IS NULL AND p_phone IS NOT NULL THEN
        SELECT id INTO open_id FROM leads
        WHERE org_id = p_org AND phone = p_phone AND {_OPEN}
        ORDER BY created_at, id LIMIT 1;
    END IF;
    IF open_id IS NULL THEN
        SELECT f.ids, f.labels INTO ids, labels
        FROM loudou_fuzzy_candidates(p_org, p_company, p_name, p_exclude) AS f;
    END IF;
END
$$;
"""


def upgrade() -> None:
    op.execute(INTAKE_CANDIDATES)


def downgrade() -> None:
    op.execute("DROP FUNCTION loudou_intake_candidates(uuid, text, text, text, text, uuid)")

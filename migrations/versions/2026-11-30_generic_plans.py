"""leads: the intake look-ups keep one generic plan per connection

PostgreSQL plans a prepared statement with its parameters' values (a custom plan) for its first
five runs, then keeps the generic plan only if its estimated cost is no higher than the custom
plans' average so far. On a table filling up for the first time (a new installation or
organisation) the first custom plans are estimated on a nearly empty table, so that average stays
far below the generic plan's cost estimated later on the grown table, and the connection plans
again on every run, for as long as it lives. A perf profile of PostgreSQL under full-form intake on
a fresh database spent about a tenth of its time planning the fuzzy-candidate look-up (a UNION of
two index ranges), run once per post.

Both look-ups have one good plan whatever the values (an equality on an indexed key of the
organisation), so each now runs in a function that asks for the generic plan: the fuzzy
candidates in `loudou_fuzzy_candidates(org, company, name, exclude)` (the statement
app.services.leads.ingest ran before, with the same LIMIT), and the dedupe look-ups of
`loudou_lock_open_lead` by a SET on the function.

Revision ID: speed0006generic
Revises: speed0005inline
Create Date: 2026-11-30 22:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0006generic"
down_revision: str | None = "speed0005inline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCK_OPEN_LEAD = "loudou_lock_open_lead(uuid, text, text, text[])"

# Each key's block reads only its own index (migration speed0002fuzzapart): the key IS NOT NULL
# is what names it. Open lead: app.models.lead.OPEN_LEAD_SQL (tests/models/test_lead_open.py
# checks the two agree, through find_fuzzy).
OPEN = (
    "l.name IS NOT NULL AND l.company IS NOT NULL AND l.status IN ('new', 'working', 'qualified')"
    " AND l.duplicate_of IS NULL AND l.deleted_at IS NULL AND l.erased_at IS NULL"
)
CANDIDATES = 100  # per key: the oldest open leads with the same company key, and with the same name key


def _block(key: str, column: str, param: str) -> str:
    return (
        f"(SELECT l.id, l.name, l.company, l.created_at FROM leads AS l"
        f" WHERE l.org_id = p_org AND {key}(l.{column}) = {key}({param})"
        f" AND {OPEN}"
        f" AND {key}(l.{column}) IS NOT NULL"
        f" ORDER BY l.created_at LIMIT {CANDIDATES})"
    )


FUZZY_CANDIDATES = f"""
CREATE FUNCTION loudou_fuzzy_candidates(
    p_org uuid, p_company text, p_name text, p_exclude uuid, OUT ids uuid[], OUT labels text[]
) LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    SELECT array_agg(c.id ORDER BY c.created_at, c.id),
           array_agg(c.name || ' ' || c.company ORDER BY c.created_at, c.id)
    INTO ids, labels
    FROM ({_block("loudou_company_key", "company", "p_company")}
          UNION {_block("loudou_name_key", "name", "p_name")}) AS c
    WHERE c.id <> p_exclude;
END
$$;
"""


def upgrade() -> None:
    op.execute(FUZZY_CANDIDATES)
    op.execute(f"ALTER FUNCTION {LOCK_OPEN_LEAD} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {LOCK_OPEN_LEAD} RESET plan_cache_mode")
    op.execute("DROP FUNCTION IF EXISTS loudou_fuzzy_candidates(uuid, text, text, uuid)")

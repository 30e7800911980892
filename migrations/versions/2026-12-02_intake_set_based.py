"""leads: a batch of intake posts looked up and locked by one query each, not by a loop of them

A batch (`app.services.leads.batch`) called `loudou_intake_candidates` once a post, and each call
ran up to three statements of its own (the open lead by email, by phone, then
`loudou_fuzzy_candidates`, each function call saving and restoring its `plan_cache_mode`);
`loudou_lock_open_leads` looped over the posts with a statement a lock and a look-up. A perf
profile of PostgreSQL under full-form intake (2026-12-02) put most of the look-up's time in what
each of those statements costs to start and end (executor start-up, SPI, the GUC save and
restore), not in the index scans. Both now run one query for the whole batch, a LATERAL join over
the posts' arrays, whose index scans are rescanned for each post (`OFFSET 0` keeps a post's
open lead a value of its own: pulled up, its two look-ups were made again in every place it is
read):

- `loudou_intake_candidates_many`: for each post (in order, `i` from 1), the oldest open lead with
  its email, else with its phone (`open_id`); when there is none, the fuzzy candidates of
  `loudou_fuzzy_candidates` (the oldest 100 open leads with the same company key and as many with
  the same name key, oldest first, ties by id), else NULL arrays: what `loudou_intake_candidates`
  answers a post alone (tests/services/leads/test_batch.py holds the two to the same answers).
- `loudou_lock_open_leads` takes its advisory locks in one statement, in the order given, then
  finds every post's open lead in one more (a new snapshot, after the locks, as before).

Revision ID: speed0011setbased
Revises: speed0010batches
Create Date: 2026-12-02 02:10:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0011setbased"
down_revision: str | None = "speed0010batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Open: app.models.lead.OPEN_LEAD_SQL (tests/models/test_lead_open.py checks the two agree).
_OPEN = (
    "l.status IN ('new', 'working', 'qualified')"
    " AND l.duplicate_of IS NULL AND l.deleted_at IS NULL AND l.erased_at IS NULL"
)
# The fuzzy candidates' open test, as the partial indexes ix_leads_fuzzy_* are built on it.
_FUZZY_OPEN = f"l.name IS NOT NULL AND l.company IS NOT NULL AND {_OPEN}"
CANDIDATES = 100


def _open_lead(column: str) -> str:
    """The oldest open lead of the post's organisation with its `column` (email or phone)."""
    return (
        f"(SELECT l.id FROM leads AS l WHERE l.org_id = p.org AND l.{column} = p.{column}"
        f" AND {_OPEN} ORDER BY l.created_at, l.id LIMIT 1)"
    )


def _block(key: str, column: str) -> str:
    """`loudou_fuzzy_candidates`'s block for one key, skipped when the post has an open lead."""
    return (
        f"(SELECT l.id, l.name, l.company, l.created_at FROM leads AS l"
        f" WHERE o.open_id IS NULL AND l.org_id = p.org AND {key}(l.{column}) = {key}(p.{column})"
        f" AND {_FUZZY_OPEN}"
        f" AND {key}(l.{column}) IS NOT NULL"
        f" ORDER BY l.created_at LIMIT {CANDIDATES})"
    )


INTAKE_CANDIDATES_MANY = f"""
CREATE FUNCTION loudou_intake_candidates_many(
    p_orgs uuid[], p_emails text[], p_phones text[], p_companies text[], p_names text[]
) RETURNS TABLE (i bigint, open_id uuid, ids uuid[], labels text[])
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    SELECT p.i, o.open_id, f.ids, f.labels
    FROM unnest(p_orgs, p_emails, p_phones, p_companies, p_names) WITH ORDINALITY
         AS p(org, email, phone, company, name, i)
    CROSS JOIN LATERAL (SELECT coalesce({_open_lead("email")}, {_open_lead("phone")}) AS open_id OFFSET 0) AS o
    CROSS JOIN LATERAL (
        SELECT array_agg(c.id) AS ids, array_agg(c.label) AS labels
        FROM (SELECT u.id, u.name || ' ' || u.company AS label
              FROM ({_block("loudou_company_key", "company")}
                    UNION ALL {_block("loudou_name_key", "name")}) AS u
              ORDER BY u.created_at, u.id) AS c
    ) AS f
    ORDER BY p.i;
END
$$;
"""

_LOCK_HEAD = """
CREATE OR REPLACE FUNCTION loudou_lock_open_leads(
    p_orgs uuid[], p_emails text[], p_phones text[], p_keys text[]
) RETURNS uuid[] LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
"""

LOCK_OPEN_LEADS_SET_BASED = (
    _LOCK_HEAD
    + f"""DECLARE
    found uuid[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(k.key))
    FROM unnest(p_keys) WITH ORDINALITY AS k(key, n) ORDER BY k.n;
    SELECT coalesce(array_agg(o.open_id ORDER BY p.i), '{{}}') INTO found
    FROM unnest(p_orgs, p_emails, p_phones) WITH ORDINALITY AS p(org, email, phone, i)
    CROSS JOIN LATERAL (SELECT coalesce({_open_lead("email")}, {_open_lead("phone")}) AS open_id OFFSET 0) AS o;
    RETURN found;
END
$$;
"""
)

# As migration speed0010batches wrote it.
_OPEN_UNQUALIFIED = (
    "status IN ('new', 'working', 'qualified')"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)
LOCK_OPEN_LEADS_LOOP = (
    _LOCK_HEAD
    + f"""DECLARE
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
            WHERE org_id = p_orgs[i] AND email = p_emails[i] AND {_OPEN_UNQUALIFIED}
            ORDER BY created_at, id LIMIT 1;
        END IF;
        IF one IS NULL AND p_phones[i] IS NOT NULL THEN
            SELECT id INTO one FROM leads
            WHERE org_id = p_orgs[i] AND phone = p_phones[i] AND {_OPEN_UNQUALIFIED}
            ORDER BY created_at, id LIMIT 1;
        END IF;
        found := array_append(found, one);
    END LOOP;
    RETURN found;
END
$$;
"""
)


def upgrade() -> None:
    op.execute(INTAKE_CANDIDATES_MANY)
    op.execute(LOCK_OPEN_LEADS_SET_BASED)


def downgrade() -> None:
    op.execute(LOCK_OPEN_LEADS_LOOP)
    op.execute("DROP FUNCTION loudou_intake_candidates_many(uuid[], text[], text[], text[], text[])")

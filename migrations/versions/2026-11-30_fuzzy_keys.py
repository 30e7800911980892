"""leads: bounded fuzzy-duplicate candidates (normalised company and name keys, indexed)

The possible-duplicate flag compares a new lead's "name company" with open leads' (rapidfuzz).
Its candidates used to be `company ILIKE 'Abc%' OR name ILIKE 'Abc%' ORDER BY created_at`, which
no index serves: every post scanned and sorted the organisation's open leads. Now they are the
oldest open leads with the same normalised company, or the same normalised name, each read from
a b-tree index on (org_id, key, created_at) with a LIMIT: a bounded index range whatever the
table holds.

`loudou_name_key(text)`: lower case, runs of spaces and punctuation (ASCII and full-width) made
one space, trimmed; NULL when nothing is left. `loudou_company_key(text)`: the same, with a
trailing legal form dropped (Inc, Ltd, GmbH, Corp, Corporation, Co, Company, Limited, LLC, PLC,
AG, SA, 有限公司, 股份有限公司, 有限责任公司, 集团), so "ACME Corp." and "Acme Corporation" meet.
Both are IMMUTABLE (plain string functions), as an index expression must be.

Revision ID: speed0001fuzz
Revises: export0001
Create Date: 2026-11-30 03:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0001fuzz"
down_revision: str | None = "export0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = (
    "name IS NOT NULL AND company IS NOT NULL"
    " AND status IN ('new', 'working', 'qualified')"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)

# Runs of spaces and punctuation, ASCII and full-width (one space each).
PUNCTUATION = r"[\s!-/:-@\[-`{-~\u00b7\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]+"
LEGAL_FORM = r"(\s(inc|ltd|gmbh|corp|corporation|co|company|limited|llc|plc|ag|sa)|股份有限公司|有限责任公司|有限公司|集团)$"

# Neither function calls a function of this schema: PostgreSQL 17+ builds and maintains indexes
# with search_path = pg_catalog, where an unqualified `loudou_…` call inside a body is not found.
NAME_KEY = f"""
CREATE OR REPLACE FUNCTION loudou_name_key(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $$
    SELECT NULLIF(btrim(regexp_replace(lower(value), '{PUNCTUATION}', ' ', 'g')), '')
$$;
"""

COMPANY_KEY = f"""
CREATE OR REPLACE FUNCTION loudou_company_key(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $$
    SELECT NULLIF(btrim(regexp_replace(
        btrim(regexp_replace(lower(value), '{PUNCTUATION}', ' ', 'g')), '{LEGAL_FORM}', '')), '')
$$;
"""


def upgrade() -> None:
    op.execute(NAME_KEY)
    op.execute(COMPANY_KEY)
    op.execute(
        "CREATE INDEX ix_leads_fuzzy_company ON leads (org_id, loudou_company_key(company), created_at)"
        f" WHERE {OPEN}"
    )
    op.execute(
        "CREATE INDEX ix_leads_fuzzy_name ON leads (org_id, loudou_name_key(name), created_at)"
        f" WHERE {OPEN}"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_leads_fuzzy_name")
    op.execute("DROP INDEX IF EXISTS ix_leads_fuzzy_company")
    op.execute("DROP FUNCTION IF EXISTS loudou_company_key(text)")
    op.execute("DROP FUNCTION IF EXISTS loudou_name_key(text)")

"""leads: the fuzzy-candidate indexes each serve only their own key, and carry what is read

`ix_leads_fuzzy_company` and `ix_leads_fuzzy_name` had the same predicate. When a table's
statistics say no lead has a company yet (a young table, analysed before the first full form),
both indexes look empty and equally cheap, and the planner read the company candidates from the
name index by `org_id` alone, computing the company key of every open lead of the organisation
on every post (3.5 ms a post at 17k leads, growing with the table). Each index now also requires
its own key to be present, which the other look-up does not say, so the only index that can
serve a look-up is its own; the candidates are the same rows as before (an equality on the key
already excludes a NULL key).

Both indexes also carry `id, name, company`, the columns the look-up returns: on an organisation
whose leads are settled (all-visible), its 200 candidates come from the index alone. At 1M leads
the look-up read ~74 blocks from outside shared buffers and took 1.05 ms a post; 0.7 blocks and
0.32 ms with the columns in the index (full-form intake 300-410 -> 480-510 req/s there).

Revision ID: speed0002fuzzapart
Revises: metricsfast004
Create Date: 2026-11-30 10:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0002fuzzapart"
down_revision: str | None = "metricsfast004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = (
    "name IS NOT NULL AND company IS NOT NULL"
    " AND status IN ('new', 'working', 'qualified')"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)


def _create(name: str, key: str, column: str, *, own_key: bool) -> None:
    where = f"{OPEN} AND {key}({column}) IS NOT NULL" if own_key else OPEN
    include = " INCLUDE (id, name, company)" if own_key else ""
    op.execute(f"CREATE INDEX {name} ON leads (org_id, {key}({column}), created_at){include} WHERE {where}")


def upgrade() -> None:
    op.execute("DROP INDEX ix_leads_fuzzy_company")
    op.execute("DROP INDEX ix_leads_fuzzy_name")
    _create("ix_leads_fuzzy_company", "loudou_company_key", "company", own_key=True)
    _create("ix_leads_fuzzy_name", "loudou_name_key", "name", own_key=True)


def downgrade() -> None:
    op.execute("DROP INDEX ix_leads_fuzzy_company")
    op.execute("DROP INDEX ix_leads_fuzzy_name")
    _create("ix_leads_fuzzy_company", "loudou_company_key", "company", own_key=False)
    _create("ix_leads_fuzzy_name", "loudou_name_key", "name", own_key=False)

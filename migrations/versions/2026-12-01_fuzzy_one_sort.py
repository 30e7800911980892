"""leads: the fuzzy candidates sorted once, not once per array

`loudou_fuzzy_candidates` built its two arrays with `array_agg(... ORDER BY c.created_at, c.id)`
each, and PostgreSQL sorts the input of an ordered aggregate separately for each aggregate: the
same 200 rows sorted twice on every full-form post. The rows are now sorted once, in the
subquery, and both plain `array_agg`s read that one ordered stream, so the arrays stay aligned
element for element and in the same order (oldest first, ties by id) as before.
pgbench, 16 clients, 500 companies with ~100 candidates each (2026-12-01): 0.288 → 0.22 ms of
PostgreSQL CPU a call.

Revision ID: speed0008onesort
Revises: speed0007costs
Create Date: 2026-12-01 04:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0008onesort"
down_revision: str | None = "speed0007costs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The open-lead test and the per-key blocks as migration speed0006generic wrote them.
OPEN = (
    "l.name IS NOT NULL AND l.company IS NOT NULL AND l.status IN ('new', 'working', 'qualified')"
    " AND l.duplicate_of IS NULL AND l.deleted_at IS NULL AND l.erased_at IS NULL"
)
CANDIDATES = 100


def _block(key: str, column: str, param: str) -> str:
    return (
        f"(SELECT l.id, l.name, l.company, l.created_at FROM leads AS l"
        f" WHERE l.org_id = p_org AND {key}(l.{column}) = {key}({param})"
        f" AND {OPEN}"
        f" AND {key}(l.{column}) IS NOT NULL"
        f" ORDER BY l.created_at LIMIT {CANDIDATES})"
    )


_HEAD = """
CREATE OR REPLACE FUNCTION loudou_fuzzy_candidates(
    p_org uuid, p_company text, p_name text, p_exclude uuid, OUT ids uuid[], OUT labels text[]
) LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
"""
_BLOCKS = (
    f"{_block('loudou_company_key', 'company', 'p_company')}"
    f" UNION ALL {_block('loudou_name_key', 'name', 'p_name')}"
)

ONE_SORT = (
    _HEAD
    + f"""    SELECT array_agg(c.id), array_agg(c.label)
    INTO ids, labels
    FROM (SELECT u.id, u.name || ' ' || u.company AS label
          FROM ({_BLOCKS}) AS u
          WHERE u.id <> p_exclude
          ORDER BY u.created_at, u.id) AS c;
END
$$;
"""
)

# As migration speed0007costs left it.
TWO_SORTS = (
    _HEAD
    + f"""    SELECT array_agg(c.id ORDER BY c.created_at, c.id),
           array_agg(c.name || ' ' || c.company ORDER BY c.created_at, c.id)
    INTO ids, labels
    FROM ({_BLOCKS}) AS c
    WHERE c.id <> p_exclude;
END
$$;
"""
)


def upgrade() -> None:
    op.execute(ONE_SORT)


def downgrade() -> None:
    op.execute(TWO_SORTS)

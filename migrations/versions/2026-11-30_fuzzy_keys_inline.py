"""leads: the fuzzy keys' functions inline (CALLED ON NULL INPUT instead of STRICT)

`loudou_name_key` and `loudou_company_key` were declared RETURNS NULL ON NULL INPUT. PostgreSQL
inlines a SQL function only when its body is as strict as its declaration, and NULLIF counts as
non-strict, so neither was inlined: every statement that evaluated one (each INSERT into leads
maintains two expression indexes whose predicates call them again, and the fuzzy look-up calls
them on its parameters) parsed, analysed and planned the function's body afresh through
`fmgr_sql`. A profile of PostgreSQL under full-form intake showed the parser inside
`ExecInsertIndexTuples`.

Called on NULL input, the bodies give the same answer (NULL in, NULL out: lower, regexp_replace
and btrim are strict, NULLIF(NULL, '') is NULL), so the indexes' contents do not change and need
no rebuild; the planner now expands both calls into their expressions, in the index definitions
(as it reads them) and in the queries alike, so the look-up still matches the indexes.

Revision ID: speed0005inline
Revises: speed0004pooled
Create Date: 2026-11-30 22:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0005inline"
down_revision: str | None = "speed0004pooled"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = ("loudou_name_key(text)", "loudou_company_key(text)")


def upgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} CALLED ON NULL INPUT")


def downgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} RETURNS NULL ON NULL INPUT")

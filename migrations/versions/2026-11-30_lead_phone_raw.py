"""leads.phone_raw: phones that are not valid numbers are kept as sent, not as E.164

Until now a phone was stored as E.164 when it was merely *possible* (a Chinese mobile read as
a US number became `+13800138000`, valid nowhere) and deduped on. Now only numbers that
`phonenumbers.is_valid_number` accepts are stored in `phone`; anything else goes to
`phone_raw` and is never used to find duplicates. This re-checks every stored phone and moves
the invalid ones (the only thing left of what was sent) to `phone_raw`.

Downgrade puts them back in `phone` (they are E.164-shaped: that is how they were stored), and
keeps any other raw value in `attributes.phone_raw`, then drops the column.

Revision ID: b1c4phoneraw1
Revises: b1leadphone64
Create Date: 2026-11-30 00:30:00.000000+00:00
"""

from collections.abc import Sequence

import phonenumbers
import sqlalchemy as sa
from alembic import op

revision: str = "b1c4phoneraw1"
down_revision: str | None = "b1leadphone64"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000


def _valid(phone: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return False


def upgrade() -> None:
    op.add_column("leads", sa.Column("phone_raw", sa.Text(), nullable=True))
    bind = op.get_bind()
    invalid: list[object] = []
    # Pages by id (plain queries: a cursor left open would block later migrations' ALTER TABLE).
    page = sa.text(
        "SELECT id, phone FROM leads WHERE phone IS NOT NULL AND (CAST(:after AS uuid) IS NULL OR id > :after)"
        " ORDER BY id LIMIT :limit"
    )
    after = None
    while True:
        rows = bind.execute(page, {"after": after, "limit": BATCH}).all()
        if not rows:
            break
        invalid += [lead_id for lead_id, phone in rows if not _valid(phone)]
        after = rows[-1][0]
    move = sa.text(
        "UPDATE leads SET phone_raw = phone, phone = NULL WHERE id = ANY(:ids)"
    ).bindparams(sa.bindparam("ids", type_=sa.ARRAY(sa.Uuid())))
    for start in range(0, len(invalid), BATCH):
        bind.execute(move, {"ids": invalid[start : start + BATCH]})


def downgrade() -> None:
    op.execute(
        "UPDATE leads SET phone = phone_raw"
        " WHERE phone IS NULL AND phone_raw ~ '^\\+[0-9]{2,31}$'"
    )
    op.execute(
        "UPDATE leads SET attributes = attributes || jsonb_build_object('phone_raw', phone_raw)"
        " WHERE phone_raw IS NOT NULL AND phone IS DISTINCT FROM phone_raw"
    )
    op.drop_column("leads", "phone_raw")

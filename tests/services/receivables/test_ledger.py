"""Installment status by the organisation's timezone, and the bucket arithmetic."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import literal, select

from app.models.organisation import OrganisationSettings
from app.models.receivable import Installment, InstallmentStatus
from app.services.receivables.aging import bucket_case, bucket_names
from app.services.receivables.ledger import local_today, status_for
from app.state import AppState


def _inst(paid: str = "0", written_off_on: date | None = None) -> Installment:
    return Installment(
        order_id=uuid.UUID(int=0),  # never read: the installment is not stored
        sequence=1,
        percent=Decimal(100),
        due_date=date(2026, 11, 30),
        amount=Decimal("100.00"),
        paid_amount=Decimal(paid),
        currency="CNY",
        written_off_on=written_off_on,
    )


def test_overdue_follows_the_organisations_local_date() -> None:
    evening_utc = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
    kiritimati = OrganisationSettings(timezone="Pacific/Kiritimati")  # UTC+14: already Dec 1
    honolulu = OrganisationSettings(timezone="Pacific/Honolulu")  # UTC-10: still Nov 30
    assert local_today(kiritimati, evening_utc) == date(2026, 12, 1)
    assert status_for(_inst(), local_today(kiritimati, evening_utc)) == InstallmentStatus.overdue
    assert status_for(_inst(), local_today(honolulu, evening_utc)) == InstallmentStatus.scheduled
    assert status_for(_inst("40"), date(2026, 11, 30)) == InstallmentStatus.partially_paid
    assert status_for(_inst("40"), date(2026, 12, 1)) == InstallmentStatus.overdue
    assert status_for(_inst("100"), date(2026, 12, 9)) == InstallmentStatus.paid
    assert status_for(_inst("40", date(2026, 12, 2)), date(2026, 12, 9)) == InstallmentStatus.written_off


async def test_bucket_edges_in_sql(state: AppState) -> None:
    assert bucket_names([30, 60, 90]) == ["current", "1-30", "31-60", "61-90", "90+"]
    days = (-5, 0, 1, 30, 31, 60, 61, 90, 91, 400)
    async with state.sessions() as session:
        got = [
            (await session.execute(select(bucket_case(literal(d), [30, 60, 90])))).scalar_one() for d in days
        ]
    assert got == ["current", "current", "1-30", "1-30", "31-60", "31-60", "61-90", "61-90", "90+", "90+"]

"""Currency conversion for metrics: the organisation's dated rates (the rate on or before a local
date), exact per-currency sums, and the rates used (named in every converted response)."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import FieldError, ValidationFailed
from app.models.metric_reports import RateUsed
from app.services.metrics.common import EXACT, fetch


class Converter:
    """Converts sums per (currency, local date) into `target` at the organisation's dated rates:
    the rate of the latest date on or before the deal's date. A missing rate is a 422 naming it."""

    def __init__(self, target: str, rates: dict[str, list[tuple[date, Decimal]]]) -> None:
        self.target = target
        self.rates = rates  # from currency -> [(date, rate)] ascending
        self.used: dict[tuple[str, date], Decimal] = {}

    @classmethod
    async def load(cls, session: AsyncSession, org_id: uuid.UUID, target: str) -> Converter:
        """Every rate into `target` of the organisation."""
        rows = await fetch(
            session,
            "SELECT from_currency, date, rate FROM exchange_rates "
            "WHERE org_id = :org_id AND to_currency = :target ORDER BY from_currency, date",
            {"org_id": org_id, "target": target},
        )
        rates: dict[str, list[tuple[date, Decimal]]] = {}
        for from_currency, day, rate in rows:
            rates.setdefault(from_currency, []).append((day, Decimal(rate)))
        return cls(target, rates)

    def rate(self, currency: str, day: date) -> Decimal:
        """The rate for one currency on one local date."""
        if currency == self.target:
            return Decimal(1)
        found = None
        for rate_day, rate in self.rates.get(currency, []):
            if rate_day > day:
                break
            found = (rate_day, rate)
        if found is None:
            raise ValidationFailed(
                f"No exchange rate {currency}->{self.target} on or before {day.isoformat()}.",
                errors=[
                    FieldError(
                        field="convert_to",
                        code="missing_exchange_rate",
                        message=f"{currency}->{self.target} on or before {day.isoformat()}",
                    )
                ],
                extra={"missing_rate": {"from": currency, "to": self.target, "date": day.isoformat()}},
            )
        self.used[(currency, found[0])] = found[1]
        return found[1]

    def convert(self, amount: Decimal | None, currency: str, day: date) -> Decimal:
        """amount × rate, exact."""
        if amount is None:
            return Decimal(0)
        return EXACT.multiply(Decimal(amount), self.rate(currency, day))

    def rates_used(self) -> list[RateUsed]:
        """The dated rates used, for the response."""
        return [
            RateUsed(from_currency=c, to_currency=self.target, date=d, rate=r)
            for (c, d), r in sorted(self.used.items())
        ]


class Money:
    """Exact sums per currency (converted into one when a converter is given)."""

    def __init__(self, converter: Converter | None) -> None:
        self.converter = converter
        self.sums: dict[str, Decimal] = {}

    def add(self, amount: Any, currency: str, day: date | None = None) -> None:
        """Add an amount of a currency (day: the local date its conversion rate is taken at)."""
        if amount is None:
            amount = Decimal(0)
        if self.converter is not None:
            assert day is not None
            self.sums[self.converter.target] = EXACT.add(
                self.sums.get(self.converter.target, Decimal(0)),
                self.converter.convert(Decimal(amount), currency, day),
            )
        else:
            self.sums[currency] = EXACT.add(self.sums.get(currency, Decimal(0)), Decimal(amount))

    def get(self, currency: str) -> Decimal:
        """The exact sum of one currency (0 when none)."""
        return self.sums.get(currency, Decimal(0))

    def currencies(self) -> list[str]:
        """Currencies seen, sorted."""
        return sorted(self.sums)

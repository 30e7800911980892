"""Quote arithmetic and the payment plan, against independent Decimal computations."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from app.models.quote import PaymentTerm
from app.money import minor_units, round_money
from app.services.pricing import LineInput, compute
from app.services.receivables.orders import plan


def _q(value: Decimal, exp: str) -> Decimal:
    return value.quantize(Decimal(exp), rounding=ROUND_HALF_UP)


def test_minor_units_follow_iso_4217() -> None:
    assert [
        minor_units(c) for c in ("JPY", "KRW", "USD", "CNY", "EUR", "KWD", "BHD", "JOD", "OMR", "TND")
    ] == [
        0,
        0,
        2,
        2,
        2,
        3,
        3,
        3,
        3,
        3,
    ]
    assert round_money(Decimal("2.5"), "JPY") == Decimal("3")
    assert round_money(Decimal("1.0005"), "KWD") == Decimal("1.001")
    assert round_money(Decimal("0.125"), "USD") == Decimal("0.13")  # half-up, not banker's


def test_cny_line_with_discount_and_tax() -> None:
    result = compute(
        [LineInput("Widget", Decimal(3), Decimal("19.99"), Decimal(13), discount_percent=Decimal(15))],
        currency="CNY",
    )
    gross = _q(Decimal(3) * Decimal("19.99"), "0.01")
    discount = _q(gross * Decimal("0.15"), "0.01")
    net = gross - discount
    tax = _q(net * Decimal("0.13"), "0.01")
    line = result.lines[0]
    assert (line.gross, line.discount_amount, line.net, line.tax, line.total) == (
        gross,
        discount,
        net,
        tax,
        net + tax,
    )
    assert str(result.total) == "57.60"
    assert result.tax_total == tax and result.subtotal == gross


def test_jpy_line_rounds_to_whole_yen() -> None:
    result = compute(
        [LineInput("Service", Decimal(7), Decimal(1234), Decimal(10), discount_percent=Decimal(10))],
        currency="JPY",
    )
    gross = Decimal(7 * 1234)
    discount = _q(gross * Decimal("0.10"), "1")
    net = gross - discount
    tax = _q(net * Decimal("0.10"), "1")
    assert result.lines[0].net == net and result.lines[0].tax == tax
    assert result.total == net + tax == Decimal(8551)
    assert str(result.total) == "8551"


def test_quote_level_discount_applies_per_line_after_line_discounts() -> None:
    lines = [
        LineInput("A", Decimal(3), Decimal("19.99"), Decimal(13), discount_percent=Decimal(15)),
        LineInput("B", Decimal("2.5"), Decimal("10.01"), Decimal(6)),
        LineInput("C", Decimal(1), Decimal("99.99"), Decimal(0), discount_amount=Decimal("5.55")),
    ]
    result = compute(lines, currency="CNY", discount_percent=Decimal(5))
    expected_total = Decimal(0)
    for line, got in zip(lines, result.lines, strict=True):
        gross = _q(line.quantity * line.unit_price, "0.01")
        if line.discount_percent is not None:
            own = _q(gross * line.discount_percent / 100, "0.01")
        else:
            own = line.discount_amount or Decimal(0)
        quote_discount = _q((gross - own) * Decimal("0.05"), "0.01")
        net = gross - own - quote_discount
        tax = _q(net * line.tax_rate / 100, "0.01")
        assert (got.quote_discount_amount, got.net, got.tax, got.total) == (
            quote_discount,
            net,
            tax,
            net + tax,
        )
        expected_total += net + tax
    assert result.total == expected_total
    assert result.net_total + result.tax_total == result.total
    assert result.subtotal - result.discount_total == result.net_total


def test_tax_inclusive_extracts_tax_from_the_total() -> None:
    result = compute(
        [LineInput("X", Decimal(1), Decimal("113.00"), Decimal(13))], currency="CNY", tax_inclusive=True
    )
    assert result.total == Decimal("113.00") and result.tax_total == Decimal("13.00")
    line = result.lines[0]
    assert line.total == Decimal("113.00") and line.tax == Decimal("13.00") and line.net == Decimal("100.00")


def test_payment_plan_puts_the_remainder_on_the_last_installment() -> None:
    terms = [
        PaymentTerm(percent=Decimal(30), due="on_acceptance"),
        PaymentTerm(percent=Decimal(70), due_days=30),
    ]
    rows = plan(Decimal("100.01"), "USD", terms, date(2026, 11, 22))
    assert [r[1] for r in rows] == [Decimal("30.00"), Decimal("70.01")]
    assert sum(r[1] for r in rows) == Decimal("100.01")
    assert [r[2] for r in rows] == [date(2026, 11, 22), date(2026, 12, 22)]
    thirds = [PaymentTerm(percent=Decimal("33.3333"), due_days=d) for d in (0, 30)] + [
        PaymentTerm(percent=Decimal("33.3334"), due_days=60)
    ]
    rows = plan(Decimal(1000), "JPY", thirds, date(2026, 1, 1))
    assert [r[1] for r in rows] == [Decimal(333), Decimal(333), Decimal(334)]

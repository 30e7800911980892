"""Money: ISO 4217 minor units and the one rounding function (half-up) every amount goes through."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 currencies whose minor unit is not 2 digits (every other code has 2).
_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV"),
        0,
    ),
    **dict.fromkeys(("XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4,
    "UYW": 4,
}

HUNDRED = Decimal(100)


def minor_units(currency: str) -> int:
    """Digits after the decimal point for a currency (ISO 4217; 2 unless listed)."""
    return _MINOR_UNITS.get(currency.upper(), 2)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit: the only rounding of money in Loudou."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def percent_of(amount: Decimal, percent: Decimal, currency: str) -> Decimal:
    """`percent` % of `amount`, rounded to the currency's minor unit."""
    return round_money(amount * percent / HUNDRED, currency)


def fits_currency(amount: Decimal, currency: str) -> bool:
    """Whether `amount` has no more digits after the point than the currency allows."""
    return amount == round_money(amount, currency)


def plain_percent(value: Decimal) -> Decimal:
    """A percentage without trailing zeros or exponent ("13.00" -> "13", "2.50" -> "2.5")."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()

"""Line pricing (the quote math, also used by orders entered directly), pure Decimal: every
amount is rounded by app.money.round_money (half-up).

Per line, in this order:
1. gross = quantity × unit price, rounded to the currency's minor unit;
2. the line's discount: `discount_percent` % of gross (rounded) or a fixed `discount_amount`;
3. the quote-level discount: `discount_percent` of the quote applied to what step 2 left, rounded per line;
4. tax exclusive (default): tax = tax rate % of the net (rounded), total = net + tax;
   tax inclusive: the discounted amount is the total, tax = total × rate / (100 + rate) (rounded),
   net = total - tax.
Quote totals are the sums of the rounded line values, so lines always add up to the totals.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ValidationFailed
from app.models.product import Product
from app.models.quote import QuoteLineIn
from app.money import HUNDRED, fits_currency, percent_of, plain_percent, round_money

ZERO = Decimal(0)


@dataclass(frozen=True)
class LineInput:
    """A line with its price and tax rate resolved (from the product or the request)."""

    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_rate: Decimal
    discount_percent: Decimal | None = None
    discount_amount: Decimal | None = None
    product_id: uuid.UUID | None = None
    sku: str | None = None


@dataclass(frozen=True)
class LineResult:
    """A computed line."""

    line: LineInput
    gross: Decimal
    discount_amount: Decimal
    quote_discount_amount: Decimal
    net: Decimal
    tax: Decimal
    total: Decimal


@dataclass(frozen=True)
class QuoteTotals:
    """The computed lines and their sums."""

    lines: list[LineResult]
    subtotal: Decimal
    discount_total: Decimal
    net_total: Decimal
    tax_total: Decimal
    total: Decimal


def compute(
    lines: list[LineInput], *, currency: str, discount_percent: Decimal = ZERO, tax_inclusive: bool = False
) -> QuoteTotals:
    """Compute every line and the totals of a quote (see the module docstring for the order)."""
    results = []
    for index, line in enumerate(lines):
        gross = round_money(line.quantity * line.unit_price, currency)
        if line.discount_percent is not None:
            discount = percent_of(gross, line.discount_percent, currency)
        elif line.discount_amount is not None:
            discount = line.discount_amount
            if not fits_currency(discount, currency):
                raise ValidationFailed.on(
                    f"lines.{index}.discount_amount", "too_many_decimals", f"too many digits for {currency}"
                )
            if discount > gross:
                raise ValidationFailed.on(
                    f"lines.{index}.discount_amount", "exceeds_line", "the discount exceeds the line amount"
                )
        else:
            discount = ZERO
        after_line = gross - discount
        quote_discount = percent_of(after_line, discount_percent, currency)
        discounted = after_line - quote_discount
        if tax_inclusive:
            total = discounted
            tax = round_money(total * line.tax_rate / (HUNDRED + line.tax_rate), currency)
            net = total - tax
        else:
            net = discounted
            tax = percent_of(net, line.tax_rate, currency)
            total = net + tax
        results.append(
            LineResult(
                line=line,
                gross=gross,
                discount_amount=round_money(discount, currency),
                quote_discount_amount=quote_discount,
                net=net,
                tax=tax,
                total=total,
            )
        )
    zero = round_money(ZERO, currency)
    return QuoteTotals(
        lines=results,
        subtotal=sum((r.gross for r in results), zero),
        discount_total=sum((r.discount_amount + r.quote_discount_amount for r in results), zero),
        net_total=sum((r.net for r in results), zero),
        tax_total=sum((r.tax for r in results), zero),
        total=sum((r.total for r in results), zero),
    )


def line_json(position: int, result: LineResult) -> dict[str, object]:
    """A computed line as stored on the quote (decimal strings)."""
    line = result.line
    return {
        "position": position,
        "product_id": str(line.product_id) if line.product_id else None,
        "sku": line.sku,
        "description": line.description,
        "quantity": str(plain_percent(line.quantity)),
        "unit_price": str(line.unit_price),
        "discount_percent": None
        if line.discount_percent is None
        else str(plain_percent(line.discount_percent)),
        "discount_amount": str(result.discount_amount),
        "quote_discount_amount": str(result.quote_discount_amount),
        "tax_rate": str(plain_percent(line.tax_rate)),
        "gross": str(result.gross),
        "net": str(result.net),
        "tax": str(result.tax),
        "total": str(result.total),
    }


def max_discount_percent(
    lines: list[dict[str, str]], *, subtotal: Decimal, discount_total: Decimal
) -> Decimal:
    """The largest effective discount of stored lines, per line and over the quote, in percent."""
    rates = []
    for line in lines:
        gross = Decimal(line["gross"])
        if gross:
            discount = Decimal(line["discount_amount"]) + Decimal(line["quote_discount_amount"])
            rates.append(discount * HUNDRED / gross)
    if subtotal:
        rates.append(discount_total * HUNDRED / subtotal)
    return max(rates, default=ZERO)


# Amounts stay below this (NUMERIC(18, 4) holds 10^14).
MAX_AMOUNT = Decimal(10) ** 14


async def resolve_lines(session: AsyncSession, lines: list[QuoteLineIn], currency: str) -> list[LineInput]:
    """Lines with price, tax and name from their product where not given (quotes and direct orders)."""
    resolved = []
    for index, line in enumerate(lines):
        product = None
        if line.product_id is not None:
            product = await session.get(Product, line.product_id)
            if product is None:
                raise ValidationFailed.on(f"lines.{index}.product_id", "not_found", "no such product")
            if line.unit_price is None and product.currency != currency:
                raise ValidationFailed.on(
                    f"lines.{index}.product_id",
                    "currency_mismatch",
                    f"the product is priced in {product.currency}; give a unit_price in {currency}",
                )
        unit_price = (
            line.unit_price if line.unit_price is not None else (product.unit_price if product else None)
        )
        if unit_price is None:
            raise ValidationFailed.on(
                f"lines.{index}.unit_price", "required", "a free-text line needs a unit_price"
            )
        unit_price = Decimal(unit_price)
        if not fits_currency(unit_price, currency):
            raise ValidationFailed.on(
                f"lines.{index}.unit_price", "too_many_decimals", f"too many digits for {currency}"
            )
        tax_rate = (
            line.tax_rate
            if line.tax_rate is not None
            else (Decimal(product.tax_rate) if product else Decimal(0))
        )
        resolved.append(
            LineInput(
                description=(line.description or "").strip() or (product.name if product else ""),
                quantity=line.quantity,
                unit_price=unit_price,
                tax_rate=tax_rate,
                discount_percent=line.discount_percent,
                discount_amount=line.discount_amount,
                product_id=product.id if product else None,
                sku=product.sku if product else None,
            )
        )
    return resolved

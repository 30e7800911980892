"""Quotes: numbering, server-side totals, drafts, the primary quote, revisions (app.services.quotes.workflow
moves them through their statuses).

Quotes inherit their deal's visibility (see app.services.deals.service): whoever may see the deal may
see and work on its quotes (viewers only read).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import InvalidTransition, NotFound, ValidationFailed
from app.models.base import utcnow
from app.models.deal import Deal, DealStatus
from app.models.quote import (
    LineChange,
    PaymentTerm,
    Quote,
    QuoteCreate,
    QuoteLineIn,
    QuoteRead,
    QuoteRevisionRead,
    QuoteStatus,
    QuoteUpdate,
)
from app.money import HUNDRED, round_money
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.common import check_version, next_number, org_today
from app.services.deals import service as deals
from app.services.pricing import MAX_AMOUNT, compute, line_json, resolve_lines

S = QuoteStatus
# Explicit allowed transitions; anything else is a 409.
ALLOWED: dict[QuoteStatus, frozenset[QuoteStatus]] = {
    S.draft: frozenset({S.pending_approval, S.approved, S.superseded}),
    S.pending_approval: frozenset({S.approved, S.draft, S.superseded}),
    S.approved: frozenset({S.sent, S.superseded}),
    S.sent: frozenset({S.accepted, S.declined, S.expired, S.superseded}),
    S.accepted: frozenset(),  # final: its order exists; a change is a new quote, not a revision
    S.declined: frozenset({S.superseded}),
    S.expired: frozenset({S.superseded}),
    S.superseded: frozenset(),
}
# Money columns are NUMERIC(18, 4): 14 digits before the point.
DEFAULT_TERMS = [PaymentTerm(percent=HUNDRED, due="on_acceptance")]


def check_transition(quote: Quote, to: QuoteStatus) -> None:
    """409 unless `to` is an allowed next status of the quote."""
    if to not in ALLOWED[QuoteStatus(quote.status)]:
        raise InvalidTransition(
            f"A {quote.status} quote cannot become {to}.", extra={"quote_status": quote.status}
        )


def transition(quote: Quote, to: QuoteStatus) -> None:
    """Move the quote to `to` (checked), bumping its version."""
    check_transition(quote, to)
    quote.status = to
    quote.version += 1
    quote.updated_at = utcnow()


def read_model(quote: Quote) -> QuoteRead:
    """A quote revision as the API shows it."""
    return QuoteRead.model_validate(quote.model_dump(warnings=False))


# --- loading with the deal's visibility ----------------------------------------------------------


def _visible(principal: Principal) -> Select[Any]:
    return (
        select(Quote)
        .join(Deal, (col(Deal.org_id) == col(Quote.org_id)) & (col(Deal.id) == col(Quote.deal_id)))
        .where(deals.visibility_clause(principal))
    )


async def get_quote(
    session: AsyncSession, principal: Principal, quote_id: uuid.UUID, *, lock: bool = False
) -> Quote:
    """A quote whose deal the caller may see, else 404; `lock` holds the row for a transition."""
    stmt = _visible(principal).where(col(Quote.id) == quote_id)
    if lock:
        stmt = stmt.with_for_update(of=Quote)
    quote = (await session.execute(stmt)).scalar_one_or_none()
    if quote is None:
        raise NotFound(f"No quote with id {quote_id}.")
    assert isinstance(quote, Quote)
    return quote


async def list_quotes(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    deal_id: uuid.UUID | None = None,
    status: QuoteStatus | None = None,
    number: str | None = None,
) -> tuple[list[Quote], str | None]:
    """Quotes of the deals the caller may see, filtered."""
    stmt = _visible(principal)
    if deal_id is not None:
        stmt = stmt.where(col(Quote.deal_id) == deal_id)
    if status is not None:
        stmt = stmt.where(col(Quote.status) == status)
    if number is not None:
        stmt = stmt.where(col(Quote.number) == number)
    return await paginate(
        session,
        stmt,
        page,
        id_column=Quote.id,
        sortable={"created_at": Quote.created_at, "number": Quote.number, "total": Quote.total},
    )


# --- computing --------------------------------------------------------------------------------


def _check_terms(terms: list[PaymentTerm]) -> list[PaymentTerm]:
    if not terms:
        return list(DEFAULT_TERMS)
    if sum((t.percent for t in terms), Decimal(0)) != HUNDRED:
        raise ValidationFailed.on(
            "payment_terms", "must_sum_to_100", "the payment terms' percents must add up to 100"
        )
    return terms


async def _compute_into(session: AsyncSession, quote: Quote, lines: list[QuoteLineIn]) -> None:
    resolved = await resolve_lines(session, lines, quote.currency)
    totals = compute(
        resolved,
        currency=quote.currency,
        discount_percent=Decimal(quote.discount_percent),
        tax_inclusive=quote.tax_inclusive,
    )
    if totals.subtotal >= MAX_AMOUNT or totals.total >= MAX_AMOUNT:
        raise ValidationFailed.on(
            "lines", "amount_too_large", f"quote amounts must stay below {MAX_AMOUNT:,}"
        )
    quote.lines = [line_json(i + 1, r) for i, r in enumerate(totals.lines)]
    quote.subtotal = totals.subtotal
    quote.discount_total = totals.discount_total
    quote.net_total = totals.net_total
    quote.tax_total = totals.tax_total
    quote.total = totals.total


def _stored_lines_as_input(quote: Quote) -> list[QuoteLineIn]:
    """The stored lines as request lines (prices as they were; products are not looked up again)."""
    return [
        QuoteLineIn(
            description=line["description"],
            quantity=Decimal(line["quantity"]),
            unit_price=Decimal(line["unit_price"]),
            discount_percent=None if line["discount_percent"] is None else Decimal(line["discount_percent"]),
            discount_amount=None
            if line["discount_percent"] is not None
            else Decimal(line["discount_amount"]),
            tax_rate=Decimal(line["tax_rate"]),
        )
        for line in quote.lines
    ]


def _restore_products(quote: Quote, previous: list[dict[str, Any]]) -> None:
    """Keep product references of copied lines (same position, same description)."""
    for line, old in zip(quote.lines, previous, strict=False):
        if line["description"] == old["description"] and line["product_id"] is None:
            line["product_id"], line["sku"] = old["product_id"], old["sku"]


# --- create, update -----------------------------------------------------------------------------


async def make_primary(session: AsyncSession, principal: Principal | None, quote: Quote, deal: Deal) -> None:
    """This quote becomes the deal's primary one; its total drives the deal amount."""
    await session.execute(
        update(Quote)
        .where(col(Quote.deal_id) == deal.id, col(Quote.id) != quote.id, col(Quote.is_primary))
        .values(is_primary=False)
    )
    quote.is_primary = True
    await deals.set_amount(session, principal, deal, quote.total, quote.currency)


async def create_quote(session: AsyncSession, principal: Principal, data: QuoteCreate) -> Quote:
    """A draft quote on an open deal, numbered Q-<year>-<nnnn> without gaps."""
    deal = await deals.get_deal(session, principal, data.deal_id)
    if deal.status != DealStatus.open:
        raise InvalidTransition(f"The deal is {deal.status}; quotes are made on open deals.")
    terms = _check_terms(data.payment_terms)
    issue_date = data.issue_date or await org_today(session, principal.org_id)
    quote = Quote(
        deal_id=deal.id,
        number="",
        currency=data.currency or deal.currency,
        issue_date=issue_date,
        valid_until=data.valid_until,
        tax_inclusive=data.tax_inclusive,
        discount_percent=data.discount_percent,
        payment_terms=[t.model_dump(mode="json", exclude_none=True) for t in terms],
        notes=data.notes,
        created_by_id=principal.user_id,
    )
    _check_validity(quote)
    await _compute_into(session, quote, data.lines)
    number = await next_number(session, principal.org_id, "quote", issue_date.year)
    quote.number = f"Q-{issue_date.year}-{number:04d}"
    session.add(quote)
    await session.flush()
    has_primary = (
        await session.execute(
            select(col(Quote.id)).where(
                col(Quote.deal_id) == deal.id, col(Quote.is_primary), col(Quote.id) != quote.id
            )
        )
    ).first()
    if data.is_primary or (data.is_primary is None and has_primary is None):
        await make_primary(session, principal, quote, deal)
    audit.record(
        session,
        actor=principal,
        entity="quote",
        entity_id=quote.id,
        action="create",
        changes={"number": [None, quote.number], "total": [None, str(quote.total)]},
    )
    await session.flush()
    return quote


def _check_validity(quote: Quote) -> None:
    if quote.valid_until is not None and quote.valid_until < quote.issue_date:
        raise ValidationFailed.on("valid_until", "before_issue_date", "valid_until is before issue_date")


async def _apply_update(session: AsyncSession, quote: Quote, data: QuoteUpdate) -> dict[str, Any]:
    changes = data.changes(exclude={"lines", "payment_terms"})
    diff: dict[str, Any] = {}
    for name, value in changes.items():
        old = getattr(quote, name)
        if old != value:
            diff[name] = [str(old) if old is not None else None, str(value) if value is not None else None]
            setattr(quote, name, value)
    if "payment_terms" in data.model_fields_set:
        terms = _check_terms(data.payment_terms or [])
        quote.payment_terms = [t.model_dump(mode="json", exclude_none=True) for t in terms]
        diff["payment_terms"] = [None, quote.payment_terms]
    _check_validity(quote)
    previous_lines = list(quote.lines)
    lines = data.lines if data.lines is not None else _stored_lines_as_input(quote)
    await _compute_into(session, quote, lines)
    if data.lines is None:
        _restore_products(quote, previous_lines)
    if data.lines is not None:
        diff["lines"] = [len(previous_lines), len(quote.lines)]
    return diff


async def update_quote(
    session: AsyncSession,
    principal: Principal,
    quote_id: uuid.UUID,
    data: QuoteUpdate,
    *,
    expected_version: int | None,
) -> Quote:
    """Change a draft (lines are recomputed); any other status is immutable: revise it instead (409)."""
    quote = await get_quote(session, principal, quote_id, lock=True)
    check_version(quote, expected_version)
    if quote.status != QuoteStatus.draft:
        raise InvalidTransition(f"A {quote.status} quote is immutable; revise it to change it.")
    diff = await _apply_update(session, quote, data)
    quote.version += 1
    quote.updated_at = utcnow()
    if quote.is_primary:
        deal = await deals.get_deal(session, principal, quote.deal_id)
        await deals.set_amount(session, principal, deal, quote.total, quote.currency)
    audit.record(session, actor=principal, entity="quote", entity_id=quote.id, action="update", changes=diff)
    await session.flush()
    return quote


async def mark_primary(session: AsyncSession, principal: Principal, quote_id: uuid.UUID) -> Quote:
    """Make this quote the deal's primary one; the deal amount follows its total."""
    quote = await get_quote(session, principal, quote_id, lock=True)
    if quote.status == QuoteStatus.superseded:
        raise InvalidTransition("A superseded revision cannot be primary; use the latest revision.")
    deal = await deals.get_deal(session, principal, quote.deal_id)
    if not quote.is_primary:
        await make_primary(session, principal, quote, deal)
        audit.record(
            session, actor=principal, entity="quote", entity_id=quote.id, action="primary", changes={}
        )
    await session.flush()
    return quote


# --- revisions --------------------------------------------------------------------------------


async def revise_quote(
    session: AsyncSession,
    principal: Principal,
    quote_id: uuid.UUID,
    data: QuoteUpdate,
    *,
    expected_version: int | None = None,
) -> Quote:
    """A new draft revision (same number, revision + 1) from this one; the old one is kept, superseded."""
    old = await get_quote(session, principal, quote_id, lock=True)
    check_version(old, expected_version)
    if old.status == QuoteStatus.superseded:
        raise InvalidTransition(f"Revision {old.revision} is superseded; revise the latest revision.")
    new = Quote(
        deal_id=old.deal_id,
        number=old.number,
        revision=old.revision + 1,
        currency=old.currency,
        issue_date=await org_today(session, principal.org_id),
        valid_until=old.valid_until,
        tax_inclusive=old.tax_inclusive,
        discount_percent=old.discount_percent,
        payment_terms=list(old.payment_terms),
        notes=old.notes,
        lines=[dict(line) for line in old.lines],
        created_by_id=principal.user_id,
        previous_revision_id=old.id,
    )
    if new.valid_until is not None and new.valid_until < new.issue_date:
        new.valid_until = None
    await _apply_update(session, new, data)
    was_primary = old.is_primary
    transition(old, QuoteStatus.superseded)
    old.is_primary = False
    session.add(new)
    await session.flush()
    old.superseded_by_id = new.id
    if was_primary:
        deal = await deals.get_deal(session, principal, new.deal_id)
        await make_primary(session, principal, new, deal)
    audit.record(
        session,
        actor=principal,
        entity="quote",
        entity_id=new.id,
        action="revise",
        changes={"revision": [old.revision, new.revision], "previous_revision_id": [None, str(old.id)]},
    )
    await session.flush()
    return new


_COMPARED = (
    "description",
    "product_id",
    "quantity",
    "unit_price",
    "discount_percent",
    "discount_amount",
    "tax_rate",
    "total",
)


def diff_lines(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[LineChange]:
    """Line changes between two revisions, position by position."""
    changes = []
    for index in range(max(len(old), len(new))):
        if index >= len(old):
            changes.append(
                LineChange(
                    position=index + 1, change="added", fields={k: [None, new[index][k]] for k in _COMPARED}
                )
            )
        elif index >= len(new):
            changes.append(
                LineChange(
                    position=index + 1, change="removed", fields={k: [old[index][k], None] for k in _COMPARED}
                )
            )
        else:
            fields = {k: [old[index][k], new[index][k]] for k in _COMPARED if old[index][k] != new[index][k]}
            if fields:
                changes.append(LineChange(position=index + 1, change="changed", fields=fields))
    return changes


async def revisions(
    session: AsyncSession, principal: Principal, quote_id: uuid.UUID
) -> list[QuoteRevisionRead]:
    """Every revision of this quote's number, oldest first, each with its line diff to the one before."""
    quote = await get_quote(session, principal, quote_id)
    rows = list(
        (
            await session.execute(
                _visible(principal).where(col(Quote.number) == quote.number).order_by(col(Quote.revision))
            )
        ).scalars()
    )
    out = []
    previous: Quote | None = None
    for row in rows:
        out.append(
            QuoteRevisionRead(
                quote=read_model(row),
                line_changes=diff_lines(previous.lines if previous else [], row.lines),
                total_change=[
                    round_money(Decimal(previous.total), previous.currency),
                    round_money(Decimal(row.total), row.currency),
                ]
                if previous
                else None,
            )
        )
        previous = row
    return out

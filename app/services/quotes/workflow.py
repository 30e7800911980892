"""The quote workflow: submit (with the approval policy), approve, reject, send, decline, accept, expire.

Transitions are checked against `quotes.ALLOWED` (409 for any other). Approval policy (data, in
the organisation's settings): a quote needs approval when its largest effective discount (per
line or overall, line and quote discounts together) is above `quote_discount_threshold_percent`,
or when its total is above `quote_total_approval_limit` and it is in the organisation's base
currency (other currencies are not converted yet). A manager or admin who may see the deal
approves, never the person who made the quote.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Date, cast, func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Forbidden, InvalidTransition
from app.models.base import utcnow
from app.models.common import Role
from app.models.deal import Deal, DealStatus
from app.models.events import QuoteAccepted
from app.models.organisation import Organisation, OrganisationSettings
from app.models.pipeline import Pipeline
from app.models.quote import Quote, QuoteStatus
from app.models.receivable import Order
from app.money import round_money
from app.security import Principal
from app.services import audit, outbox
from app.services.common import check_version, local_today, settings_of
from app.services.deals import service as deals
from app.services.deals import stages as deal_stages
from app.services.pricing import max_discount_percent
from app.services.quotes.service import check_transition, get_quote, make_primary, transition
from app.services.receivables import credit
from app.services.receivables import orders as receivables


async def _settings(session: AsyncSession, org_id: uuid.UUID) -> OrganisationSettings:
    org = await session.get(Organisation, org_id)
    assert org is not None
    return org.typed_settings()


async def _approval_reasons(session: AsyncSession, quote: Quote) -> list[str]:
    settings = await _settings(session, quote.org_id)
    reasons = []
    max_discount = max_discount_percent(
        quote.lines, subtotal=Decimal(quote.subtotal), discount_total=Decimal(quote.discount_total)
    )
    if max_discount > settings.quote_discount_threshold_percent:
        reasons.append(
            f"discount {max_discount.quantize(Decimal('0.01'))}% is above the "
            f"{settings.quote_discount_threshold_percent}% threshold"
        )
    limit = settings.quote_total_approval_limit
    if limit is not None and quote.currency != settings.base_currency:
        # No exchange rate to compare with: a limit that could be dodged by quoting in another
        # currency is no limit, so such a quote always goes to a manager.
        reasons.append(
            f"total {quote.total} {quote.currency} is not in the base currency "
            f"{settings.base_currency} of the approval limit {limit}"
        )
    elif limit is not None and quote.total > limit:
        reasons.append(f"total {quote.total} {quote.currency} is above the approval limit {limit}")
    return reasons


async def _open_deal(session: AsyncSession, principal: Principal, quote: Quote) -> Deal:
    """The quote's deal, which must still be open to send or accept a quote on it (409)."""
    deal = await deals.get_deal(session, principal, quote.deal_id)
    if deal.status != DealStatus.open:
        raise InvalidTransition(f"The deal is {deal.status}; reopen it before sending or accepting quotes.")
    return deal


def _log(
    session: AsyncSession, principal: Principal, quote: Quote, action: str, before: str, after: str
) -> None:
    """Audit one status transition of a quote."""
    audit.record(
        session,
        actor=principal,
        entity="quote",
        entity_id=quote.id,
        action=action,
        changes={"status": [before, after]},
    )


async def submit_quote(
    session: AsyncSession, principal: Principal, quote_id: uuid.UUID, *, expected_version: int | None = None
) -> Quote:
    """Submit a draft: it needs approval (pending_approval) or is approved at once by policy."""
    quote = await get_quote(session, principal, quote_id, lock=True)
    check_version(quote, expected_version)
    check_transition(quote, QuoteStatus.pending_approval)
    reasons = await _approval_reasons(session, quote)
    quote.approval_reasons = reasons
    if reasons:
        transition(quote, QuoteStatus.pending_approval)
    else:
        transition(quote, QuoteStatus.approved)
        quote.approved_at = utcnow()
    _log(session, principal, quote, "submit", QuoteStatus.draft.value, quote.status.value)
    await session.flush()
    return quote


async def approve_quote(
    session: AsyncSession, principal: Principal, quote_id: uuid.UUID, *, expected_version: int | None = None
) -> Quote:
    """Approve a pending quote: a manager or admin, never the person who created it (403)."""
    quote = await get_quote(session, principal, quote_id, lock=True)
    check_version(quote, expected_version)
    check_transition(quote, QuoteStatus.approved)
    if principal.role not in (Role.manager, Role.admin):
        raise Forbidden("Only a manager or an admin can approve quotes.")
    if quote.created_by_id == principal.user_id:
        raise Forbidden("The person who made a quote cannot approve it.")
    transition(quote, QuoteStatus.approved)
    quote.approved_by_id = principal.user_id
    quote.approved_at = utcnow()
    _log(session, principal, quote, "approve", "pending_approval", "approved")
    await session.flush()
    return quote


async def reject_quote(
    session: AsyncSession,
    principal: Principal,
    quote_id: uuid.UUID,
    *,
    reason: str | None,
    expected_version: int | None = None,
) -> Quote:
    """Send a pending quote back to draft (same rules as approving)."""
    quote = await get_quote(session, principal, quote_id, lock=True)
    check_version(quote, expected_version)
    check_transition(quote, QuoteStatus.draft)
    if principal.role not in (Role.manager, Role.admin):
        raise Forbidden("Only a manager or an admin can reject quotes.")
    transition(quote, QuoteStatus.draft)
    quote.status_reason = reason
    _log(session, principal, quote, "reject", "pending_approval", "draft")
    await session.flush()
    return quote


async def send_quote(
    session: AsyncSession, principal: Principal, quote_id: uuid.UUID, *, expected_version: int | None = None
) -> Quote:
    """Mark an approved quote as sent to the customer (delivering it is the caller's business)."""
    quote = await get_quote(session, principal, quote_id, lock=True)
    check_version(quote, expected_version)
    check_transition(quote, QuoteStatus.sent)
    await _open_deal(session, principal, quote)
    transition(quote, QuoteStatus.sent)
    quote.sent_at = utcnow()
    _log(session, principal, quote, "send", "approved", "sent")
    await session.flush()
    return quote


async def decline_quote(
    session: AsyncSession,
    principal: Principal,
    quote_id: uuid.UUID,
    *,
    reason: str | None,
    expected_version: int | None = None,
) -> Quote:
    """The customer declined a sent quote."""
    quote = await get_quote(session, principal, quote_id, lock=True)
    check_version(quote, expected_version)
    transition(quote, QuoteStatus.declined)
    quote.declined_at = utcnow()
    quote.status_reason = reason
    _log(session, principal, quote, "decline", "sent", "declined")
    await session.flush()
    return quote


async def accept_quote(
    session: AsyncSession,
    principal: Principal,
    quote_id: uuid.UUID,
    *,
    expected_version: int | None = None,
    credit_override_reason: str | None = None,
) -> tuple[Quote, Order]:
    """The customer accepted a sent quote: it becomes primary, an order with its payment plan is made,
    and the deal is won when its pipeline says so (`win_on_quote_acceptance`; exit fields not enforced)."""
    quote = await get_quote(session, principal, quote_id, lock=True)
    check_version(quote, expected_version)
    check_transition(quote, QuoteStatus.accepted)
    deal = await _open_deal(session, principal, quote)
    transition(quote, QuoteStatus.accepted)
    now = utcnow()
    quote.accepted_at = now
    override = await credit.check_acceptance(
        session, principal, quote, deal.account_id, override_reason=credit_override_reason
    )
    await make_primary(session, principal, quote, deal)
    accepted_on = local_today(await settings_of(session, deal.org_id), now)  # the organisation's date
    order = await receivables.create_order_from_quote(
        session, principal, quote, deal, accepted_on=accepted_on
    )
    if override is not None:
        order.credit_override_by_id = principal.user_id
        order.credit_override_reason = override
        audit.record(
            session,
            actor=principal,
            entity="order",
            entity_id=order.id,
            action="credit_override",
            changes={"credit_override_reason": [None, override]},
        )
    pipeline = await session.get(Pipeline, deal.pipeline_id)
    if pipeline is not None and pipeline.win_on_quote_acceptance and deal.status == DealStatus.open:
        await deal_stages.win_deal(session, principal, deal.id, enforce_exit_fields=False)
    audit.record(
        session,
        actor=principal,
        entity="quote",
        entity_id=quote.id,
        action="accept",
        changes={"status": ["sent", "accepted"], "order_id": [None, str(order.id)]},
    )
    await outbox.emit(
        session,
        QuoteAccepted(
            quote_id=quote.id,
            number=quote.number,
            revision=quote.revision,
            deal_id=deal.id,
            order_id=order.id,
            total=str(round_money(Decimal(quote.total), quote.currency)),
            currency=quote.currency,
            by_user_id=principal.user_id,
        ),
    )
    await session.flush()
    return quote, order


async def expire_due(session: AsyncSession, now: datetime | None = None) -> int:
    """Expire every sent quote whose valid_until is before today in its organisation's timezone,
    in every organisation: at 20:00 UTC on 30 June a quote valid until 30 June has expired in
    Shanghai, where it is already 1 July, and not in New York.

    One idempotent UPDATE guarded by the status, so two workers running it at once expire each quote once.
    """
    now = now or utcnow()
    timezone = func.coalesce(col(Organisation.settings)["timezone"].astext, "UTC")
    local_day = cast(func.timezone(timezone, now), Date)
    result = await session.execute(
        update(Quote)
        .where(
            col(Quote.org_id) == col(Organisation.id),
            col(Quote.status) == QuoteStatus.sent,
            col(Quote.valid_until) < local_day,
        )
        .values(status=QuoteStatus.expired, expired_at=now, updated_at=now, version=col(Quote.version) + 1)
        .execution_options(cross_tenant=True, synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)

"""Lead conversion: a qualified (or any open) lead becomes an account, a contact and a deal.

Spans the leads and deals domains, so it lives in its own module (a "flow"): it calls their
services and links everything back to the lead, in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field

from app.errors import Conflict, Forbidden
from app.models.account import Account, AccountCreate, Contact, ContactCreate
from app.models.base import utcnow
from app.models.common import CurrencyCode, Input
from app.models.deal import Deal, DealCreate
from app.models.events import LeadConverted
from app.models.lead import Lead, LeadStatus
from app.security import Principal
from app.services import accounts, audit, outbox
from app.services.common import check_version, get_or_404
from app.services.deals import service as deals
from app.services.leads import service as lead_service


class LeadConvert(Input):
    """POST /v1/leads/{id}/convert: everything optional; defaults come from the lead."""

    account_id: uuid.UUID | None = Field(
        default=None, description="Attach to this account instead of a new one"
    )
    account_name: str | None = Field(default=None, min_length=1, max_length=300)
    create_deal: bool = True
    pipeline_id: uuid.UUID | None = Field(default=None, description="Default: the default pipeline")
    deal_name: str | None = Field(default=None, min_length=1, max_length=300)
    amount: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode | None = None
    expected_close_date: date | None = None


@dataclass(frozen=True)
class Converted:
    """What conversion made."""

    lead: Lead
    account: Account
    contact: Contact
    deal: Deal | None


async def convert_lead(
    session: AsyncSession,
    principal: Principal,
    lead_id: uuid.UUID,
    data: LeadConvert,
    *,
    expected_version: int | None,
) -> Converted:
    """Create (or reuse) the account, the contact and a deal; the lead becomes `converted`."""
    lead = await lead_service.get_lead(session, principal, lead_id, lock=True)
    if not await lead_service.can_write(session, principal, lead):
        raise Forbidden("You cannot convert a lead that is not yours.")
    check_version(lead, expected_version)
    if not lead.is_open:
        raise Conflict(f"Only open leads can be converted; this one is {lead.status}.")
    owner_id = lead.owner_id or principal.user_id
    if data.account_id is not None:
        account = await get_or_404(session, Account, data.account_id, what="account")
    else:
        account = await accounts.create_account(
            session,
            principal,
            AccountCreate(
                name=data.account_name or lead.company or lead.name or lead.email or "Unnamed account",
                industry=lead.industry,
                country=lead.country,
                owner_id=owner_id,
            ),
        )
    contact = await accounts.create_contact(
        session,
        principal,
        ContactCreate(
            name=lead.name or lead.email or lead.phone or "Unnamed contact",
            account_id=account.id,
            email=lead.email,
            phone=lead.phone,
            title=lead.title,
            owner_id=owner_id,
        ),
    )
    deal = None
    if data.create_deal:
        deal = await deals.create_deal(
            session,
            principal,
            DealCreate(
                name=data.deal_name or f"{account.name} — {lead.name or lead.email or 'deal'}",
                pipeline_id=data.pipeline_id,
                account_id=account.id,
                contact_id=contact.id,
                lead_id=lead.id,
                owner_id=owner_id,
                amount=data.amount,
                currency=data.currency,
                expected_close_date=data.expected_close_date,
            ),
        )
    now = utcnow()
    before = {"status": str(lead.status)}
    lead.status = LeadStatus.converted
    lead.converted_at = now
    lead.converted_account_id = account.id
    lead.converted_contact_id = contact.id
    lead.converted_deal_id = deal.id if deal else None
    lead.version += 1
    lead.updated_at = now
    audit.record(
        session,
        actor=principal,
        entity="lead",
        entity_id=lead.id,
        action="convert",
        changes={
            "status": [before["status"], "converted"],
            "converted_account_id": [None, str(account.id)],
            "converted_contact_id": [None, str(contact.id)],
            "converted_deal_id": [None, str(deal.id) if deal else None],
        },
    )
    await outbox.emit(
        session,
        LeadConverted(
            lead_id=lead.id, account_id=account.id, contact_id=contact.id, deal_id=deal.id if deal else None
        ),
    )
    await session.flush()
    return Converted(lead=lead, account=account, contact=contact, deal=deal)

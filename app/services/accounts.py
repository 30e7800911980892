"""Accounts and contacts: shared by the whole organisation (every member reads them; non-viewers write).

Like a CRM's company directory, accounts and contacts are not owned records: a rep needs to see
the customer to open a deal for it. Visibility of the money (deals, quotes, orders) is per owner.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, Forbidden, ValidationFailed
from app.models.account import (
    Account,
    AccountCreate,
    AccountUpdate,
    Contact,
    ContactCreate,
    ContactUpdate,
)
from app.models.base import utcnow
from app.models.common import Role
from app.models.dunning import DunningPolicy
from app.models.user import User
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.common import apply_changes, contains, get_or_404, snapshot

ACCOUNT_AUDITED = ["name", "domain", "owner_id", "credit_limit", "credit_rating", "dunning_policy_id"]
CONTACT_AUDITED = ["name", "account_id", "email", "owner_id"]


async def _check_ref(
    session: AsyncSession, model: type[User] | type[Account], ref: uuid.UUID | None, field: str
) -> None:
    if ref is not None and await session.get(model, ref) is None:
        raise ValidationFailed(
            f"Unknown {field}.", errors=[FieldError(field=field, code="not_found", message="no such record")]
        )


async def _check_policy(session: AsyncSession, policy_id: uuid.UUID | None) -> None:
    """An account's own dunning policy must be one of the organisation's."""
    if policy_id is None:
        return
    found = (
        await session.execute(select(col(DunningPolicy.id)).where(col(DunningPolicy.id) == policy_id))
    ).scalar_one_or_none()
    if found is None:
        raise ValidationFailed(
            "Unknown dunning_policy_id.",
            errors=[
                FieldError(field="dunning_policy_id", code="not_found", message="no such dunning policy")
            ],
        )


CREDIT_FIELDS = ("credit_limit", "credit_currency", "credit_rating")


def _check_credit(principal: Principal, fields: dict[str, Any]) -> None:
    """Credit terms are a finance decision: admins and managers set them, reps do not."""
    if fields and principal.role not in (Role.admin, Role.manager):
        raise Forbidden("Only admins and managers set an account's credit limit and rating.")


async def create_account(session: AsyncSession, principal: Principal, data: AccountCreate) -> Account:
    """A new account; the owner defaults to the caller. Credit terms: admins and managers."""
    _check_credit(
        principal, {k: v for k, v in data.model_dump().items() if k in CREDIT_FIELDS and v is not None}
    )
    await _check_ref(session, User, data.owner_id, "owner_id")
    await _check_policy(session, data.dunning_policy_id)
    account = Account(**data.model_dump())
    account.owner_id = data.owner_id or principal.user_id
    session.add(account)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="account",
        entity_id=account.id,
        action="create",
        changes=snapshot(account, ACCOUNT_AUDITED),
    )
    return account


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    """One account of the organisation."""
    return await get_or_404(session, Account, account_id, what="account")


async def list_accounts(
    session: AsyncSession, page: PageParams, *, q: str | None = None, owner_id: uuid.UUID | None = None
) -> tuple[list[Account], str | None]:
    """Accounts, optionally searched by name/domain or filtered by owner."""
    stmt = select(Account)
    if q:
        stmt = stmt.where(
            or_(contains(col(Account.name), q.strip()), contains(col(Account.domain), q.strip()))
        )
    if owner_id is not None:
        stmt = stmt.where(col(Account.owner_id) == owner_id)
    return await paginate(
        session,
        stmt,
        page,
        id_column=Account.id,
        sortable={"created_at": Account.created_at, "name": Account.name, "updated_at": Account.updated_at},
    )


async def update_account(
    session: AsyncSession,
    principal: Principal,
    account_id: uuid.UUID,
    data: AccountUpdate,
    *,
    expected_version: int | None,
) -> Account:
    """Change an account (If-Match for optimistic concurrency); credit terms: admins and managers."""
    account = await get_account(session, account_id)
    changes = data.changes()
    _check_credit(principal, {k: v for k, v in changes.items() if k in CREDIT_FIELDS})
    if "owner_id" in changes:
        await _check_ref(session, User, changes["owner_id"], "owner_id")
    if "dunning_policy_id" in changes:
        await _check_policy(session, changes["dunning_policy_id"])
    if changes.get("legal_notice") is True and not account.legal_notice:
        account.legal_notice_at = utcnow()
    diff = apply_changes(account, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session, actor=principal, entity="account", entity_id=account.id, action="update", changes=diff
        )
        await session.flush()
    return account


async def create_contact(session: AsyncSession, principal: Principal, data: ContactCreate) -> Contact:
    """A new contact, at an account or on its own; the owner defaults to the caller."""
    await _check_ref(session, Account, data.account_id, "account_id")
    await _check_ref(session, User, data.owner_id, "owner_id")
    fields = data.model_dump()
    if data.email is not None:
        fields["email"] = str(data.email).lower()
    contact = Contact(**fields)
    contact.owner_id = data.owner_id or principal.user_id
    session.add(contact)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="contact",
        entity_id=contact.id,
        action="create",
        changes=snapshot(contact, CONTACT_AUDITED),
    )
    return contact


async def get_contact(session: AsyncSession, contact_id: uuid.UUID) -> Contact:
    """One contact of the organisation."""
    return await get_or_404(session, Contact, contact_id, what="contact")


async def list_contacts(
    session: AsyncSession,
    page: PageParams,
    *,
    account_id: uuid.UUID | None = None,
    q: str | None = None,
) -> tuple[list[Contact], str | None]:
    """Contacts, optionally of one account or searched by name/email."""
    stmt = select(Contact)
    if account_id is not None:
        stmt = stmt.where(col(Contact.account_id) == account_id)
    if q:
        stmt = stmt.where(
            or_(contains(col(Contact.name), q.strip()), contains(col(Contact.email), q.strip()))
        )
    return await paginate(
        session,
        stmt,
        page,
        id_column=Contact.id,
        sortable={"created_at": Contact.created_at, "name": Contact.name, "updated_at": Contact.updated_at},
    )


async def update_contact(
    session: AsyncSession,
    principal: Principal,
    contact_id: uuid.UUID,
    data: ContactUpdate,
    *,
    expected_version: int | None,
) -> Contact:
    """Change a contact (If-Match for optimistic concurrency)."""
    contact = await get_contact(session, contact_id)
    changes = data.changes()
    if changes.get("email") is not None:
        changes["email"] = str(changes["email"]).lower()
    if "account_id" in changes:
        await _check_ref(session, Account, changes["account_id"], "account_id")
    if "owner_id" in changes:
        await _check_ref(session, User, changes["owner_id"], "owner_id")
    diff = apply_changes(contact, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session, actor=principal, entity="contact", entity_id=contact.id, action="update", changes=diff
        )
        await session.flush()
    return contact

"""Who may see which receivables (orders, installments, payments, messages, risks; what a
caller cannot see is a 404):
- admin, viewer and finance users: every one of the organisation;
- manager: those of orders owned by them or their team's members, of accounts owned by them or
  their team's members, and of orders whose deal they may see;
- rep: the same, for what they own themselves.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, NotFound, ValidationFailed
from app.models.account import Account
from app.models.common import Role
from app.models.deal import Deal
from app.models.receivable import (
    Order,
)
from app.models.user import User
from app.security import Principal
from app.services.deals.service import visibility_clause


def invalid(field: str, code: str, message: str) -> ValidationFailed:
    """A 422 naming one field."""
    return ValidationFailed(message, errors=[FieldError(field=field, code=code, message=message)])


def owner_clause(principal: Principal, owner: Any) -> ColumnElement[bool]:
    """Whether an owner column is the caller or (for a manager) a member of the caller's team;
    true for admins, viewers and finance users."""
    if principal.role in (Role.admin, Role.viewer) or principal.is_finance:
        return true()
    own: ColumnElement[bool] = owner == principal.user_id
    if principal.role == Role.manager and principal.team_id is not None:
        team = select(col(User.id)).where(col(User.team_id) == principal.team_id)
        return or_(own, owner.in_(team))
    return own


def order_clause(principal: Principal) -> ColumnElement[bool]:
    """The orders a caller may see (see the module docstring)."""
    if principal.role in (Role.admin, Role.viewer) or principal.is_finance:
        return true()
    accounts = select(col(Account.id)).where(owner_clause(principal, col(Account.owner_id)))
    deals = select(col(Deal.id)).where(visibility_clause(principal))
    return or_(
        owner_clause(principal, col(Order.owner_id)),
        col(Order.account_id).in_(accounts),
        col(Order.deal_id).in_(deals),
    )


def account_clause(principal: Principal, account_id: Any) -> ColumnElement[bool]:
    """Whether the caller may see an account's receivables (payments, credit, risks): they own
    it (or their team does), or they may see one of its orders."""
    if principal.role in (Role.admin, Role.viewer) or principal.is_finance:
        return true()
    owned = select(col(Account.id)).where(owner_clause(principal, col(Account.owner_id)))
    ordered = select(col(Order.account_id)).where(order_clause(principal))
    return or_(account_id.in_(owned), account_id.in_(ordered))


async def visible_account(session: AsyncSession, principal: Principal, account_id: uuid.UUID) -> Account:
    """An account whose receivables the caller may see, else 404."""
    account = (
        await session.execute(
            select(Account).where(col(Account.id) == account_id, account_clause(principal, col(Account.id)))
        )
    ).scalar_one_or_none()
    if account is None:
        raise NotFound(f"No account with id {account_id}.")
    return account

"""Payments (回款): record, confirm, reject, reverse; account credit."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.deps import PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.payment import (
    CreditApplied,
    CreditApply,
    CreditBalance,
    CreditReport,
    PaymentCreate,
    PaymentRead,
    PaymentReason,
    PaymentReverse,
    PaymentStatus,
)
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.receivables import balance as balance_service
from app.services.receivables import credit as credit_service
from app.services.receivables import payments as service

router = APIRouter(prefix="/v1/payments", tags=["collections"], responses=COMMON_ERRORS)
credit_router = APIRouter(prefix="/v1/accounts", tags=["collections"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("payments:read"))]
Writer = Annotated[Principal, Depends(require("payments:write"))]


@router.post(
    "",
    response_model=PaymentRead,
    status_code=status.HTTP_201_CREATED,
    summary="Record a payment",
    responses=problem_responses(404),
)
async def record_payment(
    body: PaymentCreate, principal: Writer, session: SessionDep, response: Response
) -> PaymentRead:
    """Pending until a finance user confirms it (unless the organisation turned that off)."""
    payment = await service.record_payment(session, principal, body)
    set_etag(response, payment)
    return await service.read(session, payment)


@router.get("", response_model=Page[PaymentRead], summary="List payments")
async def list_payments(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    account_id: uuid.UUID | None = None,
    status: PaymentStatus | None = None,
) -> Page[PaymentRead]:
    """Payments of the accounts whose receivables you may see."""
    rows, next_cursor = await service.list_payments(
        session, principal, page, account_id=account_id, status=status
    )
    return Page(data=await service.read_many(session, rows), next_cursor=next_cursor)


@router.get(
    "/{payment_id}", response_model=PaymentRead, summary="Get a payment", responses=problem_responses(404)
)
async def get_payment(payment_id: uuid.UUID, principal: Reader, session: SessionDep) -> PaymentRead:
    """One payment with its allocations and what is left as credit."""
    return await service.read(session, await service.get_payment(session, principal, payment_id))


@router.post(
    "/{payment_id}/confirm",
    response_model=PaymentRead,
    summary="Confirm a payment",
    responses=problem_responses(404, 409),
)
async def confirm_payment(payment_id: uuid.UUID, principal: Writer, session: SessionDep) -> PaymentRead:
    """Finance users only: the payment is allocated and counts from now on."""
    return await service.read(session, await service.confirm_payment(session, principal, payment_id))


@router.post(
    "/{payment_id}/reject",
    response_model=PaymentRead,
    summary="Reject a payment",
    responses=problem_responses(404, 409),
)
async def reject_payment(
    payment_id: uuid.UUID, body: PaymentReason, principal: Writer, session: SessionDep
) -> PaymentRead:
    """Finance users only: a pending payment that never counts."""
    payment = await service.reject_payment(session, principal, payment_id, reason=body.reason)
    return await service.read(session, payment)


@router.post(
    "/{payment_id}/reverse",
    response_model=PaymentRead,
    summary="Reverse a payment",
    responses=problem_responses(404, 409),
)
async def reverse_payment(
    payment_id: uuid.UUID, body: PaymentReverse, principal: Writer, session: SessionDep
) -> PaymentRead:
    """Finance users only: a confirmed payment stops counting from `reversed_on`."""
    return await service.read(session, await service.reverse_payment(session, principal, payment_id, body))


@credit_router.get(
    "/{account_id}/credit/balance",
    response_model=list[CreditBalance],
    summary="An account's credit balance",
    responses=problem_responses(404),
)
async def get_credit_balance(
    account_id: uuid.UUID, principal: Reader, session: SessionDep
) -> list[CreditBalance]:
    """Unallocated money of the account's confirmed payments, per currency."""
    return await balance_service.get_credit(session, principal, account_id)


@credit_router.post(
    "/{account_id}/credit/apply",
    response_model=CreditApplied,
    summary="Apply an account's credit",
    responses=problem_responses(404, 409),
)
async def apply_credit(
    account_id: uuid.UUID, body: CreditApply, principal: Writer, session: SessionDep
) -> CreditApplied:
    """To the named installments, else to the open ones oldest due first."""
    return await balance_service.apply_credit(session, principal, account_id, body)


@credit_router.get(
    "/{account_id}/credit",
    response_model=CreditReport,
    summary="An account's credit and rating",
    responses=problem_responses(404),
)
async def get_credit(account_id: uuid.UUID, principal: Reader, session: SessionDep) -> CreditReport:
    """Limit, exposure, and the A/B/C/D rating with every factor, its weight and why."""
    return CreditReport.model_validate(await credit_service.credit_report(session, principal, account_id))

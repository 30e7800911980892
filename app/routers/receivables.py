"""Orders from accepted quotes and their payment plans (payments and dunning come later)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from app.deps import PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.receivable import OrderRead
from app.pagination import Page
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services.receivables import orders as service

router = APIRouter(prefix="/v1/orders", tags=["orders"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("orders:read"))]


@router.get("", response_model=Page[OrderRead], summary="List orders")
async def list_orders(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    deal_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
) -> Page[OrderRead]:
    """Orders of the deals you may see, with their installments."""
    rows, next_cursor = await service.list_orders(
        session, principal, page, deal_id=deal_id, account_id=account_id
    )
    return Page(data=[service.read_model(o, i) for o, i in rows], next_cursor=next_cursor)


@router.get("/{order_id}", response_model=OrderRead, summary="Get an order", responses=problem_responses(404))
async def get_order(order_id: uuid.UUID, principal: Reader, session: SessionDep) -> OrderRead:
    """One order and its payment plan."""
    order, installments = await service.get_order(session, principal, order_id)
    return service.read_model(order, installments)

"""Dated exchange rates: what metrics' convert_to uses."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.common import BusinessDate, CurrencyCode
from app.models.metrics import ExchangeRateCreate, ExchangeRateRead
from app.pagination import Page
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services import exchange_rates as service

router = APIRouter(prefix="/v1/exchange-rates", tags=["exchange-rates"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("metrics:read"))]
Writer = Annotated[Principal, Depends(require("settings:write"))]


@router.get("", response_model=Page[ExchangeRateRead], status_code=200, summary="List exchange rates")
async def list_exchange_rates(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    from_currency: Annotated[CurrencyCode | None, Query(alias="from")] = None,
    to_currency: Annotated[CurrencyCode | None, Query(alias="to")] = None,
    on_or_before: BusinessDate | None = None,
) -> Page[ExchangeRateRead]:
    """The organisation's dated rates, newest first."""
    rows, next_cursor = await service.list_rates(
        session, page, from_currency=from_currency, to_currency=to_currency, on_or_before=on_or_before
    )
    return Page(data=[ExchangeRateRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    response_model=ExchangeRateRead,
    status_code=status.HTTP_201_CREATED,
    summary="Set an exchange rate",
)
async def put_exchange_rate(
    body: ExchangeRateCreate, principal: Writer, session: SessionDep
) -> ExchangeRateRead:
    """Admins; 1 `from` = `rate` `to` from `date` on; the same pair and date again replaces the rate."""
    return ExchangeRateRead.model_validate(await service.put_rate(session, principal, body))


@router.delete(
    "/{rate_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove an exchange rate",
    responses=problem_responses(404),
)
async def delete_exchange_rate(rate_id: uuid.UUID, principal: Writer, session: SessionDep) -> Response:
    """Admins."""
    await service.delete_rate(session, principal, rate_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

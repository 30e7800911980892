"""Orders and their installments: direct orders, cancel, reschedule/split, promise to pay."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status

from app.deps import PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.common import BusinessDate, CurrencyCode
from app.models.dunning import RiskList
from app.models.receivable import (
    AgingGroup,
    AgingReport,
    CollectionsReport,
    InstallmentRead,
    InstallmentReschedule,
    InstallmentStatus,
    OrderCancel,
    OrderCreate,
    OrderRead,
    OrderStatus,
    PromiseCreate,
)
from app.pagination import Page
from app.routers import COMMON_ERRORS, CSV_RESPONSE, csv_response, set_etag, wants_csv
from app.security import Principal
from app.services.receivables import aging as aging_service
from app.services.receivables import installments as installments_service
from app.services.receivables import metrics as metrics_service
from app.services.receivables import orders as service
from app.services.receivables import risks as risks_service

router = APIRouter(prefix="/v1/orders", tags=["orders"], responses=COMMON_ERRORS)
installments_router = APIRouter(prefix="/v1/installments", tags=["collections"], responses=COMMON_ERRORS)

receivables_router = APIRouter(prefix="/v1/receivables", tags=["collections"], responses=COMMON_ERRORS)

metrics_router = APIRouter(prefix="/v1/metrics", tags=["metrics"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("orders:read"))]
Writer = Annotated[Principal, Depends(require("orders:write"))]


@router.get("", response_model=Page[OrderRead], summary="List orders")
async def list_orders(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    deal_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    status: OrderStatus | None = None,
) -> Page[OrderRead]:
    """Orders you may see (yours, your team's, your accounts'), with their installments."""
    rows, next_cursor = await service.list_orders(
        session, principal, page, deal_id=deal_id, account_id=account_id, status=status
    )
    return Page(data=[service.read_model(o, i) for o, i in rows], next_cursor=next_cursor)


@router.post(
    "",
    response_model=OrderRead,
    status_code=status.HTTP_201_CREATED,
    summary="Create an order for an account",
    responses=problem_responses(404),
)
async def create_order(
    body: OrderCreate, principal: Writer, session: SessionDep, response: Response
) -> OrderRead:
    """An order entered directly (a running contract may carry a past `ordered_at`)."""
    order = await service.create_order(session, principal, body)
    set_etag(response, order)
    return service.read_model(order, await service.installments_of(session, order.id))


@router.get("/{order_id}", response_model=OrderRead, summary="Get an order", responses=problem_responses(404))
async def get_order(order_id: uuid.UUID, principal: Reader, session: SessionDep) -> OrderRead:
    """One order and its payment plan."""
    order, installments = await service.get_order(session, principal, order_id)
    return service.read_model(order, installments)


@router.post(
    "/{order_id}/cancel",
    response_model=OrderRead,
    summary="Cancel an order",
    responses=problem_responses(404, 409),
)
async def cancel_order(
    order_id: uuid.UUID, body: OrderCancel, principal: Writer, session: SessionDep
) -> OrderRead:
    """Writes off what is open of each installment as of `effective_on` (default today)."""
    order = await service.cancel_order(session, principal, order_id, body)
    return service.read_model(order, await service.installments_of(session, order.id))


@installments_router.get("", response_model=Page[InstallmentRead], summary="List installments")
async def list_installments(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    status: InstallmentStatus | None = None,
    account_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
) -> Page[InstallmentRead]:
    """Installments of the orders you may see, by due date."""
    rows, next_cursor = await installments_service.list_installments(
        session, principal, page, status=status, account_id=account_id, order_id=order_id
    )
    return Page(data=[installments_service.installment_read(i) for i in rows], next_cursor=next_cursor)


@installments_router.get(
    "/{installment_id}",
    response_model=InstallmentRead,
    summary="Get an installment",
    responses=problem_responses(404),
)
async def get_installment(
    installment_id: uuid.UUID, principal: Reader, session: SessionDep
) -> InstallmentRead:
    """One installment with its paid, written-off and open amounts."""
    return installments_service.installment_read(
        await installments_service.get_installment(session, principal, installment_id)
    )


@installments_router.post(
    "/{installment_id}/reschedule",
    response_model=list[InstallmentRead],
    summary="Reschedule or split an installment",
    responses=problem_responses(404, 409),
)
async def reschedule_installment(
    installment_id: uuid.UUID, body: InstallmentReschedule, principal: Writer, session: SessionDep
) -> list[InstallmentRead]:
    """A new due date, or parts that sum to the amount; the plan's total never changes."""
    rows = await installments_service.reschedule_installment(session, principal, installment_id, body)
    return [installments_service.installment_read(i) for i in rows]


@installments_router.post(
    "/{installment_id}/promise",
    response_model=InstallmentRead,
    summary="Record a promise to pay",
    responses=problem_responses(404, 409),
)
async def promise_to_pay(
    installment_id: uuid.UUID, body: PromiseCreate, principal: Writer, session: SessionDep
) -> InstallmentRead:
    """Dunning pauses until the promised date; a missed promise raises a risk."""
    return installments_service.installment_read(
        await installments_service.promise_to_pay(session, principal, installment_id, body)
    )


@receivables_router.get(
    "/aging",
    response_model=AgingReport,
    summary="Receivables aging as of a date",
    responses=CSV_RESPONSE,
)
async def get_aging(
    principal: Reader,
    session: SessionDep,
    as_of: Annotated[BusinessDate | None, Query(description="Local date; default today")] = None,
    group_by: AgingGroup = "account",
    currency: CurrencyCode | None = None,
    format: Literal["json", "csv"] | None = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> AgingReport | Response:
    """Open amounts per bucket (current, 1-30, 31-60, 61-90, 90+ by default), per group and currency."""
    report = await aging_service.aging(session, principal, as_of=as_of, group_by=group_by, currency=currency)
    if wants_csv(format, accept):
        return csv_response(aging_service.aging_csv_rows(report), f"aging-{report['as_of']}.csv")
    return AgingReport.model_validate(report)


@receivables_router.get("/risks", response_model=RiskList, summary="Receivables at risk")
async def list_risks(principal: Reader, session: SessionDep) -> RiskList:
    """Installments and accounts at risk (回款预警), each with its reasons."""
    return RiskList.model_validate(await risks_service.list_risks(session, principal))


MetricsReader = Annotated[Principal, Depends(require("metrics:read"))]


@metrics_router.get(
    "/collections",
    response_model=CollectionsReport,
    summary="Collections metrics (回款率, DSO)",
    responses=CSV_RESPONSE,
)
async def get_collections_metrics(
    principal: MetricsReader,
    session: SessionDep,
    from_: Annotated[BusinessDate, Query(alias="from", description="First local date (inclusive)")],
    to: Annotated[BusinessDate, Query(description="Local date after the last one (exclusive)")],
    group_by: Literal["none", "owner", "team", "account", "month"] = "none",
    owner_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    format: Literal["json", "csv"] | None = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> CollectionsReport | Response:
    """Due, collected, collection rate, overdue and DSO per currency (DESIGN §7, version 1)."""
    report = await metrics_service.collections(
        session,
        principal,
        start=from_,
        end=to,
        group_by=group_by,
        owner_id=owner_id,
        team_id=team_id,
        account_id=account_id,
    )
    if wants_csv(format, accept):
        return csv_response(metrics_service.csv_rows(report), f"collections-{from_}-{to}.csv")
    return CollectionsReport.model_validate(report)

"""Quotes: create and edit drafts, the status machine, revisions, PDF."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.quote import (
    QuoteAccept,
    QuoteCreate,
    QuoteRead,
    QuoteReason,
    QuoteRevise,
    QuoteRevisionRead,
    QuoteStatus,
    QuoteUpdate,
)
from app.models.receivable import OrderRead
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.quotes import pdf as quote_pdf
from app.services.quotes import service
from app.services.quotes import workflow as quote_workflow
from app.services.quotes.service import read_model
from app.services.receivables import orders as receivables

router = APIRouter(prefix="/v1/quotes", tags=["quotes"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("quotes:read"))]
Writer = Annotated[Principal, Depends(require("quotes:write"))]
TRANSITION_ERRORS = problem_responses(404, 409, 412)


def _read(response: Response, quote: object) -> QuoteRead:
    set_etag(response, quote)
    return read_model(quote)  # type: ignore[arg-type]


@router.get("", response_model=Page[QuoteRead], summary="List quotes")
async def list_quotes(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    deal_id: uuid.UUID | None = None,
    status: QuoteStatus | None = None,
    number: str | None = None,
) -> Page[QuoteRead]:
    """Quotes of the deals you may see (every revision; filter by `number` for one quote's)."""
    rows, next_cursor = await service.list_quotes(
        session, principal, page, deal_id=deal_id, status=status, number=number
    )
    return Page(data=[read_model(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    response_model=QuoteRead,
    status_code=status.HTTP_201_CREATED,
    summary="Create a quote",
    responses=problem_responses(404, 409),
)
async def create_quote(
    body: QuoteCreate, principal: Writer, session: SessionDep, response: Response
) -> QuoteRead:
    """A draft quote on an open deal; the server computes every line and total."""
    return _read(response, await service.create_quote(session, principal, body))


@router.get("/{quote_id}", response_model=QuoteRead, summary="Get a quote", responses=problem_responses(404))
async def get_quote(
    quote_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> QuoteRead:
    """One quote revision."""
    return _read(response, await service.get_quote(session, principal, quote_id))


@router.patch(
    "/{quote_id}", response_model=QuoteRead, summary="Change a draft quote", responses=TRANSITION_ERRORS
)
async def update_quote(
    quote_id: uuid.UUID,
    body: QuoteUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> QuoteRead:
    """Drafts only (409 otherwise: revise instead); `lines` replace every line."""
    quote = await service.update_quote(session, principal, quote_id, body, expected_version=version)
    return _read(response, quote)


@router.post(
    "/{quote_id}/submit", response_model=QuoteRead, summary="Submit a quote", responses=TRANSITION_ERRORS
)
async def submit_quote(
    quote_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep, response: Response
) -> QuoteRead:
    """draft -> pending_approval when the approval policy says so, else -> approved."""
    return _read(
        response, await quote_workflow.submit_quote(session, principal, quote_id, expected_version=version)
    )


@router.post(
    "/{quote_id}/approve", response_model=QuoteRead, summary="Approve a quote", responses=TRANSITION_ERRORS
)
async def approve_quote(
    quote_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep, response: Response
) -> QuoteRead:
    """pending_approval -> approved, by a manager or admin who did not create it."""
    return _read(
        response, await quote_workflow.approve_quote(session, principal, quote_id, expected_version=version)
    )


@router.post(
    "/{quote_id}/reject", response_model=QuoteRead, summary="Reject a quote", responses=TRANSITION_ERRORS
)
async def reject_quote(
    quote_id: uuid.UUID,
    body: QuoteReason,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> QuoteRead:
    """pending_approval -> draft, with a reason, by a manager or admin."""
    quote = await quote_workflow.reject_quote(
        session, principal, quote_id, reason=body.reason, expected_version=version
    )
    return _read(response, quote)


@router.post(
    "/{quote_id}/send", response_model=QuoteRead, summary="Mark a quote sent", responses=TRANSITION_ERRORS
)
async def send_quote(
    quote_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep, response: Response
) -> QuoteRead:
    """approved -> sent."""
    return _read(
        response, await quote_workflow.send_quote(session, principal, quote_id, expected_version=version)
    )


@router.post(
    "/{quote_id}/accept", response_model=OrderRead, summary="Accept a quote", responses=TRANSITION_ERRORS
)
async def accept_quote(
    quote_id: uuid.UUID,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    body: QuoteAccept | None = None,
) -> OrderRead:
    """sent -> accepted: the new order with its payment plan; the deal is won if its pipeline says so.
    Over the account's credit limit: 409, unless a manager sends `credit_override_reason`."""
    _, order = await quote_workflow.accept_quote(
        session,
        principal,
        quote_id,
        expected_version=version,
        credit_override_reason=body.credit_override_reason if body else None,
    )
    return receivables.read_model(order, await receivables.installments_of(session, order.id))


@router.post(
    "/{quote_id}/decline", response_model=QuoteRead, summary="Decline a quote", responses=TRANSITION_ERRORS
)
async def decline_quote(
    quote_id: uuid.UUID,
    body: QuoteReason,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> QuoteRead:
    """sent -> declined."""
    quote = await quote_workflow.decline_quote(
        session, principal, quote_id, reason=body.reason, expected_version=version
    )
    return _read(response, quote)


@router.post(
    "/{quote_id}/primary",
    response_model=QuoteRead,
    summary="Make a quote primary",
    responses=problem_responses(404, 409),
)
async def mark_primary(
    quote_id: uuid.UUID, principal: Writer, session: SessionDep, response: Response
) -> QuoteRead:
    """The deal's primary quote; the deal's amount and currency follow its total."""
    return _read(response, await service.mark_primary(session, principal, quote_id))


@router.post(
    "/{quote_id}/revise",
    response_model=QuoteRead,
    status_code=status.HTTP_201_CREATED,
    summary="Revise a quote",
    responses=TRANSITION_ERRORS,
)
async def revise_quote(
    quote_id: uuid.UUID,
    body: QuoteRevise,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> QuoteRead:
    """A new draft revision with these changes; the old revision stays as it was, superseded."""
    quote = await service.revise_quote(session, principal, quote_id, body, expected_version=version)
    return _read(response, quote)


@router.get(
    "/{quote_id}/revisions",
    response_model=list[QuoteRevisionRead],
    summary="Revisions of a quote",
    responses=problem_responses(404),
)
async def quote_revisions(
    quote_id: uuid.UUID, principal: Reader, session: SessionDep
) -> list[QuoteRevisionRead]:
    """Every revision of the quote's number, oldest first, each with its line diff to the previous one."""
    return await service.revisions(session, principal, quote_id)


@router.get(
    "/{quote_id}/pdf",
    response_class=Response,
    summary="Quote PDF",
    responses={
        200: {
            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The quote document",
        },
        **problem_responses(404),
    },
)
async def quote_document(quote_id: uuid.UUID, principal: Reader, session: SessionDep) -> Response:
    """The quote as a PDF document."""
    filename, body = await quote_pdf.quote_pdf(session, principal, quote_id)
    return Response(
        content=body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )

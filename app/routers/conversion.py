"""Lead conversion: lead -> account + contact + deal."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from app.deps import IfMatchDep, SessionDep, require
from app.errors import problem_responses
from app.models.account import AccountRead, ContactRead
from app.models.deal import DealRead
from app.models.lead import LeadRead
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.leads import conversion as service
from app.services.leads.conversion import LeadConvert

router = APIRouter(prefix="/v1/leads", tags=["leads"], responses=COMMON_ERRORS)

Writer = Annotated[Principal, Depends(require("leads:write"))]


class ConvertedRead(BaseModel):
    """The converted lead and what it became."""

    lead: LeadRead
    account: AccountRead
    contact: ContactRead
    deal: DealRead | None


@router.post(
    "/{lead_id}/convert",
    response_model=ConvertedRead,
    summary="Convert a lead into an account, contact and deal",
    responses=problem_responses(404, 409, 412),
)
async def convert_lead(
    lead_id: uuid.UUID,
    body: LeadConvert,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> ConvertedRead:
    """Creates (or reuses `account_id`) the account, a contact and a deal in the default (or named)
    pipeline's first stage; the lead becomes `converted` and links to all three."""
    done = await service.convert_lead(session, principal, lead_id, body, expected_version=version)
    set_etag(response, done.lead)
    return ConvertedRead(
        lead=LeadRead.model_validate(done.lead),
        account=AccountRead.model_validate(done.account),
        contact=ContactRead.model_validate(done.contact),
        deal=DealRead.model_validate(done.deal) if done.deal else None,
    )

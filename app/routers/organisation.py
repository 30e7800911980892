"""The caller's organisation and its settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.deps import IfMatchDep, SessionDep, require
from app.errors import Forbidden, problem_responses
from app.models.organisation import Organisation, OrganisationRead, OrganisationUpdate
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import organisation as service

router = APIRouter(prefix="/v1/organisation", tags=["organisation"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("organisation:read"))]
Writer = Annotated[Principal, Depends(require("organisation:write"))]


def _read(org: Organisation) -> OrganisationRead:
    return OrganisationRead.model_validate({**org.model_dump(), "settings": org.typed_settings()})


@router.get("", response_model=OrganisationRead, summary="Get the organisation")
async def get_organisation(principal: Reader, session: SessionDep, response: Response) -> OrganisationRead:
    """Name and settings (admins)."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can read the organisation's settings.")
    org = await service.get_organisation(session, principal.org_id)
    set_etag(response, org)
    return _read(org)


@router.patch(
    "",
    response_model=OrganisationRead,
    summary="Change the organisation",
    responses=problem_responses(412),
)
async def update_organisation(
    body: OrganisationUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> OrganisationRead:
    """Change the name or any settings (admins); unsent settings keep their values."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can change the organisation.")
    org = await service.update_organisation(session, principal, body, expected_version=version)
    set_etag(response, org)
    return _read(org)

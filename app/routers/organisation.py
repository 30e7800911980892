"""The caller's organisation and its settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.deps import IfMatchDep, SessionDep, require
from app.errors import Forbidden, NotFound, problem_responses
from app.models.common import Role
from app.models.organisation import Organisation, OrganisationLogoRead, OrganisationRead, OrganisationUpdate
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import organisation as service

router = APIRouter(prefix="/v1/organisation", tags=["organisation"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("organisation:read"))]
AdminReader = Annotated[Principal, Depends(require("organisation:read", Role.admin))]
Writer = Annotated[Principal, Depends(require("organisation:write", Role.admin))]


def _read(org: Organisation) -> OrganisationRead:
    return OrganisationRead.model_validate({**org.model_dump(), "settings": org.typed_settings()})


@router.get("", response_model=OrganisationRead, summary="Get the organisation")
async def get_organisation(
    principal: AdminReader, session: SessionDep, response: Response
) -> OrganisationRead:
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


LOGO_BODY = {
    "requestBody": {
        "required": True,
        "description": f"The raw image, at most {service.LOGO_MAX_BYTES} bytes.",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}} for media in service.LOGO_TYPES
        },
    }
}


@router.put(
    "/logo",
    response_model=OrganisationLogoRead,
    status_code=200,
    summary="Upload the organisation's logo",
    openapi_extra=LOGO_BODY,
)
async def put_logo(request: Request, principal: Writer, session: SessionDep) -> OrganisationLogoRead:
    """Store or replace the logo printed on quotes: a PNG or JPEG sent as the body (admins)."""
    logo = await service.set_logo(
        session, principal, data=await request.body(), content_type=request.headers.get("content-type")
    )
    return OrganisationLogoRead.model_validate(logo, from_attributes=True)


@router.get(
    "/logo",
    response_class=Response,
    status_code=200,
    summary="Get the organisation's logo",
    responses={
        200: {
            "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in service.LOGO_TYPES},
            "description": "The image",
        },
        **problem_responses(404),
    },
)
async def get_logo(principal: Reader, session: SessionDep) -> Response:
    """The logo image as uploaded (any member; it is printed on every quote)."""
    logo = await service.get_logo(session, principal.org_id)
    if logo is None:
        raise NotFound("The organisation has no logo.")
    return Response(
        content=logo.data,
        media_type=logo.content_type,
        headers={"ETag": f'"{logo.sha256}"', "Cache-Control": "private, max-age=60"},
    )


@router.delete(
    "/logo",
    status_code=204,
    response_class=Response,
    summary="Remove the organisation's logo",
    responses=problem_responses(404),
)
async def delete_logo(principal: Writer, session: SessionDep) -> Response:
    """Quotes print without a logo again (admins)."""
    await service.delete_logo(session, principal)
    return Response(status_code=204)

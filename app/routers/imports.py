"""History import (NDJSON): deals with their stage history, and leads, kept as they happened."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from app.deps import SessionDep, require
from app.models.common import Role
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services.imports import deals as deal_import
from app.services.imports import leads as lead_import
from app.services.imports.ndjson import ImportReport

router = APIRouter(prefix="/v1/import", tags=["import"], responses=COMMON_ERRORS)

Importer = Annotated[Principal, Depends(require("import:write", Role.admin))]
NDJSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "string", "minLength": 1, "description": "One JSON object a line"}
            }
        },
    }
}
DryRun = Annotated[bool, Query(description="Validate and report; write nothing")]


@router.post(
    "/deals",
    response_model=ImportReport,
    status_code=status.HTTP_200_OK,
    summary="Import deal history (NDJSON)",
    openapi_extra=NDJSON_BODY,
)
async def import_deals(
    request: Request, principal: Importer, session: SessionDep, dry_run: DryRun = False
) -> ImportReport:
    """Admins; one deal a line with its stage history; bad lines reported by number, good ones land."""
    return await deal_import.import_deals(session, principal, request.stream(), dry_run=dry_run)


@router.post(
    "/leads",
    response_model=ImportReport,
    status_code=status.HTTP_200_OK,
    summary="Import lead history (NDJSON)",
    openapi_extra=NDJSON_BODY,
)
async def import_leads(
    request: Request, principal: Importer, session: SessionDep, dry_run: DryRun = False
) -> ImportReport:
    """Admins; one lead a line; converted leads name the imported deal they became."""
    return await lead_import.import_leads(session, principal, request.stream(), dry_run=dry_run)

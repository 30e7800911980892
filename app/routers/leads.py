"""Leads: CRUD, assignment and the pool, qualification, merge, the activity timeline."""

from __future__ import annotations

import json
import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from app.deps import IfMatchDep, PageDep, SessionDep, StateDep, require
from app.errors import BadRequest, FieldError, ValidationFailed, problem_responses
from app.models import examples as ex
from app.models.common import IsoDateTime
from app.models.lead import (
    ActivityCreate,
    ActivityRead,
    LeadAssign,
    LeadCreate,
    LeadMerge,
    LeadRead,
    LeadReason,
    LeadSource,
    LeadStatus,
    LeadUpdate,
)
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.leads import erasure, service
from app.services.leads import import_csv as lead_import
from app.services.leads import merge as lead_merge

router = APIRouter(prefix="/v1/leads", tags=["leads"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("leads:read"))]
Writer = Annotated[Principal, Depends(require("leads:write"))]


def _read(response: Response, lead: object) -> LeadRead:
    set_etag(response, lead)
    return LeadRead.model_validate(lead)


@router.post(
    "",
    response_model=LeadRead,
    status_code=status.HTTP_201_CREATED,
    summary="Create a lead",
    responses={
        200: {"model": LeadRead, "description": "Merged into an existing open lead"},
        **problem_responses(409),
    },
)
async def create_lead(
    body: LeadCreate, principal: Writer, session: SessionDep, response: Response
) -> LeadRead:
    """201 with a new lead, or 200 with the open lead of the same email/phone it was merged into;
    409 `duplicate_exists` (nothing merged, nothing shown) when that lead is not the caller's to see."""
    result = await service.create_lead(session, principal, body)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/leads/{result.lead.id}"
    return _read(response, result.lead)


IMPORT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A UTF-8 CSV file with a header row",
                        },
                        "mapping": {
                            "type": "string",
                            "description": 'JSON {"CSV column": "lead field"}; unmapped columns use common '
                            "aliases",
                            "examples": [json.dumps(ex.LEAD_IMPORT_MAPPING, ensure_ascii=False)],
                        },
                        "dry_run": {
                            "type": "boolean",
                            "default": False,
                            "description": "Report what would happen; write nothing",
                            "examples": [True],
                        },
                        "default_country": {
                            "type": "string",
                            "pattern": "^[A-Z]{2}$",
                            "description": "For national phones",
                            "examples": ["CN"],
                        },
                    },
                }
            }
        },
    }
}


def _form_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {message}", errors=[FieldError(field=field, code="invalid", message=message)]
    )


@router.post(
    "/import",
    response_model=lead_import.LeadImportReport,
    summary="Import leads from CSV",
    openapi_extra=IMPORT_FORM,
    responses=problem_responses(400, 413, 422),
)
async def import_leads(
    principal: Writer, session: SessionDep, state: StateDep, request: Request
) -> lead_import.LeadImportReport:
    """Admins and managers; per-row errors are reported, valid rows deduped like any other lead.
    The caller is authenticated before the upload is read; the import commits every 200 rows and
    refuses files over LOUDOU_IMPORT_MAX_ROWS rows (413)."""
    lead_import.authorise(principal)
    await session.commit()  # no transaction stays open while the upload arrives
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=state.settings.import_max_bytes)
    except MultiPartException as exc:
        raise BadRequest(f"The multipart body cannot be read: {exc.message}.") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _form_error("file", "a CSV file part is required")
        mapping, dry_run, country = (
            form.get("mapping"),
            form.get("dry_run", "false"),
            form.get("default_country"),
        )
        if not isinstance(dry_run, str) or dry_run.lower() not in _BOOLEANS:
            raise _form_error("dry_run", "true or false")
        if country is not None and (not isinstance(country, str) or not re.fullmatch(r"[A-Z]{2}", country)):
            raise _form_error("default_country", "an ISO 3166 alpha-2 code such as DE")
        if mapping is not None and not isinstance(mapping, str):
            raise _form_error("mapping", "a JSON object as text")
        return await lead_import.import_csv(
            session,
            principal,
            upload.file,
            mapping=lead_import.parse_mapping(mapping or None),
            dry_run=_BOOLEANS[dry_run.lower()],
            default_country=country or None,
            max_rows=state.settings.import_max_rows,
            commit=session.commit,
        )
    finally:
        await form.close()


# A multipart field's boolean, as the document states it (`type: boolean`): its JSON text only.
_BOOLEANS = {"true": True, "false": False}


@router.get("", response_model=Page[LeadRead], summary="List leads")
async def list_leads(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    lead_status: Annotated[list[LeadStatus] | None, Query(alias="status")] = None,
    owner_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    source: LeadSource | None = None,
    source_id: uuid.UUID | None = None,
    pooled: bool | None = None,
    created_from: IsoDateTime | None = None,
    created_to: IsoDateTime | None = None,
    updated_from: IsoDateTime | None = None,
    updated_to: IsoDateTime | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Search name, email, company, phone")] = None,
) -> Page[LeadRead]:
    """The leads you may see; ranges are half-open [from, to); `status` may repeat."""
    rows, next_cursor = await service.list_leads(
        session,
        principal,
        page,
        status=lead_status,
        owner_id=owner_id,
        team_id=team_id,
        source=source,
        source_id=source_id,
        pooled=pooled,
        created_from=created_from,
        created_to=created_to,
        updated_from=updated_from,
        updated_to=updated_to,
        q=q,
    )
    return Page(data=[LeadRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{lead_id}", response_model=LeadRead, summary="Get a lead", responses=problem_responses(404))
async def get_lead(
    lead_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> LeadRead:
    """One lead you may see."""
    return _read(response, await service.get_lead(session, principal, lead_id))


@router.patch(
    "/{lead_id}", response_model=LeadRead, summary="Change a lead", responses=problem_responses(404, 409, 412)
)
async def update_lead(
    lead_id: uuid.UUID,
    body: LeadUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> LeadRead:
    """Change fields or the status (along the allowed transitions); send `If-Match`."""
    lead = await service.update_lead(session, principal, lead_id, body, expected_version=version)
    return _read(response, lead)


@router.delete(
    "/{lead_id}", response_model=LeadRead, summary="Delete a lead", responses=problem_responses(404, 409, 412)
)
async def delete_lead(
    lead_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep, response: Response
) -> LeadRead:
    """Soft delete: the lead leaves lists; exports carry it as a tombstone."""
    return _read(response, await service.delete_lead(session, principal, lead_id, expected_version=version))


@router.post(
    "/{lead_id}/assign",
    response_model=LeadRead,
    summary="Assign a lead",
    responses=problem_responses(404, 409, 412),
)
async def assign_lead(
    lead_id: uuid.UUID,
    body: LeadAssign,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> LeadRead:
    """Admins assign to anyone, managers within their team."""
    lead = await service.assign_lead(
        session, principal, lead_id, owner_id=body.owner_id, team_id=body.team_id, expected_version=version
    )
    return _read(response, lead)


@router.post(
    "/{lead_id}/unassign",
    response_model=LeadRead,
    summary="Return a lead to the pool",
    responses=problem_responses(404, 409, 412),
)
async def unassign_lead(
    lead_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep, response: Response
) -> LeadRead:
    """The lead goes back to the unassigned pool (线索池)."""
    return _read(response, await service.unassign_lead(session, principal, lead_id, expected_version=version))


@router.post(
    "/{lead_id}/claim",
    response_model=LeadRead,
    summary="Claim a pooled lead",
    responses=problem_responses(404, 409),
)
async def claim_lead(
    lead_id: uuid.UUID, principal: Writer, session: SessionDep, response: Response
) -> LeadRead:
    """Take a lead from the pool, within the organisation's `lead_claim_limit`."""
    return _read(response, await service.claim_lead(session, principal, lead_id))


@router.post(
    "/{lead_id}/qualify",
    response_model=LeadRead,
    summary="Qualify a lead",
    responses=problem_responses(404, 409, 412),
)
async def qualify_lead(
    lead_id: uuid.UUID,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
    body: LeadReason | None = None,
) -> LeadRead:
    """Mark the lead qualified (an optional note)."""
    lead = await service.set_status(
        session,
        principal,
        lead_id,
        LeadStatus.qualified,
        reason=body.reason if body else None,
        expected_version=version,
    )
    return _read(response, lead)


@router.post(
    "/{lead_id}/disqualify",
    response_model=LeadRead,
    summary="Disqualify a lead",
    responses=problem_responses(404, 409, 412),
)
async def disqualify_lead(
    lead_id: uuid.UUID,
    body: LeadReason,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> LeadRead:
    """Mark the lead unqualified; `reason` is required."""
    lead = await service.set_status(
        session, principal, lead_id, LeadStatus.unqualified, reason=body.reason, expected_version=version
    )
    return _read(response, lead)


@router.post(
    "/{lead_id}/merge",
    response_model=LeadRead,
    summary="Merge a duplicate",
    responses=problem_responses(404, 409, 412),
)
async def merge_lead(
    lead_id: uuid.UUID,
    body: LeadMerge,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> LeadRead:
    """Fold `duplicate_id` into this lead: empty fields filled, activities moved, audited."""
    lead = await lead_merge.merge_leads(
        session, principal, lead_id, body.duplicate_id, expected_version=version
    )
    return _read(response, lead)


@router.get(
    "/{lead_id}/activities",
    response_model=Page[ActivityRead],
    summary="A lead's timeline",
    responses=problem_responses(404),
)
async def list_activities(
    lead_id: uuid.UUID, principal: Reader, session: SessionDep, page: PageDep
) -> Page[ActivityRead]:
    """Calls, emails, meetings, notes, tasks and inbound touches, newest first."""
    rows, next_cursor = await service.list_activities(session, principal, lead_id, page)
    return Page(data=[ActivityRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/{lead_id}/activities",
    response_model=ActivityRead,
    status_code=status.HTTP_201_CREATED,
    summary="Log an activity",
    responses=problem_responses(404, 409),
)
async def add_activity(
    lead_id: uuid.UUID, body: ActivityCreate, principal: Writer, session: SessionDep
) -> ActivityRead:
    """The first outbound call, email or meeting sets `first_contacted_at`."""
    return ActivityRead.model_validate(await service.add_activity(session, principal, lead_id, body))


@router.post(
    "/{lead_id}/erase",
    response_model=LeadRead,
    summary="Erase a lead's personal data",
    responses=problem_responses(404, 409),
)
async def erase_lead(
    lead_id: uuid.UUID, principal: Writer, session: SessionDep, response: Response
) -> LeadRead:
    """Admins; name, email, phone, message and raw inbox bodies go, anonymous counts stay; audited."""
    return _read(response, await erasure.erase_lead(session, principal, lead_id))

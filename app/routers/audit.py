"""The audit log: who changed what, when, through which key."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from app.deps import PageDep, SessionDep, require
from app.models.audit import AuditEntryRead
from app.models.common import IsoDateTime
from app.pagination import Page
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services import audit as service

router = APIRouter(prefix="/v1/audit-log", tags=["audit"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("audit:read"))]


@router.get("", response_model=Page[AuditEntryRead], summary="Read the audit log")
async def list_audit_entries(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    entity: str | None = None,
    entity_id: uuid.UUID | None = None,
    actor_user_id: uuid.UUID | None = None,
    action: str | None = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
) -> Page[AuditEntryRead]:
    """Changes with their field diffs `{field: [old, new]}`, newest first (admins)."""
    rows, next_cursor = await service.list_entries(
        session,
        principal,
        page,
        entity=entity,
        entity_id=entity_id,
        actor_user_id=actor_user_id,
        action=action,
        since=since,
        until=until,
    )
    return Page(data=[AuditEntryRead.model_validate(r.model_dump()) for r in rows], next_cursor=next_cursor)

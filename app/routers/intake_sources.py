"""Intake sources (admins configure; managers read) and the inbox of inbound events."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, StateDep, require
from app.errors import problem_responses
from app.models.common import IsoDateTime
from app.models.intake import (
    EventStatus,
    InboundEventRead,
    IntakeSourceCreate,
    IntakeSourceRead,
    IntakeSourceUpdate,
    IntakeSourceWithSecret,
    SecretRotation,
    SourceKind,
)
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.intake import inbox
from app.services.intake import sources as service

router = APIRouter(prefix="/v1/intake-sources", tags=["intake-sources"], responses=COMMON_ERRORS)
events_router = APIRouter(prefix="/v1/inbound-events", tags=["inbound-events"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("intake:read"))]
Writer = Annotated[Principal, Depends(require("intake:write"))]


@router.post(
    "",
    response_model=IntakeSourceWithSecret,
    status_code=status.HTTP_201_CREATED,
    summary="Add an intake source",
)
async def create_source(
    body: IntakeSourceCreate, principal: Writer, session: SessionDep, response: Response
) -> IntakeSourceWithSecret:
    """A form, email or webhook source; the answer carries its `key` and, for webhooks, the
    `secret` (shown here and on rotation only)."""
    source = await service.create_source(session, principal, body)
    set_etag(response, source)
    response.headers["Cache-Control"] = "no-store"
    return service.to_read_with_secret(source)


@router.get("", response_model=Page[IntakeSourceRead], summary="List intake sources")
async def list_sources(
    principal: Reader, session: SessionDep, page: PageDep, kind: SourceKind | None = None
) -> Page[IntakeSourceRead]:
    """The organisation's sources (admins and managers)."""
    rows, next_cursor = await service.list_sources(session, principal, page, kind=kind)
    return Page(data=[service.to_read(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{source_id}",
    response_model=IntakeSourceRead,
    summary="Get an intake source",
    responses=problem_responses(404),
)
async def get_source(
    source_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> IntakeSourceRead:
    """One source."""
    source = await service.get_source(session, principal, source_id)
    set_etag(response, source)
    return service.to_read(source)


@router.patch(
    "/{source_id}",
    response_model=IntakeSourceRead,
    summary="Change an intake source",
    responses=problem_responses(404, 412),
)
async def update_source(
    source_id: uuid.UUID,
    body: IntakeSourceUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> IntakeSourceRead:
    """Fix a mapping, origins or credentials; then replay the rejected events."""
    source = await service.update_source(session, principal, source_id, body, expected_version=version)
    set_etag(response, source)
    return service.to_read(source)


@router.delete(
    "/{source_id}",
    response_model=IntakeSourceRead,
    summary="Retire an intake source",
    responses=problem_responses(404, 412),
)
async def delete_source(
    source_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep, response: Response
) -> IntakeSourceRead:
    """Its URL stops answering (404); its events and leads stay."""
    source = await service.delete_source(session, principal, source_id, expected_version=version)
    set_etag(response, source)
    return service.to_read(source)


@router.post(
    "/{source_id}/rotate-secret",
    response_model=IntakeSourceWithSecret,
    summary="Rotate a webhook secret",
    responses=problem_responses(404),
)
async def rotate_secret(
    source_id: uuid.UUID,
    principal: Writer,
    session: SessionDep,
    response: Response,
    body: SecretRotation | None = None,
) -> IntakeSourceWithSecret:
    """A new `secret`; the previous one still verifies for `grace_hours` (default 24)."""
    grace = body.grace_hours if body else 24
    source = await service.rotate_secret(session, principal, source_id, grace_hours=grace)
    set_etag(response, source)
    response.headers["Cache-Control"] = "no-store"
    return service.to_read_with_secret(source)


@events_router.get("", response_model=Page[InboundEventRead], summary="List inbound events")
async def list_events(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    event_status: Annotated[EventStatus | None, Query(alias="status")] = None,
    source_id: uuid.UUID | None = None,
    kind: SourceKind | None = None,
    lead_id: uuid.UUID | None = None,
    received_from: IsoDateTime | None = None,
    received_to: IsoDateTime | None = None,
) -> Page[InboundEventRead]:
    """The intake inbox, newest first (admins and managers); bodies via the single-event read."""
    rows, next_cursor = await inbox.list_events(
        session,
        principal,
        page,
        status=event_status,
        source_id=source_id,
        kind=kind,
        lead_id=lead_id,
        received_from=received_from,
        received_to=received_to,
    )
    return Page(data=[inbox.to_read(r) for r in rows], next_cursor=next_cursor)


@events_router.get(
    "/{event_id}",
    response_model=InboundEventRead,
    summary="Get an inbound event",
    responses=problem_responses(404),
)
async def get_event(
    event_id: uuid.UUID,
    principal: Reader,
    session: SessionDep,
    include_body: Annotated[
        bool, Query(description="Include the raw body as text (admins, or a lead the caller can see)")
    ] = False,
) -> InboundEventRead:
    """One event, with its raw body when asked for: admins always, managers when the event made
    or touched a lead they can see (403 otherwise)."""
    event = await inbox.get_event(session, principal, event_id)
    if include_body:
        await inbox.check_body_access(session, principal, event)
    return inbox.to_read(event, include_body=include_body)


@events_router.post(
    "/{event_id}/replay",
    response_model=InboundEventRead,
    summary="Replay a rejected event",
    responses=problem_responses(404, 409),
)
async def replay_event(
    event_id: uuid.UUID, principal: Writer, session: SessionDep, state: StateDep
) -> InboundEventRead:
    """Run it again with the source's current mapping; the event shows the new outcome."""
    outcome = await inbox.replay(session, principal, event_id, max_part_size=state.settings.max_body_bytes)
    return inbox.to_read(outcome.event)

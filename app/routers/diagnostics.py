"""Diagnostics: prove the outbox -> relay -> worker path end to end from outside."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel

from app.deps import SessionDep, require
from app.errors import Forbidden, problem_responses
from app.models.common import Role
from app.models.events import Ping
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services import outbox

router = APIRouter(prefix="/v1/diagnostics", tags=["diagnostics"], responses=COMMON_ERRORS)

Admin = Annotated[Principal, Depends(require("organisation:write", Role.admin))]


class JobRunRead(BaseModel):
    """How often one job of the event ran."""

    job_name: str
    runs: int
    first_run_at: datetime
    last_run_at: datetime


class OutboxEventRead(BaseModel):
    """An outbox event, whether the relay has handed it to the queue, and its jobs' runs."""

    id: uuid.UUID
    event_type: str
    created_at: datetime
    dispatched_at: datetime | None
    attempts: int
    last_error: str | None
    jobs: list[JobRunRead]


@router.post(
    "/ping",
    response_model=OutboxEventRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue a ping job through the outbox",
)
async def ping(principal: Admin, session: SessionDep) -> OutboxEventRead:
    """Writes a `ping` outbox event; its job records each run (see GET …/outbox/{id})."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can run diagnostics.")
    event = await outbox.emit(session, Ping(requested_by=str(principal.user_id)))
    await session.flush()
    return OutboxEventRead(
        id=event.id,
        event_type=event.event_type,
        created_at=event.created_at,
        dispatched_at=None,
        attempts=0,
        last_error=None,
        jobs=[],
    )


@router.get(
    "/outbox/{event_id}",
    response_model=OutboxEventRead,
    summary="Where an outbox event is",
    responses=problem_responses(404),
)
async def outbox_event(event_id: uuid.UUID, principal: Admin, session: SessionDep) -> OutboxEventRead:
    """Dispatch state of an event and how many times each of its jobs ran."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can run diagnostics.")
    event, runs = await outbox.status(session, event_id)
    return OutboxEventRead(
        id=event.id,
        event_type=event.event_type,
        created_at=event.created_at,
        dispatched_at=event.dispatched_at,
        attempts=event.attempts,
        last_error=event.last_error,
        jobs=[JobRunRead.model_validate(r, from_attributes=True) for r in runs],
    )

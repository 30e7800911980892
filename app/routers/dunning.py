"""Dunning (催款): policies, a run for any date, each installment's log, outbound messages."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, StateDep, require
from app.errors import problem_responses
from app.models.common import BusinessDate
from app.models.dunning import (
    DunningLogRead,
    DunningPolicyCreate,
    DunningPolicyRead,
    DunningPolicyUpdate,
    DunningRunResult,
    MessageState,
    OutboundMessageRead,
)
from app.pagination import Page
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services.receivables import dunning as service
from app.services.receivables import mail

policies_router = APIRouter(prefix="/v1/dunning-policies", tags=["collections"], responses=COMMON_ERRORS)
run_router = APIRouter(prefix="/v1/dunning", tags=["collections"], responses=COMMON_ERRORS)
log_router = APIRouter(prefix="/v1/installments", tags=["collections"], responses=COMMON_ERRORS)
messages_router = APIRouter(prefix="/v1/outbound-messages", tags=["collections"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("dunning:read"))]
Writer = Annotated[Principal, Depends(require("dunning:write"))]


@policies_router.get("", response_model=list[DunningPolicyRead], summary="List dunning policies")
async def list_policies(principal: Reader, session: SessionDep) -> list[DunningPolicyRead]:
    """Every policy of the organisation, the default first."""
    return await service.list_policies(session)


@policies_router.post(
    "",
    response_model=DunningPolicyRead,
    status_code=status.HTTP_201_CREATED,
    summary="Create a dunning policy",
    responses=problem_responses(409),
)
async def create_policy(
    body: DunningPolicyCreate, principal: Writer, session: SessionDep, response: Response
) -> DunningPolicyRead:
    """Admins, managers and finance users; `is_default` makes it the organisation's default."""
    policy = await service.create_policy(session, principal, body)
    response.headers["ETag"] = f'"{policy.version}"'
    return policy


@policies_router.get(
    "/{policy_id}",
    response_model=DunningPolicyRead,
    summary="Get a dunning policy",
    responses=problem_responses(404),
)
async def get_policy(policy_id: uuid.UUID, principal: Reader, session: SessionDep) -> DunningPolicyRead:
    """One policy with its steps."""
    return await service.read_policy(session, policy_id)


@policies_router.patch(
    "/{policy_id}",
    response_model=DunningPolicyRead,
    summary="Change a dunning policy",
    responses=problem_responses(404, 409, 412),
)
async def update_policy(
    policy_id: uuid.UUID,
    body: DunningPolicyUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
) -> DunningPolicyRead:
    """Sent `steps` replace the steps; the old ones keep their log but never fire again."""
    return await service.update_policy(session, principal, policy_id, body, expected_version=version)


@run_router.post("/run", response_model=DunningRunResult, summary="Run dunning for a date")
async def run_dunning(
    principal: Writer,
    session: SessionDep,
    state: StateDep,
    as_of: Annotated[BusinessDate | None, Query(description="Local date; default today")] = None,
) -> DunningRunResult:
    """What the daily cron does, for any date: each step fires once per installment."""
    day, fired, skipped = await service.run_for_principal(
        session, principal, as_of=as_of, smtp=bool(state.settings.smtp_url)
    )
    return DunningRunResult(as_of=day, fired=fired, skipped=skipped)


@log_router.get(
    "/{installment_id}/dunning",
    response_model=list[DunningLogRead],
    summary="An installment's dunning log",
    responses=problem_responses(404),
)
async def installment_dunning(
    installment_id: uuid.UUID, principal: Reader, session: SessionDep
) -> list[DunningLogRead]:
    """Every step fired or skipped for the installment, by day."""
    rows = await service.log_of(session, principal, installment_id)
    return [DunningLogRead.model_validate(r.model_dump(warnings=False)) for r in rows]


@messages_router.get("", response_model=Page[OutboundMessageRead], summary="List outbound messages")
async def list_messages(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    state: MessageState | None = None,
    installment_id: uuid.UUID | None = None,
) -> Page[OutboundMessageRead]:
    """Messages to customers with their delivery state (queued, sent, failed, handed_off)."""
    rows, next_cursor = await mail.list_messages(
        session, principal, page, state=state, installment_id=installment_id
    )
    return Page(
        data=[OutboundMessageRead.model_validate(r.model_dump(warnings=False)) for r in rows],
        next_cursor=next_cursor,
    )

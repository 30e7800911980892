"""Assignment rules, previews, and why a lead went where it went."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.assignment import (
    AssignmentDecisionRead,
    AssignmentRule,
    AssignmentRuleCreate,
    AssignmentRuleRead,
    AssignmentRuleUpdate,
    PreviewRequest,
    PreviewResult,
)
from app.models.common import Role
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.assignment import rules as service

router = APIRouter(tags=["assignment"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("leads:read"))]
Writer = Annotated[Principal, Depends(require("settings:write", Role.admin))]


def _read(rule: AssignmentRule) -> AssignmentRuleRead:
    return AssignmentRuleRead.model_validate(rule.model_dump())


@router.get("/v1/assignment-rules", response_model=Page[AssignmentRuleRead], summary="List assignment rules")
async def list_rules(principal: Reader, session: SessionDep, page: PageDep) -> Page[AssignmentRuleRead]:
    """Rules in evaluation order (admins and managers)."""
    rows, next_cursor = await service.list_rules(session, principal, page)
    return Page(data=[_read(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/v1/assignment-rules",
    response_model=AssignmentRuleRead,
    status_code=status.HTTP_201_CREATED,
    summary="Add an assignment rule",
)
async def create_rule(
    body: AssignmentRuleCreate, principal: Writer, session: SessionDep, response: Response
) -> AssignmentRuleRead:
    """Conditions on lead fields, a team or users, a strategy, optional contact SLA."""
    rule = await service.create_rule(session, principal, body)
    set_etag(response, rule)
    return _read(rule)


@router.post(
    "/v1/assignment-rules/preview", response_model=PreviewResult, summary="Preview where a lead would go"
)
async def preview_rules(body: PreviewRequest, principal: Reader, session: SessionDep) -> PreviewResult:
    """Evaluates the rules for a hypothetical lead without assigning it or moving any cursor."""
    return await service.preview(session, principal, body.lead)


@router.get(
    "/v1/assignment-rules/{rule_id}",
    response_model=AssignmentRuleRead,
    summary="Get an assignment rule",
    responses=problem_responses(404),
)
async def get_rule(
    rule_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> AssignmentRuleRead:
    """One rule."""
    rule = await service.get_rule(session, principal, rule_id)
    set_etag(response, rule)
    return _read(rule)


@router.patch(
    "/v1/assignment-rules/{rule_id}",
    response_model=AssignmentRuleRead,
    summary="Change an assignment rule",
    responses=problem_responses(404, 412),
)
async def update_rule(
    rule_id: uuid.UUID,
    body: AssignmentRuleUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> AssignmentRuleRead:
    """Reorder with `position`, switch strategy, change targets or conditions."""
    rule = await service.update_rule(session, principal, rule_id, body, expected_version=version)
    set_etag(response, rule)
    return _read(rule)


@router.delete(
    "/v1/assignment-rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an assignment rule",
    responses=problem_responses(404, 412),
)
async def delete_rule(
    rule_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep
) -> Response:
    """Past decisions keep the rule's name."""
    await service.delete_rule(session, principal, rule_id, expected_version=version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/leads/{lead_id}/assignment",
    response_model=AssignmentDecisionRead,
    summary="Why a lead went where it went",
    responses=problem_responses(404),
)
async def lead_assignment(
    lead_id: uuid.UUID, principal: Reader, session: SessionDep
) -> AssignmentDecisionRead:
    """The latest decision: rule matched, every candidate with why it was or wasn't chosen."""
    decision = await service.decision_for(session, principal, lead_id)
    return AssignmentDecisionRead.model_validate(decision.model_dump())

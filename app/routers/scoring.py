"""Lead scoring rules (admins write; everyone who reads leads can read them)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.scoring import ScoringRuleCreate, ScoringRuleRead, ScoringRuleUpdate
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.leads import scoring as service

router = APIRouter(prefix="/v1/scoring-rules", tags=["scoring-rules"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("leads:read"))]
Writer = Annotated[Principal, Depends(require("settings:write"))]


@router.get("", response_model=Page[ScoringRuleRead], summary="List scoring rules")
async def list_rules(principal: Reader, session: SessionDep, page: PageDep) -> Page[ScoringRuleRead]:
    """The rules that make up every lead's score."""
    rows, next_cursor = await service.list_rules(session, page)
    return Page(data=[ScoringRuleRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "", response_model=ScoringRuleRead, status_code=status.HTTP_201_CREATED, summary="Add a scoring rule"
)
async def create_rule(
    body: ScoringRuleCreate, principal: Writer, session: SessionDep, response: Response
) -> ScoringRuleRead:
    """`field` `operator` `value` -> `points`; leads are rescored when created or changed."""
    rule = await service.create_rule(session, principal, body)
    set_etag(response, rule)
    return ScoringRuleRead.model_validate(rule)


@router.patch(
    "/{rule_id}",
    response_model=ScoringRuleRead,
    summary="Change a scoring rule",
    responses=problem_responses(404, 412),
)
async def update_rule(
    rule_id: uuid.UUID,
    body: ScoringRuleUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> ScoringRuleRead:
    """Change a rule (admins)."""
    rule = await service.update_rule(session, principal, rule_id, body, expected_version=version)
    set_etag(response, rule)
    return ScoringRuleRead.model_validate(rule)


@router.delete(
    "/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a scoring rule",
    responses=problem_responses(404),
)
async def delete_rule(rule_id: uuid.UUID, principal: Writer, session: SessionDep) -> Response:
    """Remove a rule (admins)."""
    await service.delete_rule(session, principal, rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

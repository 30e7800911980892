"""Assignment rules as data: CRUD (admins and managers) and a preview that assigns nothing."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.encoders import jsonable_encoder
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, Forbidden, NotFound, ValidationFailed
from app.models.assignment import (
    AssignmentDecision,
    AssignmentRule,
    AssignmentRuleCreate,
    AssignmentRuleUpdate,
    PreviewResult,
)
from app.models.base import utcnow
from app.models.common import Role
from app.models.user import Team, User
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.assignment.engine import evaluate, latest_decision
from app.services.common import apply_changes, get_or_404
from app.services.leads import service as lead_service


def _manage(principal: Principal) -> None:
    if principal.role not in (Role.admin, Role.manager):
        raise Forbidden("Only admins and managers see assignment rules.")


def _change(principal: Principal) -> None:
    # Rules decide where every lead of the organisation goes (a rule at position 0 wins all), so
    # changing them is an admin's act; managers read them and preview.
    if not principal.is_admin:
        raise Forbidden("Only an admin can change assignment rules.")


async def _check_target(session: AsyncSession, team_id: uuid.UUID | None, user_ids: list[uuid.UUID]) -> None:
    if team_id and user_ids:
        raise ValidationFailed(
            "Target a team or a list of users, not both.",
            errors=[
                FieldError(
                    field="target_user_ids", code="ambiguous_target", message="team and users both set"
                )
            ],
        )
    if not team_id and not user_ids:
        raise ValidationFailed(
            "A rule needs a target: target_team_id or target_user_ids.",
            errors=[FieldError(field="target_user_ids", code="missing_target", message="no target")],
        )
    if team_id and await session.get(Team, team_id) is None:
        raise ValidationFailed(
            "Unknown team.",
            errors=[FieldError(field="target_team_id", code="not_found", message="no such team")],
        )
    if user_ids:
        found = set((await session.execute(select(col(User.id)).where(col(User.id).in_(user_ids)))).scalars())
        missing = [str(u) for u in user_ids if u not in found]
        if missing:
            raise ValidationFailed(
                f"Unknown user(s): {', '.join(missing)}.",
                errors=[FieldError(field="target_user_ids", code="not_found", message="no such user")],
            )


async def create_rule(
    session: AsyncSession, principal: Principal, data: AssignmentRuleCreate
) -> AssignmentRule:
    """Add a rule (at the end unless a position is given); admins only."""
    _change(principal)
    await _check_target(session, data.target_team_id, data.target_user_ids)
    position = data.position
    if position is None:
        last = (await session.execute(select(func.max(col(AssignmentRule.position))))).scalar_one_or_none()
        position = (last or 0) + 10
    rule = AssignmentRule(
        name=data.name,
        position=position,
        active=data.active,
        conditions=[c.model_dump() for c in data.conditions],
        target_team_id=data.target_team_id,
        target_user_ids=[str(u) for u in data.target_user_ids],
        strategy=data.strategy,
        respect_working_hours=data.respect_working_hours,
        contact_sla=data.contact_sla,
        sla_action=data.sla_action,
    )
    session.add(rule)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="assignment_rule",
        entity_id=rule.id,
        action="create",
        changes={"rule": [None, jsonable_encoder(data)]},
    )
    return rule


async def list_rules(
    session: AsyncSession, principal: Principal, page: PageParams
) -> tuple[list[AssignmentRule], str | None]:
    """Rules in evaluation order."""
    _manage(principal)
    return await paginate(
        session,
        select(AssignmentRule),
        page,
        id_column=col(AssignmentRule.id),
        sortable={"position": col(AssignmentRule.position), "created_at": col(AssignmentRule.created_at)},
        default_sort="position",
    )


async def get_rule(session: AsyncSession, principal: Principal, rule_id: uuid.UUID) -> AssignmentRule:
    """One rule."""
    _manage(principal)
    return await get_or_404(session, AssignmentRule, rule_id, what="assignment rule")


async def update_rule(
    session: AsyncSession,
    principal: Principal,
    rule_id: uuid.UUID,
    data: AssignmentRuleUpdate,
    *,
    expected_version: int | None,
) -> AssignmentRule:
    """Change a rule; its strategy cursor is kept (admins only)."""
    _change(principal)
    rule = await get_rule(session, principal, rule_id)
    changes: dict[str, Any] = data.changes()
    if "conditions" in changes:
        changes["conditions"] = [c.model_dump() for c in data.conditions or []]
    if "target_user_ids" in changes:
        changes["target_user_ids"] = [str(u) for u in data.target_user_ids or []]
    team = changes.get("target_team_id", rule.target_team_id)
    users = [uuid.UUID(u) for u in changes.get("target_user_ids", rule.target_user_ids)]
    await _check_target(session, team, users)
    diff = apply_changes(rule, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session,
            actor=principal,
            entity="assignment_rule",
            entity_id=rule.id,
            action="update",
            changes=diff,
        )
    await session.flush()
    return rule


async def delete_rule(
    session: AsyncSession, principal: Principal, rule_id: uuid.UUID, *, expected_version: int | None
) -> None:
    """Remove a rule (its past decisions keep its name); admins only."""
    _change(principal)
    rule = await get_rule(session, principal, rule_id)
    apply_changes(rule, {}, expected_version=expected_version)
    await session.delete(rule)
    audit.record(session, actor=principal, entity="assignment_rule", entity_id=rule.id, action="delete")
    await session.flush()


async def preview(session: AsyncSession, principal: Principal, lead: dict[str, Any]) -> PreviewResult:
    """Where this hypothetical lead would go now; nothing is assigned and no cursor moves."""
    _manage(principal)
    evaluation, _ = await evaluate(session, lead, now=utcnow(), lock=False)
    return PreviewResult(
        outcome=evaluation.outcome,
        rule_id=evaluation.rule.id if evaluation.rule else None,
        rule_name=evaluation.rule.name if evaluation.rule else None,
        chosen_user_id=evaluation.chosen.user_id if evaluation.chosen else None,
        explanation=evaluation.explanation,
        rules_considered=evaluation.rules_considered,
        candidates=evaluation.candidates,
    )


async def decision_for(session: AsyncSession, principal: Principal, lead_id: uuid.UUID) -> AssignmentDecision:
    """The latest decision about a lead the caller may see."""
    await lead_service.get_lead(session, principal, lead_id)
    decision = await latest_decision(session, lead_id)
    if decision is None:
        raise NotFound("No assignment decision for this lead yet.")
    return decision

"""Follow-up cadences and tasks: policies per lead status, the next task, completion, overdue.

A task is an Activity of kind `task` with `due_at`; the owner is the lead's owner. The worker
schedules one when a lead gets an owner, is first contacted, or a follow-up task is completed,
as long as a policy covers the lead's status and no follow-up task is still open.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from app.models.base import utcnow
from app.models.common import Role
from app.models.deal import Deal
from app.models.durations import parse_duration
from app.models.events import TaskCompleted, TaskOverdue
from app.models.followup import FollowupPolicy, FollowupPolicyCreate, FollowupPolicyUpdate, TaskComplete
from app.models.lead import Activity, ActivityCreate, ActivityKind, Lead
from app.models.pipeline import Stage
from app.models.user import User
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit, outbox
from app.services.common import apply_changes, get_or_404
from app.services.leads import service as lead_service


def _manage(principal: Principal) -> None:
    if principal.role not in (Role.admin, Role.manager):
        raise Forbidden("Only admins and managers manage follow-up policies.")


async def create_policy(
    session: AsyncSession, principal: Principal, data: FollowupPolicyCreate
) -> FollowupPolicy:
    """One policy per lead status or deal stage."""
    _manage(principal)
    if (data.lead_status is None) == (data.deal_stage_id is None):
        raise ValidationFailed(
            "A policy covers either a lead status or a deal stage.",
            errors=[
                FieldError(field="lead_status", code="one_of", message="set lead_status or deal_stage_id")
            ],
        )
    if data.deal_stage_id is not None:
        await get_or_404(session, Stage, data.deal_stage_id, what="stage")
        same = col(FollowupPolicy.deal_stage_id) == data.deal_stage_id
    else:
        assert data.lead_status is not None
        same = col(FollowupPolicy.lead_status) == data.lead_status.value
    if (await session.execute(select(FollowupPolicy).where(same))).scalar_one_or_none() is not None:
        raise Conflict("A policy for that status or stage exists; change that one.")
    policy = FollowupPolicy(
        name=data.name,
        lead_status=data.lead_status.value if data.lead_status else None,
        deal_stage_id=data.deal_stage_id,
        interval=data.interval,
        task_subject=data.task_subject,
        active=data.active,
    )
    session.add(policy)
    await session.flush()
    audit.record(session, actor=principal, entity="followup_policy", entity_id=policy.id, action="create")
    return policy


async def list_policies(
    session: AsyncSession, principal: Principal, page: PageParams
) -> tuple[list[FollowupPolicy], str | None]:
    """The organisation's policies."""
    return await paginate(
        session,
        select(FollowupPolicy),
        page,
        id_column=col(FollowupPolicy.id),
        sortable={"created_at": col(FollowupPolicy.created_at)},
        default_sort="created_at",
    )


async def update_policy(
    session: AsyncSession,
    principal: Principal,
    policy_id: uuid.UUID,
    data: FollowupPolicyUpdate,
    *,
    expected_version: int | None,
) -> FollowupPolicy:
    """Change the interval, subject or switch a policy off."""
    _manage(principal)
    policy = await get_or_404(session, FollowupPolicy, policy_id, what="follow-up policy")
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    diff = apply_changes(policy, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session,
            actor=principal,
            entity="followup_policy",
            entity_id=policy.id,
            action="update",
            changes=diff,
        )
    await session.flush()
    return policy


async def delete_policy(session: AsyncSession, principal: Principal, policy_id: uuid.UUID) -> None:
    """Stop scheduling for that status (open tasks stay)."""
    _manage(principal)
    policy = await get_or_404(session, FollowupPolicy, policy_id, what="follow-up policy")
    await session.delete(policy)
    audit.record(session, actor=principal, entity="followup_policy", entity_id=policy.id, action="delete")
    await session.flush()


async def schedule_next(
    session: AsyncSession, lead: Lead, *, since: datetime | None = None
) -> Activity | None:
    """Create the next follow-up task for a lead, if a policy covers its status and none is open.

    The task is due `interval` after `since`: the moment of the assignment, contact or completed
    task that triggered it (not when the worker got round to it).
    """
    if lead.owner_id is None or lead.deleted_at is not None:
        return None
    policy = (
        await session.execute(
            select(FollowupPolicy).where(
                col(FollowupPolicy.lead_status) == str(lead.status), col(FollowupPolicy.active).is_(True)
            )
        )
    ).scalar_one_or_none()
    if policy is None:
        return None
    open_task = (
        await session.execute(
            select(col(Activity.id)).where(
                col(Activity.lead_id) == lead.id,
                col(Activity.kind) == ActivityKind.task.value,
                col(Activity.done_at).is_(None),
                col(Activity.details)["followup"].as_boolean().is_(True),
            )
        )
    ).first()
    if open_task is not None:
        return None
    task = _lead_task(lead, policy, since or utcnow())
    session.add(task)
    await session.flush()
    return task


def _lead_task(lead: Lead, policy: FollowupPolicy, since: datetime) -> Activity:
    """The follow-up task a lead status policy gives a lead, due `interval` after `since`."""
    return Activity(
        lead_id=lead.id,
        kind=ActivityKind.task,
        subject=policy.task_subject,
        occurred_at=since,
        due_at=since + parse_duration(policy.interval),
        owner_id=lead.owner_id,
        details={"followup": True, "policy_id": str(policy.id), "lead_status": str(lead.status)},
    )


async def schedule_after_leads(session: AsyncSession, events: list[tuple[uuid.UUID, datetime]]) -> int:
    """`schedule_next` for a batch of (lead id, event time), in order, in the session's
    transaction: the leads are locked together and the active policies and open follow-up tasks
    read once (a batch of 50 costs four statements, not five per lead). A lead gone is skipped;
    a lead that appears twice gets at most one task, as one event after the other would give it.
    Returns how many tasks were created."""
    if not events:
        return 0
    ids = list(dict.fromkeys(lead_id for lead_id, _ in events))
    leads = {
        lead.id: lead
        for lead in (
            await session.execute(
                select(Lead)
                .where(col(Lead.id).in_(ids))
                .order_by(col(Lead.id))  # a fixed lock order: two batches never deadlock
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalars()
    }
    policies = {
        policy.lead_status: policy
        for policy in (
            await session.execute(
                select(FollowupPolicy).where(
                    col(FollowupPolicy.lead_status).is_not(None), col(FollowupPolicy.active).is_(True)
                )
            )
        ).scalars()
    }
    with_open_task = set(
        (
            await session.execute(
                select(col(Activity.lead_id)).where(
                    col(Activity.lead_id).in_(ids),
                    col(Activity.kind) == ActivityKind.task.value,
                    col(Activity.done_at).is_(None),
                    col(Activity.details)["followup"].as_boolean().is_(True),
                )
            )
        ).scalars()
    )
    created = 0
    for lead_id, since in events:
        lead = leads.get(lead_id)
        if lead is None or lead.owner_id is None or lead.deleted_at is not None or lead_id in with_open_task:
            continue
        policy = policies.get(str(lead.status))
        if policy is None:
            continue
        session.add(_lead_task(lead, policy, since))
        with_open_task.add(lead_id)
        created += 1
    await session.flush()
    return created


async def schedule_next_for_deal(
    session: AsyncSession, deal: Deal, *, since: datetime | None = None
) -> Activity | None:
    """The next follow-up task for an open deal: its stage's policy, else the stage's own
    `follow_up_interval_days`; none while a follow-up task for the deal is open."""
    if deal.owner_id is None or deal.status != "open":
        return None
    policy = (
        await session.execute(
            select(FollowupPolicy).where(
                col(FollowupPolicy.deal_stage_id) == deal.stage_id, col(FollowupPolicy.active).is_(True)
            )
        )
    ).scalar_one_or_none()
    stage = await session.get(Stage, deal.stage_id)
    if policy is not None:
        interval, subject = parse_duration(policy.interval), policy.task_subject
    elif stage is not None and stage.follow_up_interval_days:
        interval, subject = timedelta(days=stage.follow_up_interval_days), f"Follow up: {deal.name}"
    else:
        return None
    open_task = (
        await session.execute(
            select(col(Activity.id)).where(
                col(Activity.deal_id) == deal.id,
                col(Activity.kind) == ActivityKind.task.value,
                col(Activity.done_at).is_(None),
                col(Activity.details)["followup"].as_boolean().is_(True),
            )
        )
    ).first()
    if open_task is not None:
        return None
    now = since or utcnow()
    task = Activity(
        deal_id=deal.id,
        kind=ActivityKind.task,
        subject=subject,
        occurred_at=now,
        due_at=now + interval,
        owner_id=deal.owner_id,
        details={
            "followup": True,
            "policy_id": str(policy.id) if policy else None,
            "deal_stage_id": str(deal.stage_id),
        },
    )
    session.add(task)
    await session.flush()
    return task


async def schedule_after(
    session: AsyncSession, *, lead_id: uuid.UUID | None, deal_id: uuid.UUID | None, since: datetime
) -> Activity | None:
    """The next follow-up task after an event about a lead (else a deal), which is loaded and
    locked here; NotFound when it is gone."""
    if lead_id is not None:
        lead = await get_or_404(session, Lead, lead_id, what="lead", lock=True)
        return await schedule_next(session, lead, since=since)
    if deal_id is None:
        return None
    deal = await get_or_404(session, Deal, deal_id, what="deal", lock=True)
    return await schedule_next_for_deal(session, deal, since=since)


async def organisations_with_followups(session: AsyncSession) -> set[uuid.UUID]:
    """Organisations with an active follow-up policy or a stage with a follow-up interval."""
    rows = await session.execute(
        select(col(FollowupPolicy.org_id))
        .where(col(FollowupPolicy.active).is_(True))
        .union(select(col(Stage.org_id)).where(col(Stage.follow_up_interval_days).is_not(None)))
        .execution_options(cross_tenant=True)
    )
    return {row[0] for row in rows}


async def organisations_with_lead_followups(session: AsyncSession) -> set[uuid.UUID]:
    """Organisations with an active follow-up policy for a lead status (what a lead's events can
    schedule)."""
    rows = await session.execute(
        select(col(FollowupPolicy.org_id))
        .where(col(FollowupPolicy.active).is_(True), col(FollowupPolicy.lead_status).is_not(None))
        .distinct()
        .execution_options(cross_tenant=True)
    )
    return {row[0] for row in rows}


def _task_filter(principal: Principal, owner: str | None) -> list[object]:
    conditions: list[object] = [col(Activity.kind) == ActivityKind.task.value]
    if owner == "me":
        conditions.append(col(Activity.owner_id) == principal.user_id)
    elif owner:
        try:
            conditions.append(col(Activity.owner_id) == uuid.UUID(owner))
        except ValueError as exc:
            raise ValidationFailed(
                "owner is `me` or a user id.",
                errors=[FieldError(field="owner", code="invalid", message="bad owner")],
            ) from exc
    conditions.append(_own_tasks(principal))
    return conditions


def _own_tasks(principal: Principal) -> Any:
    """Whose tasks a caller sees: reps their own, managers their team's and their own, admins
    and viewers (read-only, as for leads) all."""
    if principal.role == Role.rep or (principal.role == Role.manager and principal.team_id is None):
        return col(Activity.owner_id) == principal.user_id
    if principal.role == Role.manager:
        team = select(col(User.id)).where(col(User.team_id) == principal.team_id)
        return or_(col(Activity.owner_id) == principal.user_id, col(Activity.owner_id).in_(team))
    return true()


async def list_tasks(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    owner: str | None,
    due_before: datetime | None,
    overdue: bool | None,
    done: bool | None,
) -> tuple[list[Activity], str | None]:
    """Tasks, soonest due first; reps see their own, managers and admins any (filter by owner)."""
    stmt = select(Activity).where(*_task_filter(principal, owner))  # type: ignore[arg-type]
    if due_before is not None:
        stmt = stmt.where(col(Activity.due_at) < due_before)
    now = utcnow()
    if overdue is True:
        stmt = stmt.where(col(Activity.due_at) < now, col(Activity.done_at).is_(None))
    elif overdue is False:
        stmt = stmt.where((col(Activity.due_at) >= now) | col(Activity.done_at).is_not(None))
    if done is not None:
        stmt = stmt.where(col(Activity.done_at).is_not(None) if done else col(Activity.done_at).is_(None))
    stmt = stmt.where(col(Activity.due_at).is_not(None))
    return await paginate(
        session,
        stmt,
        page,
        id_column=col(Activity.id),
        sortable={"due_at": col(Activity.due_at), "created_at": col(Activity.created_at)},
        default_sort="due_at",
    )


async def complete_task(
    session: AsyncSession, principal: Principal, task_id: uuid.UUID, data: TaskComplete
) -> tuple[Activity, Activity]:
    """Mark a task done and log its outcome as an activity on the lead; the next task follows."""
    task = (
        await session.execute(
            select(Activity).where(col(Activity.id) == task_id, _own_tasks(principal)).with_for_update()
        )
    ).scalar_one_or_none()
    if task is None or task.kind != ActivityKind.task:
        raise NotFound(f"No task with id {task_id}.")
    if task.done_at is not None:
        raise Conflict("This task is already done.")
    now = utcnow()
    if task.lead_id is not None:
        logged = await lead_service.add_activity(
            session,
            principal,
            task.lead_id,
            ActivityCreate(
                kind=ActivityKind(data.log_as), subject=f"{task.subject}: done", body=data.outcome
            ),
        )
    elif task.deal_id is not None:
        deal = await get_or_404(session, Deal, task.deal_id, what="deal")
        logged = Activity(
            deal_id=deal.id,
            kind=ActivityKind(data.log_as),
            subject=f"{task.subject}: done",
            body=data.outcome,
            occurred_at=now,
            owner_id=principal.user_id,
            created_by=principal.user_id,
        )
        session.add(logged)
        deal.last_activity_at = now
        await session.flush()
    else:
        raise Conflict("This task is about neither a lead nor a deal.")
    task.done_at = now
    task.updated_at = now
    task.version += 1
    task.details = {**task.details, "outcome": data.outcome, "logged_activity_id": str(logged.id)}
    await outbox.emit(session, TaskCompleted(task_id=task.id, lead_id=task.lead_id, deal_id=task.deal_id))
    await session.flush()
    return task, logged


def overdue_tasks_stmt(now: datetime, *, limit: int = 500) -> Any:
    """Open tasks past due and not flagged yet, locked (read through ix_activities_open_due)."""
    return (
        select(Activity)
        .where(
            col(Activity.done_at).is_(None),
            col(Activity.due_at) < now,
            col(Activity.kind) == ActivityKind.task.value,
            col(Activity.details)["overdue_at"].as_string().is_(None),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(cross_tenant=True)
    )


async def flag_overdue(session: AsyncSession, *, limit: int = 500) -> int:
    """Emit `task.overdue` once for each open task past its due time (across organisations)."""
    now = utcnow()
    tasks = list((await session.execute(overdue_tasks_stmt(now, limit=limit))).scalars())
    for task in tasks:
        task.details = {**task.details, "overdue_at": now.isoformat()}
        await outbox.emit(
            session,
            TaskOverdue(
                task_id=task.id,
                lead_id=task.lead_id,
                deal_id=task.deal_id,
                owner_id=task.owner_id,
                due_at=task.due_at,
            ),
            org_id=task.org_id,
        )
    await session.flush()
    return len(tasks)


def is_overdue(task: Activity, now: datetime) -> bool:
    """Due and not done."""
    return task.done_at is None and task.due_at is not None and task.due_at < now

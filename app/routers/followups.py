"""Follow-up policies (跟进计划) and the task list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.base import utcnow
from app.models.common import IsoDateTime
from app.models.followup import (
    FollowupPolicy,
    FollowupPolicyCreate,
    FollowupPolicyRead,
    FollowupPolicyUpdate,
    TaskComplete,
    TaskRead,
)
from app.models.lead import Activity
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import followups as service

router = APIRouter(tags=["followups"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("leads:read"))]
Writer = Annotated[Principal, Depends(require("leads:write"))]


def _policy(p: FollowupPolicy) -> FollowupPolicyRead:
    return FollowupPolicyRead.model_validate(p.model_dump())


def _task(t: Activity) -> TaskRead:
    return TaskRead(
        id=t.id,
        lead_id=t.lead_id,
        deal_id=t.deal_id,
        owner_id=t.owner_id,
        subject=t.subject,
        body=t.body,
        due_at=t.due_at,
        done_at=t.done_at,
        overdue=service.is_overdue(t, utcnow()),
        details=t.details,
        created_at=t.created_at,
    )


class TaskCompleted(BaseModel):
    """The completed task and the activity that logged its outcome."""

    task: TaskRead
    logged_activity_id: uuid.UUID


@router.get(
    "/v1/followup-policies", response_model=Page[FollowupPolicyRead], summary="List follow-up policies"
)
async def list_policies(principal: Reader, session: SessionDep, page: PageDep) -> Page[FollowupPolicyRead]:
    """One policy per lead status."""
    rows, next_cursor = await service.list_policies(session, principal, page)
    return Page(data=[_policy(p) for p in rows], next_cursor=next_cursor)


@router.post(
    "/v1/followup-policies",
    response_model=FollowupPolicyRead,
    status_code=status.HTTP_201_CREATED,
    summary="Add a follow-up policy",
    responses=problem_responses(404, 409),
)
async def create_policy(
    body: FollowupPolicyCreate, principal: Writer, session: SessionDep, response: Response
) -> FollowupPolicyRead:
    """E.g. status `new`, interval `PT1H`: the owner must follow up within an hour of assignment."""
    policy = await service.create_policy(session, principal, body)
    set_etag(response, policy)
    return _policy(policy)


@router.patch(
    "/v1/followup-policies/{policy_id}",
    response_model=FollowupPolicyRead,
    summary="Change a follow-up policy",
    responses=problem_responses(404, 412),
)
async def update_policy(
    policy_id: uuid.UUID,
    body: FollowupPolicyUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> FollowupPolicyRead:
    """Interval, subject, active."""
    policy = await service.update_policy(session, principal, policy_id, body, expected_version=version)
    set_etag(response, policy)
    return _policy(policy)


@router.delete(
    "/v1/followup-policies/{policy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a follow-up policy",
    responses=problem_responses(404),
)
async def delete_policy(policy_id: uuid.UUID, principal: Writer, session: SessionDep) -> Response:
    """Stops scheduling; open tasks stay."""
    await service.delete_policy(session, principal, policy_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/tasks", response_model=Page[TaskRead], summary="List tasks")
async def list_tasks(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    owner: Annotated[str | None, Query(description="`me` or a user id")] = None,
    due_before: IsoDateTime | None = None,
    overdue: bool | None = None,
    done: bool | None = None,
) -> Page[TaskRead]:
    """Tasks soonest due first; reps see their own."""
    rows, next_cursor = await service.list_tasks(
        session, principal, page, owner=owner, due_before=due_before, overdue=overdue, done=done
    )
    return Page(data=[_task(t) for t in rows], next_cursor=next_cursor)


@router.post(
    "/v1/tasks/{task_id}/complete",
    response_model=TaskCompleted,
    summary="Complete a task with its outcome",
    responses=problem_responses(404, 409),
)
async def complete_task(
    task_id: uuid.UUID, body: TaskComplete, principal: Writer, session: SessionDep
) -> TaskCompleted:
    """Marks it done, logs the outcome on the lead (a call by default); the next task follows per policy."""
    task, logged = await service.complete_task(session, principal, task_id, body)
    return TaskCompleted(task=_task(task), logged_activity_id=logged.id)

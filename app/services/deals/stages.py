"""Deal stage changes: move (with exit criteria), won, lost, reopen, and deleting a pipeline stage
(its deals move first); each writes the stage history.

Every stage change appends a `deal_stage_history` row (from, to, at, by), the field-history rows of
what the change moved (status, probability), an audit entry, and the outbox events
`deal.stage_changed` and `deal.won` / `deal.lost`, in the caller's transaction.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, InvalidTransition, ValidationFailed
from app.models.base import utcnow
from app.models.deal import Deal, DealStageHistory, DealStatus
from app.models.events import DealLost, DealStageChanged, DealWon
from app.models.organisation import Organisation
from app.models.pipeline import Pipeline, Stage, StageKind
from app.security import Principal
from app.services import audit, outbox
from app.services.common import check_version, get_or_404
from app.services.deals import pipelines as pipelines_service
from app.services.deals.service import deal_event, get_deal, touch, track_changes, tracked_values


async def enter_stage(
    session: AsyncSession,
    principal: Principal | None,
    deal: Deal,
    stage: Stage,
    *,
    reason: str = "move",
    status: DealStatus | None = None,
    lost_reason: str | None = None,
    lost_note: str | None = None,
) -> None:
    """Put the deal in `stage` (and status), writing stage and field history and `deal.stage_changed`."""
    now = utcnow()
    before = tracked_values(deal)
    from_stage_id = deal.stage_id
    deal.stage_id = stage.id
    deal.stage_entered_at = now
    if not deal.probability_overridden or stage.kind != StageKind.open:
        deal.probability = stage.probability
        if stage.kind != StageKind.open:
            deal.probability_overridden = False
    if status is not None:
        deal.status = status
        if status == DealStatus.open:
            deal.closed_at = None
            deal.lost_reason = None
            deal.lost_note = None
        else:
            deal.closed_at = now
        if status == DealStatus.lost:
            deal.lost_reason, deal.lost_note = lost_reason, lost_note
    touch(deal, now)
    session.add(
        DealStageHistory(
            deal_id=deal.id,
            pipeline_id=deal.pipeline_id,
            from_stage_id=from_stage_id,
            to_stage_id=stage.id,
            at=now,
            by_user_id=principal.user_id if principal else None,
        )
    )
    diff = track_changes(session, principal, deal, before, now)
    audit.record(
        session,
        actor=principal,
        entity="deal",
        entity_id=deal.id,
        action=reason,
        changes={"stage_id": [str(from_stage_id), str(stage.id)], **diff},
        org_id=deal.org_id,
    )
    await outbox.emit(
        session,
        deal_event(
            DealStageChanged,
            deal,
            principal,
            from_stage_id=from_stage_id,
            to_stage_id=stage.id,
            reason=reason,
        ),
    )
    if status == DealStatus.won:
        await outbox.emit(session, deal_event(DealWon, deal, principal))
    elif status == DealStatus.lost:
        await outbox.emit(session, deal_event(DealLost, deal, principal, lost_reason=lost_reason))
    await session.flush()


def _missing_exit_fields(deal: Deal, stages: list[Stage], current: Stage, target: Stage) -> list[FieldError]:
    """Fields required to leave the current stage and every open stage skipped on the way forward."""
    missing: dict[str, FieldError] = {}
    for stage in stages:
        if stage.kind != StageKind.open or not (current.position <= stage.position < target.position):
            continue
        for name in stage.required_fields:
            if getattr(deal, name) is None and name not in missing:
                label = stage.name_en or stage.name
                missing[name] = FieldError(
                    field=name, code="required_to_leave_stage", message=f"required to leave stage {label!r}"
                )
    return list(missing.values())


async def _load_stage_context(session: AsyncSession, deal: Deal) -> tuple[list[Stage], Stage]:
    stages = await pipelines_service.live_stages(session, deal.pipeline_id)
    current = await get_or_404(session, Stage, deal.stage_id, what="stage")
    return stages, current


def _require_open(deal: Deal) -> None:
    if deal.status != DealStatus.open:
        raise InvalidTransition(f"The deal is {deal.status}; reopen it first.")


async def _lost_reasons(session: AsyncSession, org_id: uuid.UUID) -> list[str]:
    org = await session.get(Organisation, org_id)
    return org.typed_settings().lost_reasons if org else []


async def move_deal(
    session: AsyncSession,
    principal: Principal,
    deal_id: uuid.UUID,
    stage_id: uuid.UUID,
    *,
    lost_reason: str | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Move an open deal to a stage of its pipeline; forward moves need the exit fields (422 names them).

    Moving backwards is allowed and recorded like any move. Moving to the won or lost stage is
    winning or losing the deal (losing needs `lost_reason`). Moving to the stage it is in changes nothing.
    """
    deal = await get_deal(session, principal, deal_id, lock=True)
    check_version(deal, expected_version)
    _require_open(deal)
    stages, current = await _load_stage_context(session, deal)
    target = next((s for s in stages if s.id == stage_id), None)
    if target is None:
        raise ValidationFailed.on("stage_id", "not_in_pipeline", "not a stage of the deal's pipeline")
    if target.id == current.id:
        return deal
    if target.kind == StageKind.lost:
        return await _lose(session, principal, deal, target, lost_reason, None)
    missing = (
        _missing_exit_fields(deal, stages, current, target) if target.position > current.position else []
    )
    if missing:
        names = ", ".join(e.field for e in missing)
        raise ValidationFailed(f"Fill {names} before the deal leaves this stage.", errors=missing)
    status = DealStatus.won if target.kind == StageKind.won else None
    await enter_stage(session, principal, deal, target, reason="won" if status else "move", status=status)
    return deal


async def win_deal(
    session: AsyncSession,
    principal: Principal | None,
    deal_id: uuid.UUID,
    *,
    expected_version: int | None = None,
    enforce_exit_fields: bool = True,
) -> Deal:
    """Mark a deal won: it moves to its pipeline's won stage (exit fields of the stages left are needed)."""
    deal = (
        await get_deal(session, principal, deal_id, lock=True)
        if principal
        else await get_or_404(session, Deal, deal_id, what="deal")
    )
    check_version(deal, expected_version)
    _require_open(deal)
    stages, current = await _load_stage_context(session, deal)
    won = next(s for s in stages if s.kind == StageKind.won)
    if enforce_exit_fields:
        missing = _missing_exit_fields(deal, stages, current, won)
        if missing:
            names = ", ".join(e.field for e in missing)
            raise ValidationFailed(f"Fill {names} before the deal is won.", errors=missing)
    await enter_stage(session, principal, deal, won, reason="won", status=DealStatus.won)
    return deal


async def _lose(
    session: AsyncSession,
    principal: Principal,
    deal: Deal,
    lost_stage: Stage,
    reason: str | None,
    note: str | None,
) -> Deal:
    reasons = await _lost_reasons(session, deal.org_id)
    if not reason:
        raise ValidationFailed.on("lost_reason", "required", "a lost deal needs a reason")
    if reason not in reasons:
        raise ValidationFailed.on("reason", "unknown_reason", f"one of: {', '.join(reasons)}")
    await enter_stage(
        session,
        principal,
        deal,
        lost_stage,
        reason="lost",
        status=DealStatus.lost,
        lost_reason=reason,
        lost_note=note,
    )
    return deal


async def lose_deal(
    session: AsyncSession,
    principal: Principal,
    deal_id: uuid.UUID,
    *,
    reason: str,
    note: str | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Mark a deal lost with a reason from the organisation's list (`lost_reasons` setting)."""
    deal = await get_deal(session, principal, deal_id, lock=True)
    check_version(deal, expected_version)
    _require_open(deal)
    stages, _ = await _load_stage_context(session, deal)
    lost_stage = next(s for s in stages if s.kind == StageKind.lost)
    return await _lose(session, principal, deal, lost_stage, reason, note)


async def reopen_deal(
    session: AsyncSession,
    principal: Principal,
    deal_id: uuid.UUID,
    *,
    stage_id: uuid.UUID | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Reopen a won or lost deal into an open stage (default: the last open stage it was in)."""
    deal = await get_deal(session, principal, deal_id, lock=True)
    check_version(deal, expected_version)
    if deal.status == DealStatus.open:
        raise InvalidTransition("The deal is already open.")
    stages, _ = await _load_stage_context(session, deal)
    open_stages = {s.id: s for s in stages if s.kind == StageKind.open}
    if stage_id is not None:
        if stage_id not in open_stages:
            raise ValidationFailed.on("stage_id", "not_an_open_stage", "an open stage of the deal's pipeline")
        target = open_stages[stage_id]
    else:
        rows = (
            await session.execute(
                select(col(DealStageHistory.to_stage_id))
                .where(col(DealStageHistory.deal_id) == deal.id)
                .order_by(col(DealStageHistory.at).desc(), col(DealStageHistory.id).desc())
            )
        ).scalars()
        last_open = next((open_stages[s] for s in rows if s in open_stages), None)
        target = last_open or next(iter(open_stages.values()))
    await enter_stage(session, principal, deal, target, reason="reopen", status=DealStatus.open)
    return deal


async def delete_stage(
    session: AsyncSession,
    principal: Principal,
    pipeline_id: uuid.UUID,
    stage_id: uuid.UUID,
    *,
    target_stage_id: uuid.UUID | None,
) -> tuple[Pipeline, list[Stage]]:
    """Delete an open stage; its deals first move to `target_stage_id` (required when it holds deals)."""
    pipeline, stage, stages = await pipelines_service.stage_to_delete(
        session, principal, pipeline_id, stage_id
    )
    holding = list((await session.execute(select(Deal).where(col(Deal.stage_id) == stage.id))).scalars())
    if holding:
        target = await pipelines_service.deal_target_stage(
            session, pipeline_id, stage, target_stage_id, holding=len(holding)
        )
        for deal in holding:
            await enter_stage(session, principal, deal, target, reason="stage_deleted")
    remaining = await pipelines_service.remove_stage(
        session, principal, stage, stages, moved_deals=len(holding)
    )
    return pipeline, remaining

"""Pipelines and stages: the default pipeline every organisation gets, admin edits, stage removal.

Every member reads pipelines; only admins change them. Stages are never erased: a deleted stage
gets `deleted_at` (its deals move to a target stage first, in `deals.stages.delete_stage`), so
stage history keeps pointing at it.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.models.base import utcnow
from app.models.pipeline import (
    Pipeline,
    PipelineCreate,
    PipelineRead,
    PipelineUpdate,
    Stage,
    StageCreate,
    StageKind,
    StageRead,
    StageUpdate,
)
from app.security import Principal
from app.services import audit
from app.services.common import apply_changes, flush_unique, get_or_404

# DESIGN.md §4: 潜在客户 -> 初步接触 -> 需求确认 -> 报价 -> 谈判 -> 成交 | 输单.
DEFAULT_PIPELINE_NAME = "销售漏斗 Sales pipeline"
DEFAULT_STAGES: list[dict[str, Any]] = [
    {"key": "prospect", "name": "潜在客户", "name_en": "Prospect", "probability": "10", "rotting_days": 14},
    {
        "key": "first_contact",
        "name": "初步接触",
        "name_en": "First contact",
        "probability": "20",
        "required_fields": ["contact_id"],
        "rotting_days": 14,
        "follow_up_interval_days": 7,
    },
    {
        "key": "needs_confirmed",
        "name": "需求确认",
        "name_en": "Needs confirmed",
        "probability": "40",
        "required_fields": ["amount"],
        "rotting_days": 21,
        "follow_up_interval_days": 5,
    },
    {
        "key": "quote",
        "name": "报价",
        "name_en": "Quote",
        "probability": "60",
        "required_fields": ["amount", "expected_close_date"],
        "rotting_days": 14,
        "follow_up_interval_days": 3,
    },
    {
        "key": "negotiation",
        "name": "谈判",
        "name_en": "Negotiation",
        "probability": "80",
        "required_fields": ["amount", "expected_close_date"],
        "rotting_days": 10,
        "follow_up_interval_days": 2,
    },
    {"key": "won", "name": "成交", "name_en": "Won", "probability": "100", "kind": "won"},
    {"key": "lost", "name": "输单", "name_en": "Lost", "probability": "0", "kind": "lost"},
]


def _admin_only(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only an admin can change pipelines.")


async def live_stages(session: AsyncSession, pipeline_id: uuid.UUID) -> list[Stage]:
    """The pipeline's stages that are not deleted, in order."""
    stmt = (
        select(Stage)
        .where(col(Stage.pipeline_id) == pipeline_id, col(Stage.deleted_at).is_(None))
        .order_by(col(Stage.position), col(Stage.created_at))
    )
    return list((await session.execute(stmt)).scalars())


def read_model(pipeline: Pipeline, stages: list[Stage]) -> PipelineRead:
    """A pipeline with its stages as the API shows it."""
    return PipelineRead.model_validate(
        {**pipeline.model_dump(warnings=False), "stages": [StageRead.model_validate(s) for s in stages]}
    )


def _check_stage_set(stages: list[StageCreate]) -> None:
    kinds = [s.kind for s in stages]
    if StageKind.open not in kinds:
        raise ValidationFailed.on("stages", "no_open_stage", "a pipeline needs at least one open stage")
    if kinds.count(StageKind.won) != 1 or kinds.count(StageKind.lost) != 1:
        raise ValidationFailed.on(
            "stages", "won_lost_stages", "a pipeline needs exactly one won and one lost stage"
        )


def _stage_key(data: StageCreate, index: int) -> str:
    return data.key or f"stage_{index + 1}"


async def _clear_default(session: AsyncSession, keep: uuid.UUID) -> None:
    await session.execute(
        update(Pipeline).where(col(Pipeline.id) != keep, col(Pipeline.is_default)).values(is_default=False)
    )


async def _insert_pipeline(session: AsyncSession, data: PipelineCreate) -> tuple[Pipeline, list[Stage]]:
    _check_stage_set(data.stages)
    keys = [_stage_key(s, i) for i, s in enumerate(data.stages)]
    if len(set(keys)) != len(keys):
        raise ValidationFailed.on("stages", "duplicate_key", "stage keys must be unique within a pipeline")
    has_default = (
        await session.execute(select(func.count()).select_from(Pipeline).where(col(Pipeline.is_default)))
    ).scalar_one()
    pipeline = Pipeline(
        name=data.name,
        is_default=data.is_default or not has_default,
        win_on_quote_acceptance=data.win_on_quote_acceptance,
    )
    session.add(pipeline)
    await flush_unique(session, f"A pipeline named {data.name!r} already exists.")
    if pipeline.is_default:
        await _clear_default(session, pipeline.id)
    stages = []
    for index, s in enumerate(data.stages):
        stage = Stage(
            pipeline_id=pipeline.id,
            key=keys[index],
            name=s.name,
            name_en=s.name_en,
            position=index,
            probability=s.probability,
            kind=s.kind,
            required_fields=s.required_fields,
            rotting_days=s.rotting_days,
            follow_up_interval_days=s.follow_up_interval_days,
        )
        session.add(stage)
        stages.append(stage)
    await session.flush()
    return pipeline, stages


async def seed_default_pipeline(session: AsyncSession) -> Pipeline:
    """Create the default pipeline (DESIGN.md §4) in the session's organisation."""
    data = PipelineCreate(
        name=DEFAULT_PIPELINE_NAME,
        is_default=True,
        stages=[StageCreate.model_validate(s) for s in DEFAULT_STAGES],
    )
    pipeline, _ = await _insert_pipeline(session, data)
    return pipeline


async def create_pipeline(
    session: AsyncSession, principal: Principal, data: PipelineCreate
) -> tuple[Pipeline, list[Stage]]:
    """A new pipeline with its stages (admins)."""
    _admin_only(principal)
    pipeline, stages = await _insert_pipeline(session, data)
    audit.record(
        session,
        actor=principal,
        entity="pipeline",
        entity_id=pipeline.id,
        action="create",
        changes={"name": [None, pipeline.name], "stages": [None, [s.key for s in stages]]},
    )
    return pipeline, stages


async def list_pipelines(session: AsyncSession) -> list[tuple[Pipeline, list[Stage]]]:
    """Every pipeline of the organisation (the default first) with its stages."""
    pipelines = list(
        (
            await session.execute(
                select(Pipeline).order_by(col(Pipeline.is_default).desc(), col(Pipeline.created_at))
            )
        ).scalars()
    )
    return [(p, await live_stages(session, p.id)) for p in pipelines]


async def get_pipeline(session: AsyncSession, pipeline_id: uuid.UUID) -> tuple[Pipeline, list[Stage]]:
    """One pipeline and its live stages."""
    pipeline = await get_or_404(session, Pipeline, pipeline_id, what="pipeline")
    return pipeline, await live_stages(session, pipeline.id)


async def default_pipeline(session: AsyncSession) -> Pipeline:
    """The organisation's default pipeline."""
    pipeline = (
        await session.execute(select(Pipeline).where(col(Pipeline.is_default)).limit(1))
    ).scalar_one_or_none()
    if pipeline is None:
        raise NotFound("The organisation has no default pipeline; create one.")
    return pipeline


async def update_pipeline(
    session: AsyncSession,
    principal: Principal,
    pipeline_id: uuid.UUID,
    data: PipelineUpdate,
    *,
    expected_version: int | None,
) -> tuple[Pipeline, list[Stage]]:
    """Rename, make default, or change what quote acceptance does (admins)."""
    _admin_only(principal)
    pipeline = await get_or_404(session, Pipeline, pipeline_id, what="pipeline")
    changes = data.changes()
    if changes.get("is_default") is False and pipeline.is_default:
        raise Conflict("Make another pipeline the default instead.")
    diff = apply_changes(pipeline, changes, expected_version=expected_version)
    if diff:
        await flush_unique(session, f"A pipeline named {pipeline.name!r} already exists.")
        if pipeline.is_default:
            await _clear_default(session, pipeline.id)
        audit.record(
            session, actor=principal, entity="pipeline", entity_id=pipeline.id, action="update", changes=diff
        )
    return pipeline, await live_stages(session, pipeline.id)


async def get_stage(session: AsyncSession, pipeline_id: uuid.UUID, stage_id: uuid.UUID) -> Stage:
    """A live stage of this pipeline, else 404."""
    stage = await session.get(Stage, stage_id)
    if stage is None or stage.pipeline_id != pipeline_id or stage.deleted_at is not None:
        raise NotFound(f"No stage with id {stage_id} in this pipeline.")
    return stage


async def _renumber(stages: list[Stage]) -> None:
    for position, stage in enumerate(stages):
        if stage.position != position:
            stage.position = position
            stage.version += 1
            stage.updated_at = utcnow()


async def add_stage(
    session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID, data: StageCreate
) -> tuple[Pipeline, list[Stage]]:
    """Add an open stage (appended before the closing stages unless a position is given)."""
    _admin_only(principal)
    pipeline = await get_or_404(session, Pipeline, pipeline_id, what="pipeline")
    if data.kind != StageKind.open:
        raise ValidationFailed.on(
            "kind", "one_won_one_lost", "a pipeline has exactly one won and one lost stage"
        )
    stages = await live_stages(session, pipeline.id)
    key = data.key or f"stage_{uuid.uuid4().hex[:8]}"
    if any(s.key == key for s in stages):
        raise Conflict(f"This pipeline already has a stage with key {key!r}.")
    open_count = sum(1 for s in stages if s.kind == StageKind.open)
    position = min(data.position if data.position is not None else open_count, open_count)
    stage = Stage(
        pipeline_id=pipeline.id,
        key=key,
        **data.model_dump(exclude={"key", "position"}),
    )
    session.add(stage)
    stages.insert(position, stage)
    await _renumber(stages)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="stage",
        entity_id=stage.id,
        action="create",
        changes={"key": [None, key]},
    )
    return pipeline, stages


async def update_stage(
    session: AsyncSession,
    principal: Principal,
    pipeline_id: uuid.UUID,
    stage_id: uuid.UUID,
    data: StageUpdate,
    *,
    expected_version: int | None,
) -> Stage:
    """Rename a stage or change its probability, exit criteria, rotting or follow-up interval."""
    _admin_only(principal)
    stage = await get_stage(session, pipeline_id, stage_id)
    changes = data.changes()
    diff = apply_changes(stage, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session, actor=principal, entity="stage", entity_id=stage.id, action="update", changes=diff
        )
        await session.flush()
    return stage


async def reorder_stages(
    session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID, stage_ids: list[uuid.UUID]
) -> tuple[Pipeline, list[Stage]]:
    """Put the live stages in a new order: every id once; open stages must precede won and lost."""
    _admin_only(principal)
    pipeline = await get_or_404(session, Pipeline, pipeline_id, what="pipeline")
    stages = await live_stages(session, pipeline.id)
    by_id = {s.id: s for s in stages}
    if sorted(map(str, stage_ids)) != sorted(map(str, by_id)):
        raise ValidationFailed.on(
            "stage_ids", "not_a_permutation", "give every live stage id of the pipeline exactly once"
        )
    ordered = [by_id[i] for i in stage_ids]
    kinds = [s.kind for s in ordered]
    first_closed = next((i for i, k in enumerate(kinds) if k != StageKind.open), len(kinds))
    if any(k == StageKind.open for k in kinds[first_closed:]):
        raise ValidationFailed.on(
            "stage_ids", "closed_before_open", "the won and lost stages come after every open stage"
        )
    await _renumber(ordered)
    audit.record(
        session,
        actor=principal,
        entity="pipeline",
        entity_id=pipeline.id,
        action="reorder_stages",
        changes={"stages": [None, [s.key for s in ordered]]},
    )
    await session.flush()
    return pipeline, ordered


async def stage_to_delete(
    session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID, stage_id: uuid.UUID
) -> tuple[Pipeline, Stage, list[Stage]]:
    """The pipeline, the open stage an admin may delete, and the pipeline's live stages (409 when it
    is a closing stage or the last open one)."""
    _admin_only(principal)
    pipeline = await get_or_404(session, Pipeline, pipeline_id, what="pipeline")
    stage = await get_stage(session, pipeline_id, stage_id)
    if stage.kind != StageKind.open:
        raise Conflict("The won and lost stages cannot be deleted.")
    stages = await live_stages(session, pipeline.id)
    if sum(1 for s in stages if s.kind == StageKind.open) <= 1:
        raise Conflict("A pipeline keeps at least one open stage.")
    return pipeline, stage, stages


async def deal_target_stage(
    session: AsyncSession,
    pipeline_id: uuid.UUID,
    stage: Stage,
    target_stage_id: uuid.UUID | None,
    *,
    holding: int,
) -> Stage:
    """The open stage that takes the `holding` deals of `stage` before it is deleted (422 when it
    is missing or not another open stage)."""
    if target_stage_id is None:
        raise ValidationFailed.on(
            "target_stage_id",
            "required",
            f"the stage holds {holding} deal(s); name a target stage to move them to",
        )
    target = await get_stage(session, pipeline_id, target_stage_id)
    if target.id == stage.id or target.kind != StageKind.open:
        raise ValidationFailed.on(
            "target_stage_id", "invalid_target", "the target must be another open stage"
        )
    return target


async def remove_stage(
    session: AsyncSession, principal: Principal, stage: Stage, stages: list[Stage], *, moved_deals: int
) -> list[Stage]:
    """Mark an emptied stage deleted and renumber the rest; answers the remaining live stages."""
    stage.deleted_at = utcnow()
    stage.version += 1
    remaining = [s for s in stages if s.id != stage.id]
    await _renumber(remaining)
    audit.record(
        session,
        actor=principal,
        entity="stage",
        entity_id=stage.id,
        action="delete",
        changes={"moved_deals": [None, moved_deals]},
    )
    await session.flush()
    return remaining


def stage_probability(stage: Stage) -> Decimal:
    """The default probability of a deal in this stage."""
    return Decimal(stage.probability)

"""Pipelines, their stages, and the board of deals per stage."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.common import Role
from app.models.deal import Board, BoardColumn, DealRead
from app.models.pipeline import (
    PipelineCreate,
    PipelineRead,
    PipelineUpdate,
    StageCreate,
    StageOrder,
    StageRead,
    StageUpdate,
)
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.deals import pipelines as service
from app.services.deals import queries as deal_queries
from app.services.deals import stages as deal_stages

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("pipelines:read"))]
Writer = Annotated[Principal, Depends(require("pipelines:write", Role.admin))]
DealReader = Annotated[Principal, Depends(require("deals:read"))]


@router.get("", response_model=list[PipelineRead], summary="List pipelines")
async def list_pipelines(principal: Reader, session: SessionDep) -> list[PipelineRead]:
    """Every pipeline with its stages in order; the default first."""
    return [service.read_model(p, s) for p, s in await service.list_pipelines(session)]


@router.post(
    "",
    response_model=PipelineRead,
    status_code=status.HTTP_201_CREATED,
    summary="Create a pipeline",
    responses=problem_responses(409),
)
async def create_pipeline(
    body: PipelineCreate, principal: Writer, session: SessionDep, response: Response
) -> PipelineRead:
    """Admins: a pipeline with ordered stages (open ones, then exactly one won and one lost)."""
    pipeline, stages = await service.create_pipeline(session, principal, body)
    set_etag(response, pipeline)
    return service.read_model(pipeline, stages)


@router.get(
    "/{pipeline_id}", response_model=PipelineRead, summary="Get a pipeline", responses=problem_responses(404)
)
async def get_pipeline(
    pipeline_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> PipelineRead:
    """One pipeline with its stages."""
    pipeline, stages = await service.get_pipeline(session, pipeline_id)
    set_etag(response, pipeline)
    return service.read_model(pipeline, stages)


@router.patch(
    "/{pipeline_id}",
    response_model=PipelineRead,
    summary="Change a pipeline",
    responses=problem_responses(404, 409, 412),
)
async def update_pipeline(
    pipeline_id: uuid.UUID,
    body: PipelineUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> PipelineRead:
    """Admins: rename, make default, or set whether accepting a quote wins the deal."""
    pipeline, stages = await service.update_pipeline(
        session, principal, pipeline_id, body, expected_version=version
    )
    set_etag(response, pipeline)
    return service.read_model(pipeline, stages)


@router.post(
    "/{pipeline_id}/stages",
    response_model=PipelineRead,
    status_code=status.HTTP_201_CREATED,
    summary="Add a stage",
    responses=problem_responses(404, 409),
)
async def add_stage(
    pipeline_id: uuid.UUID, body: StageCreate, principal: Writer, session: SessionDep
) -> PipelineRead:
    """Admins: an open stage, appended before the won/lost stages unless `position` is given."""
    pipeline, stages = await service.add_stage(session, principal, pipeline_id, body)
    return service.read_model(pipeline, stages)


@router.put(
    "/{pipeline_id}/stages/order",
    response_model=PipelineRead,
    summary="Reorder stages",
    responses=problem_responses(404),
)
async def reorder_stages(
    pipeline_id: uuid.UUID, body: StageOrder, principal: Writer, session: SessionDep
) -> PipelineRead:
    """Admins: every live stage id in the new order (history is kept: it refers to stage ids)."""
    pipeline, stages = await service.reorder_stages(session, principal, pipeline_id, body.stage_ids)
    return service.read_model(pipeline, stages)


@router.patch(
    "/{pipeline_id}/stages/{stage_id}",
    response_model=StageRead,
    summary="Change a stage",
    responses=problem_responses(404, 412),
)
async def update_stage(
    pipeline_id: uuid.UUID,
    stage_id: uuid.UUID,
    body: StageUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> StageRead:
    """Admins: rename, probability, exit criteria, rotting threshold, follow-up interval."""
    stage = await service.update_stage(
        session, principal, pipeline_id, stage_id, body, expected_version=version
    )
    set_etag(response, stage)
    return StageRead.model_validate(stage)


@router.delete(
    "/{pipeline_id}/stages/{stage_id}",
    response_model=PipelineRead,
    summary="Delete a stage",
    responses=problem_responses(404, 409),
)
async def delete_stage(
    pipeline_id: uuid.UUID,
    stage_id: uuid.UUID,
    principal: Writer,
    session: SessionDep,
    target_stage_id: Annotated[
        uuid.UUID | None, Query(description="Where its deals go (required when it holds deals).")
    ] = None,
) -> PipelineRead:
    """Admins: delete an open stage; its deals move to `target_stage_id`, recorded as stage changes."""
    pipeline, stages = await deal_stages.delete_stage(
        session, principal, pipeline_id, stage_id, target_stage_id=target_stage_id
    )
    return service.read_model(pipeline, stages)


@router.get(
    "/{pipeline_id}/board", response_model=Board, summary="Board of deals", responses=problem_responses(404)
)
async def board(pipeline_id: uuid.UUID, principal: DealReader, session: SessionDep, page: PageDep) -> Board:
    """Per stage: count, amount and weighted amount per currency, and the first page of deals you may see."""
    columns = await deal_queries.board(session, principal, pipeline_id, page)
    return Board(
        pipeline_id=pipeline_id,
        columns=[
            BoardColumn(
                stage=StageRead.model_validate(stage),
                count=count,
                totals=totals,
                deals=[DealRead.model_validate(d) for d in rows],
                next_cursor=cursor,
            )
            for stage, count, totals, rows, cursor in columns
        ],
    )

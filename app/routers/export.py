"""Incremental export for BI tools: NDJSON, CSV, Parquet or JSON pages with a resume cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import StreamingResponse

from app.deps import SessionDep, StateDep, require
from app.errors import problem_responses
from app.models.common import IsoDateTime
from app.models.export import ExportCatalog, ExportPage
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services.export import service
from app.services.export.service import (
    CURSOR_HEADER,
    EXPORT_ID_HEADER,
    HAS_MORE_HEADER,
    MEDIA_TYPES,
    ExportFormat,
)
from app.services.export.stream import page_body

router = APIRouter(prefix="/v1/export", tags=["export"], responses=COMMON_ERRORS)

Exporter = Annotated[Principal, Depends(require(service.SCOPE))]

PAGE_CONTENT: dict[str, Any] = {
    MEDIA_TYPES[ExportFormat.ndjson]: {
        "schema": {"type": "string", "description": "one JSON object per line"}
    },
    MEDIA_TYPES[ExportFormat.csv]: {"schema": {"type": "string", "description": "RFC 4180, header row"}},
    MEDIA_TYPES[ExportFormat.parquet]: {"schema": {"type": "string", "format": "binary"}},
}


@router.get("", response_model=ExportCatalog, summary="List exported entities, their columns and paging")
async def export_catalog(principal: Exporter) -> ExportCatalog:
    """Entities with columns and types, the cursor header's name, change tracking and lag_seconds."""
    return service.catalog()


@router.get(
    "/{entity}",
    response_model=ExportPage,
    status_code=status.HTTP_200_OK,
    summary="Export one page of an entity's changes",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": f"The page; `{CURSOR_HEADER}` is the cursor to resume from (on every page, "
            f"the last included), `{HAS_MORE_HEADER}` whether more rows follow. An empty page means "
            "caught up.",
            "content": PAGE_CONTENT,
        },
        **problem_responses(404),
    },
)
async def export_entity(
    entity: str,
    principal: Exporter,
    session: SessionDep,
    state: StateDep,
    request: Request,
    export_format: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.ndjson,
    cursor: Annotated[
        str | None, Query(description=f"`{CURSOR_HEADER}` (or a row's export_cursor) to resume after.")
    ] = None,
    updated_since: Annotated[
        IsoDateTime | None, Query(description="Start with rows updated at or after this time (RFC 3339).")
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            description=f"Rows per page (default {service.LIMIT_DEFAULT}, capped at {service.LIMIT_MAX}).",
        ),
    ] = None,
) -> StreamingResponse:
    """Rows changed after the cursor in commit-safe order, deletions as tombstones; audited."""
    plan = await service.plan_page(
        session,
        state.reads,
        principal,
        entity,
        export_format=export_format,
        cursor=cursor,
        updated_since=updated_since,
        limit=limit,
    )
    token = plan.next_position.token
    headers = {
        CURSOR_HEADER: token,
        HAS_MORE_HEADER: "true" if plan.has_more else "false",
        EXPORT_ID_HEADER: str(plan.export_id),
        "Cache-Control": "no-store",
    }
    if plan.has_more:
        headers["Link"] = f'<{request.url.include_query_params(cursor=token)}>; rel="next"'
    if export_format in (ExportFormat.csv, ExportFormat.parquet):
        headers["Content-Disposition"] = f'attachment; filename="{plan.entity.name}.{export_format.value}"'
    return StreamingResponse(
        page_body(state.reads, plan), media_type=MEDIA_TYPES[export_format], headers=headers
    )

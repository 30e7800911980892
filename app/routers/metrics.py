"""Metrics (DESIGN.md §7): published definitions and the funnel numbers, as JSON or CSV."""

from __future__ import annotations

import enum
import uuid
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel

from app.deps import ReadSessionDep, require
from app.errors import problem_responses
from app.models.common import BusinessDate, CurrencyCode
from app.models.lead import LeadSource
from app.models.metric_reports import (
    CycleRow,
    ForecastReport,
    FunnelRow,
    LeadFunnelRow,
    MetricReport,
    PipelineRow,
    RepRow,
    VelocityRow,
    WinRateRow,
)
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services.metrics import definitions as definitions_service
from app.services.metrics import forecast as forecast_service
from app.services.metrics import funnel as funnel_service
from app.services.metrics import leads as leads_service
from app.services.metrics import pipeline as pipeline_service
from app.services.metrics import reps as reps_service
from app.services.metrics import snapshots as snapshots_service
from app.services.metrics import wins as wins_service
from app.services.metrics.common import GroupBy, MetricQuery
from app.services.metrics.csv_rows import csv_text

router = APIRouter(
    prefix="/v1/metrics", tags=["metrics"], responses={**COMMON_ERRORS, **problem_responses(503)}
)

Reader = Annotated[Principal, Depends(require("metrics:read"))]
CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV"}
}


class Format(enum.StrEnum):
    """Response format (CSV also with `Accept: text/csv`)."""

    json = "json"
    csv = "csv"


async def metric_query(
    from_: Annotated[
        BusinessDate | None, Query(alias="from", description="First local date (inclusive)")
    ] = None,
    to: Annotated[BusinessDate | None, Query(description="Last local date (exclusive)")] = None,
    pipeline_id: uuid.UUID | None = None,
    owner_id: Annotated[uuid.UUID | None, Query(description="The current owner")] = None,
    team_id: Annotated[uuid.UUID | None, Query(description="The current owner's team")] = None,
    source: Annotated[LeadSource | None, Query(description="The (source lead's) source")] = None,
    currency: CurrencyCode | None = None,
    group_by: GroupBy | None = None,
    convert_to: Annotated[CurrencyCode | None, Query(description="Convert amounts at dated rates")] = None,
) -> MetricQuery:
    """The common filters of every metric."""
    return MetricQuery(
        from_=from_,
        to=to,
        pipeline_id=pipeline_id,
        owner_id=owner_id,
        team_id=team_id,
        source=source,
        currency=currency,
        group_by=group_by,
        convert_to=convert_to,
    )


QueryDep = Annotated[MetricQuery, Depends(metric_query)]


async def wants_csv(
    format: Annotated[Format | None, Query(description="csv: the same rows as CSV")] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> bool:
    """format=csv, or an Accept header asking for text/csv."""
    if format is not None:
        return format == Format.csv
    return bool(accept) and "text/csv" in (accept or "") and "application/json" not in (accept or "")


CsvDep = Annotated[bool, Depends(wants_csv)]


def _answer(report: BaseModel, as_csv: bool, name: str) -> Any:
    if not as_csv:
        return report
    rows = report.model_dump(mode="json", by_alias=True)["rows"]
    return Response(
        csv_text(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="{name}.csv"'},
    )


@router.get(
    "/definitions",
    response_model=definitions_service.Definitions,
    status_code=200,
    summary="Published metric definitions",
)
async def get_definitions(principal: Reader) -> definitions_service.Definitions:
    """Every metric's formula in words and symbols, unit, what is counted and excluded, and the version."""
    return definitions_service.definitions()


@router.get(
    "/funnel",
    response_model=MetricReport[FunnelRow],
    status_code=200,
    summary="Cohort stage funnel",
    responses=CSV,
)
async def get_funnel(principal: Reader, session: ReadSessionDep, query: QueryDep, as_csv: CsvDep) -> Any:
    """Deals created in the period: per stage reached, conversions, drop-off, lost here, and by amount."""
    return _answer(await funnel_service.funnel(session, principal, query), as_csv, "funnel")


@router.get(
    "/pipeline",
    response_model=MetricReport[PipelineRow],
    status_code=200,
    summary="Open pipeline now or as of a date",
    responses=CSV,
)
async def get_pipeline(
    principal: Reader,
    session: ReadSessionDep,
    query: QueryDep,
    as_csv: CsvDep,
    as_of: Annotated[
        BusinessDate | None, Query(description="Local date; the pipeline at the end of that day")
    ] = None,
) -> Any:
    """Open deals per stage (count, amount, weighted amount), reconstructed from history for `as_of`."""
    report = await pipeline_service.pipeline(session, principal, replace(query, as_of=as_of))
    return _answer(report, as_csv, "pipeline")


@router.get(
    "/pipeline/trend",
    response_model=MetricReport[PipelineRow],
    status_code=200,
    summary="Pipeline trend from daily snapshots",
    responses=CSV,
)
async def get_pipeline_trend(
    principal: Reader,
    session: ReadSessionDep,
    query: QueryDep,
    as_csv: CsvDep,
    interval: snapshots_service.Interval = snapshots_service.Interval.day,
) -> Any:
    """The pipeline as of the last day of each day, week or month of the period."""
    report = await snapshots_service.trend(session, principal, query, interval=interval)
    return _answer(report, as_csv, "pipeline-trend")


@router.get(
    "/win-rate", response_model=MetricReport[WinRateRow], status_code=200, summary="Win rate", responses=CSV
)
async def get_win_rate(principal: Reader, session: ReadSessionDep, query: QueryDep, as_csv: CsvDep) -> Any:
    """won / (won + lost) among deals closed in the period, with won and lost amounts."""
    return _answer(await wins_service.win_rate(session, principal, query), as_csv, "win-rate")


@router.get(
    "/cycle",
    response_model=MetricReport[CycleRow],
    status_code=200,
    summary="Sales cycle and time in stage",
    responses=CSV,
)
async def get_cycle(principal: Reader, session: ReadSessionDep, query: QueryDep, as_csv: CsvDep) -> Any:
    """Days created -> won (mean, median, p75) and time in each stage (mean, median)."""
    return _answer(await wins_service.cycle(session, principal, query), as_csv, "cycle")


@router.get(
    "/velocity",
    response_model=MetricReport[VelocityRow],
    status_code=200,
    summary="Pipeline velocity",
    responses=CSV,
)
async def get_velocity(principal: Reader, session: ReadSessionDep, query: QueryDep, as_csv: CsvDep) -> Any:
    """Per currency: open deals × win rate × mean won amount / mean cycle days (money per day)."""
    return _answer(await wins_service.velocity(session, principal, query), as_csv, "velocity")


@router.get(
    "/forecast",
    response_model=ForecastReport,
    status_code=200,
    summary="Forecast and attainment",
    responses=CSV,
)
async def get_forecast(principal: Reader, session: ReadSessionDep, query: QueryDep, as_csv: CsvDep) -> Any:
    """Open deals by expected close month and forecast category; won in the period against targets."""
    return _answer(await forecast_service.forecast(session, principal, query), as_csv, "forecast")


@router.get(
    "/lead-funnel",
    response_model=MetricReport[LeadFunnelRow],
    status_code=200,
    summary="Lead funnel and speed to lead",
    responses=CSV,
)
async def get_lead_funnel(principal: Reader, session: ReadSessionDep, query: QueryDep, as_csv: CsvDep) -> Any:
    """Leads created in the period: contacted, qualified, converted, won; speed to lead median and p90."""
    return _answer(await leads_service.lead_funnel(session, principal, query), as_csv, "lead-funnel")


@router.get(
    "/reps", response_model=MetricReport[RepRow], status_code=200, summary="Rep performance", responses=CSV
)
async def get_reps(principal: Reader, session: ReadSessionDep, query: QueryDep, as_csv: CsvDep) -> Any:
    """Per current owner: leads, won deals and amounts, win rate, target and attainment."""
    return _answer(await reps_service.reps(session, principal, query), as_csv, "reps")

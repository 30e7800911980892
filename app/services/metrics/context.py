"""The context of one metrics request: who asks, the filters, the local period, the stage catalogue
and the converter, resolved in as few round trips as possible; and the common response envelope."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.security import Principal
from app.services.metrics.common import (
    DEFINITION_VERSION,
    GroupBy,
    MetricQuery,
    Period,
    check_group_by,
    fetch,
    invalid,
    resolve_period,
)
from app.services.metrics.conversion import Converter, Money


@dataclass(frozen=True)
class StageInfo:
    """A stage as metrics need it."""

    id: uuid.UUID
    pipeline_id: uuid.UUID
    key: str
    name: str
    kind: str
    position: int
    forecast_category: str
    live: bool
    pipeline_rank: int


@dataclass
class Context:
    """One metrics request: who asks, the filters, the period, the stages, the converter."""

    principal: Principal
    query: MetricQuery
    period: Period
    stages: dict[uuid.UUID, StageInfo]
    converter: Converter | None

    @property
    def tz(self) -> str:
        """The organisation's timezone."""
        return self.period.tz

    def base_params(self) -> dict[str, Any]:
        """Parameters every statement may use."""
        return {
            "org_id": self.principal.org_id,
            "tz": self.tz,
            "t0": self.period.start_at,
            "t1": self.period.end_at,
            "today": self.period.today,
            "d0": self.period.start,
            "d1": self.period.end,
        }

    def conversion_day(self, closed_column: str, open_day: str = ":today") -> str:
        """SQL of the local date a deal's amount converts at (close date, else `open_day`); NULL
        without convert_to, so grouping by it costs nothing then."""
        if self.converter is None:
            return "NULL::date"
        return f"COALESCE(({closed_column} AT TIME ZONE :tz)::date, {open_day})"

    def new_money(self) -> Money:
        """An exact per-currency (or converted) accumulator."""
        return Money(self.converter)

    def default_pipeline_id(self) -> uuid.UUID | None:
        """The organisation's default pipeline."""
        return next((s.pipeline_id for s in self.stages.values() if s.pipeline_rank == 0), None)

    def ordered_stages(self, pipeline_id: uuid.UUID | None = None) -> list[StageInfo]:
        """Stages in pipeline order (the default pipeline first), then position."""
        stages = [s for s in self.stages.values() if pipeline_id is None or s.pipeline_id == pipeline_id]
        return sorted(stages, key=lambda s: (s.pipeline_rank, str(s.pipeline_id), s.position, str(s.id)))


async def stage_catalog(session: AsyncSession, org_id: uuid.UUID) -> tuple[str, dict[uuid.UUID, StageInfo]]:
    """The organisation's timezone and every stage (deleted ones too: history points at them), in
    one round trip."""
    rows = await fetch(
        session,
        "SELECT COALESCE(o.settings->>'timezone', 'UTC'), s.id, s.pipeline_id, s.key, "
        "COALESCE(NULLIF(s.name_en, ''), s.name), s.kind, s.position, s.forecast_category, "
        "s.deleted_at IS NULL, CASE WHEN p.is_default THEN 0 ELSE 1 END "
        "FROM organisations o "
        "LEFT JOIN stages s ON s.org_id = o.id "
        "LEFT JOIN pipelines p ON p.org_id = s.org_id AND p.id = s.pipeline_id "
        "WHERE o.id = :org_id",
        {"org_id": org_id},
    )
    tz = rows[0][0] if rows else "UTC"
    return tz, {r[1]: StageInfo(*r[1:]) for r in rows if r[1] is not None}


async def context(
    session: AsyncSession,
    principal: Principal,
    query: MetricQuery,
    *,
    group_by: Iterable[GroupBy] = (),
    convertible: bool = True,
) -> Context:
    """Check the query against what the metric supports and resolve what every metric needs."""
    check_group_by(query, group_by)
    if query.convert_to is not None and not convertible:
        raise invalid("convert_to", "unsupported", "this metric reports per currency only")
    tz, stages = await stage_catalog(session, principal.org_id)
    period = resolve_period(query, tz)
    converter = (
        await Converter.load(session, principal.org_id, query.convert_to)
        if query.convert_to is not None
        else None
    )
    return Context(principal, query, period, stages, converter)


def envelope(ctx: Context, metric: str) -> dict[str, Any]:
    """The common part of every response."""
    return {
        "metric": metric,
        "definition_version": DEFINITION_VERSION,
        "filters": ctx.query.echo(),
        "period": {"from_": ctx.period.start, "to": ctx.period.end, "timezone": ctx.tz},
        "rates_used": ctx.converter.rates_used() if ctx.converter else [],
    }

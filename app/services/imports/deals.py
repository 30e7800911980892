"""History import of deals (`POST /v1/import/deals`): one deal a line with its stage history.

A line: external_id, pipeline (id or name; default pipeline), name, account_name, owner_email, amount,
currency, created_at, expected_close_date, status (open | won | lost) with closed_at and lost_reason,
and stage_history `[{stage, entered_at}]` (stage key or id; in order; the last is the current stage; the
first entry's entered_at defaults to created_at). A won or lost deal whose history ends in an open stage
enters the won or lost stage at closed_at.

The timestamps are kept as given and written exactly as live changes write them: a stage-history row
per entry and field-history rows (status, amount, currency, probability, expected close date, owner) at
creation and at each stage entry, so every metric sees imported deals as it sees live ones.
"""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.account import Account
from app.models.base import utcnow
from app.models.common import CurrencyCode
from app.models.deal import Deal, DealFieldHistory, DealStageHistory, DealStatus
from app.models.metrics import ImportKind, ImportRecord
from app.models.organisation import Organisation
from app.models.pipeline import Pipeline, Stage, StageKind
from app.models.user import User
from app.money import fits_currency, plain_percent, round_money
from app.security import Principal
from app.services import audit
from app.services.imports.ndjson import ImportReport, check_not_future, reject, run_import
from app.services.metrics.common import org_timezone
from app.services.metrics.snapshots import forget_from


class StageEntry(BaseModel):
    """One stage the deal entered, and when."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(min_length=1, max_length=64)
    entered_at: AwareDatetime | None = None


class DealLine(BaseModel):
    """One line of a deal import."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=200)
    pipeline: str | None = Field(default=None, max_length=200)
    name: str = Field(min_length=1, max_length=300)
    account_name: str | None = Field(default=None, max_length=300)
    owner_email: str | None = Field(default=None, max_length=320)
    amount: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode | None = None
    created_at: AwareDatetime
    expected_close_date: date | None = None
    status: DealStatus = DealStatus.open
    closed_at: AwareDatetime | None = None
    lost_reason: str | None = Field(default=None, max_length=200)
    stage_history: list[StageEntry] = Field(min_length=1, max_length=1000)


@dataclass
class _Catalog:
    """What lines refer to, loaded once per import."""

    base_currency: str
    default_pipeline: uuid.UUID | None
    pipelines: dict[str, uuid.UUID]
    stages: dict[uuid.UUID, list[Stage]]
    users: dict[str, uuid.UUID]
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)
    earliest: datetime | None = None


async def _catalog(session: AsyncSession, org_id: uuid.UUID) -> _Catalog:
    org = await session.get(Organisation, org_id)
    pipelines = list((await session.execute(select(Pipeline))).scalars())
    stages: dict[uuid.UUID, list[Stage]] = {}
    for stage in (await session.execute(select(Stage).order_by(col(Stage.position)))).scalars():
        stages.setdefault(stage.pipeline_id, []).append(stage)
    users = {u.email.lower(): u.id for u in (await session.execute(select(User))).scalars()}
    catalog = _Catalog(
        base_currency=org.typed_settings().base_currency if org else "USD",
        default_pipeline=next((p.id for p in pipelines if p.is_default), None),
        pipelines={**{p.name: p.id for p in pipelines}, **{str(p.id): p.id for p in pipelines}},
        stages=stages,
        users=users,
    )
    session.expunge_all()
    return catalog


def _stage_of(stages: list[Stage], ref: str, index: int) -> Stage:
    for stage in stages:
        if stage.key == ref or str(stage.id) == ref:
            return stage
    raise reject(f"stage_history.{index}.stage", "unknown_stage", f"no stage {ref!r} in the deal's pipeline")


@dataclass
class _Plan:
    """A validated line: the stages entered with their times, the closing, the owner."""

    pipeline_id: uuid.UUID
    entries: list[tuple[Stage, datetime]]
    owner_id: uuid.UUID | None
    currency: str
    closed_at: datetime | None


def _plan(line: DealLine, catalog: _Catalog, now: datetime) -> _Plan:
    pipeline_id = catalog.default_pipeline if line.pipeline is None else catalog.pipelines.get(line.pipeline)
    if pipeline_id is None:
        raise reject("pipeline", "unknown_pipeline", f"no pipeline {line.pipeline!r}")
    stages = catalog.stages.get(pipeline_id, [])
    check_not_future("created_at", line.created_at, now)
    check_not_future("closed_at", line.closed_at, now)
    if line.closed_at is not None and line.closed_at < line.created_at:
        raise reject("closed_at", "before_created", "closed_at is before created_at")
    entries: list[tuple[Stage, datetime]] = []
    previous = line.created_at
    for i, entry in enumerate(line.stage_history):
        stage = _stage_of(stages, entry.stage, i)
        at = entry.entered_at
        if at is None:
            if i:
                raise reject(
                    f"stage_history.{i}.entered_at", "missing", "every entry after the first needs entered_at"
                )
            at = line.created_at
        if i == 0 and at != line.created_at:
            raise reject(
                "stage_history.0.entered_at",
                "not_created_at",
                "the first stage is entered when the deal is created",
            )
        check_not_future(f"stage_history.{i}.entered_at", at, now)
        if at < previous:
            raise reject(
                f"stage_history.{i}.entered_at", "out_of_order", "stage history must be in time order"
            )
        previous = at
        entries.append((stage, at))
    if entries[0][0].kind != StageKind.open:
        raise reject("stage_history.0.stage", "not_an_open_stage", "a deal starts in an open stage")
    last = entries[-1][0]
    closed_at = line.closed_at
    if line.status == DealStatus.open:
        if last.kind != StageKind.open:
            raise reject("status", "status_mismatch", "an open deal's last stage must be an open stage")
        if closed_at is not None:
            raise reject("closed_at", "not_closed", "an open deal has no closed_at")
    else:
        kind = StageKind.won if line.status == DealStatus.won else StageKind.lost
        if last.kind == StageKind.open:
            if closed_at is None:
                raise reject("closed_at", "missing", f"a {line.status} deal needs closed_at")
            if closed_at < entries[-1][1]:
                raise reject(
                    "closed_at", "before_last_stage", "closed_at is before the last stage was entered"
                )
            closing = next((s for s in stages if s.kind == kind and s.deleted_at is None), None)
            if closing is None:
                raise reject("status", "no_closing_stage", f"the pipeline has no {kind} stage")
            entries.append((closing, closed_at))
        elif last.kind != kind:
            raise reject(
                "status", "status_mismatch", f"a {line.status} deal's last stage must be the {kind} stage"
            )
        elif closed_at is None:
            closed_at = entries[-1][1]
        elif closed_at != entries[-1][1]:
            raise reject(
                "closed_at", "not_stage_entry", "closed_at must be when the closing stage was entered"
            )
    if closed_at is not None and closed_at < line.created_at:
        raise reject("closed_at", "before_created", "closed_at is before created_at")
    owner_id = None
    if line.owner_email is not None:
        owner_id = catalog.users.get(line.owner_email.strip().lower())
        if owner_id is None:
            raise reject("owner_email", "unknown_owner", f"no user {line.owner_email!r}")
    currency = line.currency or catalog.base_currency
    if line.amount is not None and not fits_currency(line.amount, currency):
        raise reject("amount", "too_many_decimals", f"{currency} amounts have at most its minor-unit digits")
    return _Plan(pipeline_id, entries, owner_id, currency, closed_at)


def _history(deal: Deal, plan: _Plan) -> list[Any]:
    """The stage and field history live changes would have written, at the imported times."""
    rows: list[Any] = []
    created = plan.entries[0][1]
    amount = None if deal.amount is None else str(round_money(Decimal(deal.amount), deal.currency))
    initial = {
        "status": "open",
        "amount": amount,
        "currency": deal.currency,
        "probability": str(plain_percent(Decimal(plan.entries[0][0].probability))),
        "expected_close_date": deal.expected_close_date.isoformat() if deal.expected_close_date else None,
        "owner_id": str(deal.owner_id) if deal.owner_id else None,
    }
    for name, value in initial.items():
        if value is not None:
            rows.append(
                DealFieldHistory(deal_id=deal.id, field=name, old_value=None, new_value=value, at=created)
            )
    status, probability = "open", initial["probability"]
    previous: uuid.UUID | None = None
    for stage, at in plan.entries:
        rows.append(
            DealStageHistory(
                deal_id=deal.id,
                pipeline_id=plan.pipeline_id,
                from_stage_id=previous,
                to_stage_id=stage.id,
                at=at,
            )
        )
        new_status = "open" if stage.kind == StageKind.open else str(stage.kind)
        new_probability = str(plain_percent(Decimal(stage.probability)))
        if previous is not None and new_status != status:
            rows.append(
                DealFieldHistory(
                    deal_id=deal.id, field="status", old_value=status, new_value=new_status, at=at
                )
            )
        if previous is not None and new_probability != probability:
            rows.append(
                DealFieldHistory(
                    deal_id=deal.id,
                    field="probability",
                    old_value=probability,
                    new_value=new_probability,
                    at=at,
                )
            )
        status, probability, previous = new_status, new_probability, stage.id
    return rows


async def _account_id(
    session: AsyncSession, catalog: _Catalog, name: str | None, *, dry_run: bool
) -> uuid.UUID | None:
    if name is None:
        return None
    if name in catalog.accounts:
        return catalog.accounts[name]
    found = (
        await session.execute(select(col(Account.id)).where(col(Account.name) == name).limit(1))
    ).scalar()
    if found is None and not dry_run:
        account = Account(name=name)
        session.add(account)
        await session.flush()
        found = account.id
    if found is not None:
        catalog.accounts[name] = found
    return found


async def import_deals(
    session: AsyncSession, principal: Principal, stream: AsyncIterator[bytes], *, dry_run: bool
) -> ImportReport:
    """Import (or dry-run) deal lines; admins only."""
    catalog = await _catalog(session, principal.org_id)
    now = utcnow()

    async def handle(number: int, obj: dict[str, Any], digest: str) -> str:
        line = DealLine.model_validate(obj)
        plan = _plan(line, catalog, now)
        record = (
            await session.execute(
                select(ImportRecord).where(
                    col(ImportRecord.kind) == ImportKind.deal.value,
                    col(ImportRecord.external_id) == line.external_id,
                )
            )
        ).scalar_one_or_none()
        if record is not None and record.checksum == digest and record.deal_id is not None:
            return "unchanged"
        if dry_run:
            return "created" if record is None or record.deal_id is None else "updated"
        account_id = await _account_id(session, catalog, line.account_name, dry_run=dry_run)
        last_stage, last_at = plan.entries[-1]
        values: dict[str, Any] = {
            "pipeline_id": plan.pipeline_id,
            "stage_id": last_stage.id,
            "name": line.name,
            "account_id": account_id,
            "owner_id": plan.owner_id,
            "amount": line.amount,
            "currency": plan.currency,
            "probability": last_stage.probability,
            "probability_overridden": False,
            "expected_close_date": line.expected_close_date,
            "status": line.status,
            "lost_reason": line.lost_reason if line.status == DealStatus.lost else None,
            "stage_entered_at": last_at,
            "last_activity_at": last_at,
            "closed_at": plan.closed_at,
            "created_at": line.created_at,
            "updated_at": now,
        }
        deal = None
        if record is not None and record.deal_id is not None:
            # By id under the session's organisation scope (works whatever the primary key's shape).
            stmt = select(Deal).where(col(Deal.id) == record.deal_id)
            deal = (await session.execute(stmt)).scalar_one_or_none()
        earliest = line.created_at if deal is None else min(line.created_at, deal.created_at)
        if deal is None:
            deal = Deal(**values)
            session.add(deal)
            await session.flush()
            outcome = "created"
        else:
            for name, value in values.items():
                setattr(deal, name, value)
            deal.version += 1
            await session.execute(delete(DealStageHistory).where(col(DealStageHistory.deal_id) == deal.id))
            await session.execute(delete(DealFieldHistory).where(col(DealFieldHistory.deal_id) == deal.id))
            outcome = "updated"
        session.add_all(_history(deal, plan))
        if record is None:
            session.add(
                ImportRecord(
                    kind=ImportKind.deal, external_id=line.external_id, deal_id=deal.id, checksum=digest
                )
            )
        else:
            record.deal_id, record.checksum, record.updated_at = deal.id, digest, now
        audit.record(
            session,
            actor=principal,
            entity="deal",
            entity_id=deal.id,
            action="import",
            changes={
                "external_id": [None, line.external_id],
                "line": [None, number],
                "outcome": [None, outcome],
            },
        )
        catalog.earliest = earliest if catalog.earliest is None else min(catalog.earliest, earliest)
        return outcome

    report = await run_import(session, principal, stream, dry_run=dry_run, handle=handle)
    if catalog.earliest is not None:
        tz = await org_timezone(session, principal.org_id)
        await forget_from(session, principal.org_id, _local_date(catalog.earliest, tz))
    return report


def _local_date(at: datetime, tz: str) -> date:
    return at.astimezone(zoneinfo.ZoneInfo(tz)).date()

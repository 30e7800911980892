"""History import of leads (`POST /v1/import/leads`): one lead a line, kept as it was.

A line: external_id, name, email, phone, company, title, country, industry, message, attributes,
source (web_form | email | webhook | api | import; default import), owner_email, status, status_reason,
created_at, first_contacted_at, converted_at, and converted_deal_external_id (a deal imported before,
in this file or an earlier one; it makes the lead converted and the deal's source lead). History is
not deduplicated against live leads: it is what happened. No assignment runs on imported leads.
"""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import AsyncIterator
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import utcnow
from app.models.common import CountryCode
from app.models.deal import Deal
from app.models.lead import Lead, LeadSource, LeadStatus
from app.models.metrics import ImportKind, ImportRecord
from app.models.user import User
from app.security import Principal
from app.services import audit
from app.services.imports.ndjson import ImportReport, check_not_future, reject, run_import
from app.services.leads.normalise import normalise_email
from app.services.metrics.common import org_timezone
from app.services.metrics.snapshots import forget_from


class LeadLine(BaseModel):
    """One line of a lead import."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=300)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    company: str | None = Field(default=None, max_length=300)
    title: str | None = Field(default=None, max_length=300)
    country: CountryCode | None = None
    industry: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, max_length=100_000)
    attributes: dict[str, Any] = Field(default_factory=dict)
    source: LeadSource = LeadSource.import_
    owner_email: str | None = Field(default=None, max_length=320)
    status: LeadStatus = LeadStatus.new
    status_reason: str | None = Field(default=None, max_length=500)
    created_at: AwareDatetime
    first_contacted_at: AwareDatetime | None = None
    converted_at: AwareDatetime | None = None
    converted_deal_external_id: str | None = Field(default=None, max_length=200)


async def import_leads(
    session: AsyncSession, principal: Principal, stream: AsyncIterator[bytes], *, dry_run: bool
) -> ImportReport:
    """Import (or dry-run) lead lines; admins only."""
    users = {u.email.lower(): u.id for u in (await session.execute(select(User))).scalars()}
    session.expunge_all()
    now = utcnow()
    earliest: list[Any] = []

    async def deal_of(external_id: str) -> uuid.UUID | None:
        return (
            await session.execute(
                select(col(ImportRecord.deal_id)).where(
                    col(ImportRecord.kind) == ImportKind.deal.value,
                    col(ImportRecord.external_id) == external_id,
                )
            )
        ).scalar()

    async def handle(number: int, obj: dict[str, Any], digest: str) -> str:
        line = LeadLine.model_validate(obj)
        check_not_future("created_at", line.created_at, now)
        check_not_future("first_contacted_at", line.first_contacted_at, now)
        check_not_future("converted_at", line.converted_at, now)
        if line.first_contacted_at is not None and line.first_contacted_at < line.created_at:
            raise reject("first_contacted_at", "before_created", "first contact is before created_at")
        if line.converted_at is not None and line.converted_at < line.created_at:
            raise reject("converted_at", "before_created", "conversion is before created_at")
        email = None
        if line.email:
            try:
                email = normalise_email(line.email)
            except ValueError as exc:
                raise reject("email", "invalid_email", str(exc)) from exc
        owner_id = None
        if line.owner_email is not None:
            owner_id = users.get(line.owner_email.strip().lower())
            if owner_id is None:
                raise reject("owner_email", "unknown_owner", f"no user {line.owner_email!r}")
        deal_id = None
        if line.converted_deal_external_id is not None:
            deal_id = await deal_of(line.converted_deal_external_id)
            if deal_id is None:
                raise reject(
                    "converted_deal_external_id",
                    "unknown_deal",
                    f"no imported deal {line.converted_deal_external_id!r}",
                )
            if line.status not in (LeadStatus.converted, LeadStatus.new):
                raise reject("status", "status_mismatch", "a lead converted to a deal has status converted")
        status = LeadStatus.converted if deal_id is not None else line.status
        record = (
            await session.execute(
                select(ImportRecord).where(
                    col(ImportRecord.kind) == ImportKind.lead.value,
                    col(ImportRecord.external_id) == line.external_id,
                )
            )
        ).scalar_one_or_none()
        if record is not None and record.checksum == digest and record.lead_id is not None:
            return "unchanged"
        if dry_run:
            return "created" if record is None or record.lead_id is None else "updated"
        values: dict[str, Any] = {
            "name": line.name,
            "email": email,
            "phone": line.phone,
            "company": line.company,
            "title": line.title,
            "country": line.country,
            "industry": line.industry,
            "message": line.message,
            "attributes": line.attributes,
            "source": line.source,
            "source_detail": {"import": {"external_id": line.external_id, "line": number}},
            "status": status,
            "status_reason": line.status_reason,
            "owner_id": owner_id,
            "pooled": owner_id is None,
            "assigned_at": line.created_at if owner_id is not None else None,
            "first_contacted_at": line.first_contacted_at,
            "last_touch_at": line.first_contacted_at,
            "converted_at": line.converted_at or (line.created_at if deal_id is not None else None),
            "converted_deal_id": deal_id,
            "created_at": line.created_at,
            "updated_at": now,
        }
        lead = None
        if record is not None and record.lead_id is not None:
            # By id under the session's organisation scope (works whatever the primary key's shape).
            stmt = select(Lead).where(col(Lead.id) == record.lead_id)
            lead = (await session.execute(stmt)).scalar_one_or_none()
        if lead is None:
            lead = Lead(**values)
            session.add(lead)
            await session.flush()
            outcome = "created"
        else:
            earliest.append(lead.created_at)
            for name, value in values.items():
                setattr(lead, name, value)
            lead.version += 1
            outcome = "updated"
        if deal_id is not None:
            await session.execute(update(Deal).where(col(Deal.id) == deal_id).values(lead_id=lead.id))
        if record is None:
            session.add(
                ImportRecord(
                    kind=ImportKind.lead, external_id=line.external_id, lead_id=lead.id, checksum=digest
                )
            )
        else:
            record.lead_id, record.checksum, record.updated_at = lead.id, digest, now
        audit.record(
            session,
            actor=principal,
            entity="lead",
            entity_id=lead.id,
            action="import",
            changes={
                "external_id": [None, line.external_id],
                "line": [None, number],
                "outcome": [None, outcome],
            },
        )
        earliest.append(line.created_at)
        return outcome

    report = await run_import(session, principal, stream, dry_run=dry_run, handle=handle)
    if earliest:
        # A converted deal's source changed: the snapshots do not hold source, but drop them anyway
        # so every number of the rewritten past is recomputed the same way.
        tz = await org_timezone(session, principal.org_id)
        await forget_from(session, principal.org_id, min(earliest).astimezone(zoneinfo.ZoneInfo(tz)).date())
    return report

"""Leads, their activities (timeline), and scoring rules."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field, field_validator
from sqlalchemy import ColumnElement, Index, String, Text, and_, text
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel, col

from app.models import examples as ex
from app.models.base import (
    IdMixin,
    JsonField,
    TenantMixin,
    TimestampField,
    TimestampsMixin,
    VersionMixin,
    tenant_fk,
)
from app.models.common import CountryCode, Input, Patch


class LeadStatus(enum.StrEnum):
    """new -> working -> qualified | unqualified -> converted."""

    new = "new"
    working = "working"
    qualified = "qualified"
    unqualified = "unqualified"
    converted = "converted"


# What an "open" lead is (a dedupe target, claimable, assignable, convertible, counted against the
# claim limit): one of these statuses, and not merged away, deleted or erased. Defined once here as
# the tuple, `Lead.is_open`, `OPEN_LEAD` (SQLAlchemy) and `OPEN_LEAD_SQL` (its text); the plpgsql
# dedupe function of migration c3b1leads0001 is checked against them by tests/models/test_lead_open.py.
OPEN_STATUSES = (LeadStatus.new, LeadStatus.working, LeadStatus.qualified)
# OPEN_LEAD_SQL without the table name, usable inside the table's own definition (the predicate
# of the partial index ix_leads_owned_open); tests/models/test_lead_open.py keeps them equal.
OWNED_OPEN_SQL = (
    "status IN (" + ", ".join(f"'{s.value}'" for s in OPEN_STATUSES) + ")"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)


class LeadSource(enum.StrEnum):
    """How the lead reached us."""

    web_form = "web_form"
    email = "email"
    webhook = "webhook"
    api = "api"
    import_ = "import"


class ActivityKind(enum.StrEnum):
    """What happened: the first outbound call/email/meeting marks the lead contacted."""

    call = "call"
    email = "email"
    meeting = "meeting"
    note = "note"
    task = "task"


class Direction(enum.StrEnum):
    """Inbound touches come from the lead (intake); outbound ones from a rep."""

    inbound = "inbound"
    outbound = "outbound"


CONTACT_KINDS = frozenset({ActivityKind.call, ActivityKind.email, ActivityKind.meeting})


class FieldNote(BaseModel):
    """Something the server did with a field instead of storing it as sent (not an error)."""

    field: str
    code: str
    message: str


def phone_note(phone: str | None, phone_raw: str | None) -> FieldNote | None:
    """Why a lead's `phone` is empty while `phone_raw` holds what was sent (None when it is not)."""
    if phone or not phone_raw:
        return None
    return FieldNote(
        field="phone",
        code="invalid_phone",
        message=(
            f"{phone_raw!r} is not a valid phone number in the lead's country, the intake source's "
            "default country or the organisation's default phone country, so it is kept as sent in "
            "phone_raw, not in phone, and not used to find duplicates. Send it with its country code "
            "(e.g. +86 138 0013 8000) or with the lead's country."
        ),
    )


class LeadFields(SQLModel):
    """The lead's contact fields, one definition for the table and the bodies that write them
    (the API's LeadRead lists them without limits, as the published document always has)."""

    name: str | None = Field(default=None, max_length=300)
    email: str | None = Field(default=None, max_length=320)
    # As sent (spaces, dashes, a national prefix); stored normalised to E.164, which is shorter.
    phone: str | None = Field(default=None, max_length=64)
    company: str | None = Field(default=None, max_length=300)
    title: str | None = Field(default=None, max_length=300)
    country: CountryCode | None = None
    industry: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, max_length=100_000)


class Lead(LeadFields, IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A person who may buy: captured, de-duplicated, pooled or owned, qualified, converted."""

    __tablename__ = "leads"
    __table_args__ = (
        Index("ix_leads_org_email", "org_id", "email"),
        Index("ix_leads_org_phone", "org_id", "phone"),
        tenant_fk("leads", "source_id", "intake_sources", ondelete="SET NULL"),
        tenant_fk("leads", "owner_id", "users", ondelete="SET NULL"),
        tenant_fk("leads", "team_id", "teams", ondelete="SET NULL"),
        tenant_fk("leads", "duplicate_of", "leads", ondelete="SET NULL"),
        tenant_fk("leads", "possible_duplicate_of", "leads", ondelete="SET NULL"),
        # The recycle sweep reads owned open leads only, not every lead ever converted or merged.
        # Assignment reads its candidates' load from it (migration speed0003ownedload).
        Index(
            "ix_leads_owned_open",
            "org_id",
            "owner_id",
            postgresql_include=["assigned_at"],
            postgresql_where=text(f"owner_id IS NOT NULL AND {OWNED_OPEN_SQL}"),
        ),
        # Leads waiting for an owner, oldest first: an assignment job that is behind takes them
        # along (engine.assign_created_leads; migration speed0004pooled).
        Index(
            "ix_leads_pooled_open",
            "org_id",
            "created_at",
            postgresql_where=text(f"owner_id IS NULL AND {OWNED_OPEN_SQL}"),
        ),
        # Fuzzy-duplicate candidates (leads.ingest.find_fuzzy): open leads with the same
        # normalised company or name, oldest first, a bounded index range (migration speed0001fuzz).
        Index(
            "ix_leads_fuzzy_company",
            "org_id",
            text("loudou_company_key(company)"),
            "created_at",
            postgresql_include=["id", "name", "company"],
            # Each index requires its own key, so neither can serve the other's look-up
            # (migration speed0002fuzzapart).
            postgresql_where=text(
                f"name IS NOT NULL AND company IS NOT NULL AND {OWNED_OPEN_SQL}"
                " AND loudou_company_key(company) IS NOT NULL"
            ),
        ),
        Index(
            "ix_leads_fuzzy_name",
            "org_id",
            text("loudou_name_key(name)"),
            "created_at",
            postgresql_include=["id", "name", "company"],
            postgresql_where=text(
                f"name IS NOT NULL AND company IS NOT NULL AND {OWNED_OPEN_SQL}"
                " AND loudou_name_key(name) IS NOT NULL"
            ),
        ),
    )

    # status, source and pooled are not indexed: lists filter them within an organisation (few
    # distinct values), and every index costs the intake hot path an insert.
    status: LeadStatus = Field(default=LeadStatus.new, sa_type=String(16))
    status_reason: str | None = Field(default=None, max_length=500)
    source: LeadSource = Field(default=LeadSource.api, sa_type=String(16))
    source_id: uuid.UUID | None = Field(default=None, index=True)
    source_detail: dict[str, Any] = JsonField()

    # What was sent when it is not a valid phone number (phone stays empty): never deduped on.
    phone_raw: str | None = Field(default=None, sa_type=Text)
    # The columns of LeadFields stored otherwise than the bodies limit them: a checked code, text.
    country: str | None = Field(default=None, max_length=2)
    message: str | None = Field(default=None, sa_type=Text)
    attributes: dict[str, Any] = JsonField()
    tags: list[str] = JsonField(default_factory=list)

    score: int = Field(default=0)
    score_breakdown: list[dict[str, Any]] = JsonField(default_factory=list)

    owner_id: uuid.UUID | None = Field(default=None, index=True)
    team_id: uuid.UUID | None = Field(default=None, index=True)
    pooled: bool = Field(default=True)
    assigned_at: datetime | None = TimestampField(nullable=True, default_now=False)
    first_contacted_at: datetime | None = TimestampField(nullable=True, default_now=False)
    last_touch_at: datetime | None = TimestampField(nullable=True, default_now=False)
    touch_count: int = Field(default=0)

    duplicate_of: uuid.UUID | None = Field(default=None)
    possible_duplicate_of: uuid.UUID | None = Field(default=None)
    # Filled by conversion (another domain); plain ids until those tables exist on this branch.
    converted_at: datetime | None = TimestampField(nullable=True, default_now=False)
    converted_account_id: uuid.UUID | None = Field(default=None)
    converted_contact_id: uuid.UUID | None = Field(default=None)
    converted_deal_id: uuid.UUID | None = Field(default=None)

    deleted_at: datetime | None = TimestampField(nullable=True, default_now=False)
    erased_at: datetime | None = TimestampField(nullable=True, default_now=False)

    @property
    def is_open(self) -> bool:
        """Whether the lead is open (see OPEN_STATUSES): what `OPEN_LEAD` selects."""
        return (
            self.status in OPEN_STATUSES
            and self.duplicate_of is None
            and self.deleted_at is None
            and self.erased_at is None
        )


OPEN_LEAD: ColumnElement[bool] = and_(
    col(Lead.status).in_([s.value for s in OPEN_STATUSES]),
    col(Lead.duplicate_of).is_(None),
    col(Lead.deleted_at).is_(None),
    col(Lead.erased_at).is_(None),
)
"""The SQL condition of an open lead (built once: expressions are immutable and cheap to reuse)."""

OPEN_LEAD_SQL: str = str(
    OPEN_LEAD.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})  # type: ignore[no-untyped-call]
)
"""`OPEN_LEAD` as SQL text, for raw statements over `leads`."""


class LeadCreate(LeadFields, Input):
    """POST /v1/leads: at least an email or a phone."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.LEAD_CREATE))

    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    owner_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None


class LeadUpdate(LeadFields, Patch):
    """PATCH /v1/leads/{id}: only what is sent changes."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.LEAD_UPDATE))  # type: ignore[assignment]
    not_null = ("status",)

    attributes: dict[str, Any] | None = None
    tags: list[str] | None = None
    status: LeadStatus | None = None
    possible_duplicate_of: uuid.UUID | None = None


class LeadRead(SQLModel):
    """A lead as the API shows it."""

    id: uuid.UUID
    org_id: uuid.UUID
    status: LeadStatus
    status_reason: str | None
    source: LeadSource
    source_id: uuid.UUID | None
    source_detail: dict[str, Any]
    name: str | None
    email: str | None
    phone: str | None = Field(description="E.164, only for numbers that are valid (phonenumbers).")
    phone_raw: str | None = Field(
        default=None, description="The phone as sent when it is not a valid number; see `notes`."
    )
    company: str | None
    title: str | None
    country: str | None
    industry: str | None
    message: str | None
    attributes: dict[str, Any]
    tags: list[str]
    score: int
    score_breakdown: list[dict[str, Any]]
    owner_id: uuid.UUID | None
    team_id: uuid.UUID | None
    pooled: bool
    assigned_at: datetime | None
    first_contacted_at: datetime | None
    last_touch_at: datetime | None
    touch_count: int
    duplicate_of: uuid.UUID | None
    possible_duplicate_of: uuid.UUID | None
    converted_at: datetime | None
    converted_account_id: uuid.UUID | None
    converted_contact_id: uuid.UUID | None
    converted_deal_id: uuid.UUID | None
    deleted_at: datetime | None
    erased_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def notes(self) -> list[FieldNote]:
        """What was not stored as sent, and why (e.g. a phone kept in phone_raw)."""
        note = phone_note(self.phone, self.phone_raw)
        return [note] if note else []


class LeadAssign(Input):
    """POST /v1/leads/{id}/assign."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.LEAD_ASSIGN))

    owner_id: uuid.UUID
    team_id: uuid.UUID | None = None


class LeadReason(Input):
    """POST /v1/leads/{id}/disqualify (reason required) and /qualify (optional note)."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.LEAD_REASON))

    reason: str | None = Field(default=None, min_length=1, max_length=500)


class LeadMerge(Input):
    """POST /v1/leads/{id}/merge: fold `duplicate_id` into this lead."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.LEAD_MERGE))

    duplicate_id: uuid.UUID


class Activity(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """Something that happened with a lead: a call, an email, a meeting, a note or a task."""

    __tablename__ = "activities"
    __table_args__ = (
        # The overdue sweep reads open tasks with a due time only, not every task ever done.
        Index(
            "ix_activities_open_due",
            "due_at",
            postgresql_where=text("done_at IS NULL AND due_at IS NOT NULL"),
        ),
        Index(
            "ix_activities_org_message_id",
            "org_id",
            "message_id",
            postgresql_where=text("message_id IS NOT NULL"),
        ),
        tenant_fk("activities", "lead_id", "leads", ondelete="CASCADE"),
        tenant_fk("activities", "owner_id", "users", ondelete="SET NULL"),
        tenant_fk("activities", "created_by", "users", ondelete="SET NULL"),
        # Deferred: intake writes the touch before its inbound event row, in the same transaction.
        tenant_fk(
            "activities",
            "inbound_event_id",
            "inbound_events",
            ondelete="SET NULL",
            deferrable=True,
            initially="DEFERRED",
        ),
        tenant_fk("activities", "deal_id", "deals", ondelete="CASCADE"),
    )

    lead_id: uuid.UUID | None = Field(default=None, index=True)
    kind: ActivityKind = Field(sa_type=String(16))
    direction: Direction = Field(default=Direction.outbound, sa_type=String(16))
    subject: str | None = Field(default=None, max_length=500)
    body: str | None = Field(default=None, sa_type=Text)
    occurred_at: datetime = TimestampField()
    due_at: datetime | None = TimestampField(nullable=True, default_now=False)
    done_at: datetime | None = TimestampField(nullable=True, default_now=False)
    owner_id: uuid.UUID | None = Field(default=None)
    created_by: uuid.UUID | None = Field(default=None)
    inbound_event_id: uuid.UUID | None = Field(default=None)
    message_id: str | None = Field(default=None, max_length=998)
    details: dict[str, Any] = JsonField()
    # Follow-up tasks and their logged outcomes can be about a deal rather than a lead.
    deal_id: uuid.UUID | None = Field(default=None, index=True)


class ActivityCreate(Input):
    """POST /v1/leads/{id}/activities."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ACTIVITY_CREATE))

    kind: ActivityKind
    direction: Direction = Direction.outbound
    subject: str | None = Field(default=None, max_length=500)
    body: str | None = Field(default=None, max_length=100_000)
    occurred_at: datetime | None = None
    due_at: datetime | None = None
    done_at: datetime | None = None
    owner_id: uuid.UUID | None = None
    message_id: str | None = Field(
        default=None,
        max_length=998,
        description="Message-ID of an email you sent (with or without <>); replies thread onto the lead.",
    )

    @field_validator("message_id")
    @classmethod
    def _bare_message_id(cls, value: str | None) -> str | None:
        return value.strip().strip("<>").strip() or None if value else None


class ActivityRead(SQLModel):
    """One entry of a lead's timeline."""

    id: uuid.UUID
    lead_id: uuid.UUID | None
    kind: ActivityKind
    direction: Direction
    subject: str | None
    body: str | None
    occurred_at: datetime
    due_at: datetime | None
    done_at: datetime | None
    owner_id: uuid.UUID | None
    created_by: uuid.UUID | None
    inbound_event_id: uuid.UUID | None
    message_id: str | None
    details: dict[str, Any]
    created_at: datetime
    version: int

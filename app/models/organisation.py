"""Organisation (the tenant) and its typed settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from app.models.base import IdMixin, JsonField, TimestampsMixin, VersionMixin
from app.models.common import CountryCode, CurrencyCode, DurationText, Patch, TimezoneName

DEFAULT_LOST_REASONS = ["price", "competitor", "no_budget", "no_decision", "timing", "other"]


class OrganisationSettings(BaseModel):
    """Every organisation-wide setting, one typed object; later domains add their knobs here."""

    model_config = ConfigDict(extra="forbid")

    timezone: TimezoneName = "UTC"
    base_currency: CurrencyCode = "USD"
    default_phone_country: CountryCode | None = "US"
    quote_discount_threshold_percent: Decimal = PydanticField(default=Decimal("20"), ge=0, le=100)
    quote_total_approval_limit: Decimal | None = PydanticField(default=None, ge=0)
    lead_claim_limit: int = PydanticField(default=50, ge=0)
    # 线索回收: an owned lead with no follow-up for this long returns to the pool (None: never),
    # with a `lead.recycle_warning` event this long before (keep the warning window longer than the
    # 5 s sweep interval, or a short window can pass between two sweeps).
    lead_recycle_after: DurationText | None = None
    lead_recycle_warning: DurationText | None = None
    lost_reasons: list[str] = PydanticField(default_factory=lambda: list(DEFAULT_LOST_REASONS))
    duplicate_match_threshold: int = PydanticField(default=90, ge=50, le=100)

    @field_validator("lost_reasons")
    @classmethod
    def _non_empty_reasons(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip() for v in value if v.strip()]
        if not cleaned:
            raise ValueError("at least one lost reason is needed")
        return cleaned


class OrganisationSettingsUpdate(Patch):
    """Partial settings; only what is sent changes."""

    timezone: TimezoneName | None = None
    base_currency: CurrencyCode | None = None
    default_phone_country: CountryCode | None = None
    quote_discount_threshold_percent: Decimal | None = PydanticField(default=None, ge=0, le=100)
    quote_total_approval_limit: Decimal | None = PydanticField(default=None, ge=0)
    lead_claim_limit: int | None = PydanticField(default=None, ge=0)
    lead_recycle_after: DurationText | None = None
    lead_recycle_warning: DurationText | None = None
    lost_reasons: list[str] | None = None
    duplicate_match_threshold: int | None = PydanticField(default=None, ge=50, le=100)


class Organisation(IdMixin, TimestampsMixin, VersionMixin, table=True):
    """The tenant. Every other table carries its id."""

    __tablename__ = "organisations"

    name: str = Field(max_length=200)
    settings: dict[str, Any] = JsonField()

    def typed_settings(self) -> OrganisationSettings:
        """The settings with defaults filled in."""
        return OrganisationSettings.model_validate(self.settings or {})


class OrganisationRead(SQLModel):
    """An organisation as the API shows it."""

    id: uuid.UUID
    name: str
    settings: OrganisationSettings
    created_at: datetime
    updated_at: datetime
    version: int


class OrganisationUpdate(Patch):
    """PATCH /v1/organisation."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    settings: OrganisationSettingsUpdate | None = None

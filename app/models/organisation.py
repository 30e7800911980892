"""Organisation (the tenant) and its typed settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import LargeBinary
from sqlmodel import Field, SQLModel

from app.db import TenantScoped
from app.models import examples as ex
from app.models.base import IdMixin, JsonField, TimestampField, TimestampsMixin, VersionMixin, new_id
from app.models.common import DurationText, EmailAddress, IsoCountryCode, IsoCurrencyCode, Patch, TimezoneName

DEFAULT_LOST_REASONS = ["price", "competitor", "no_budget", "no_decision", "timing", "other"]
DEFAULT_AGING_EDGES = [30, 60, 90]
# Credit rating (回款预警): factor weights (they sum to 100) and the least score of each grade.
DEFAULT_CREDIT_WEIGHTS = {"on_time_share": 40, "mean_days_late": 20, "current_overdue": 25, "utilisation": 15}
DEFAULT_CREDIT_GRADES = {"A": 80, "B": 60, "C": 40}


def _check_edges(value: list[int] | None) -> list[int] | None:
    if value is not None and (not value or any(b <= a for a, b in zip([0, *value], value, strict=False))):
        raise ValueError("bucket edges are increasing positive day counts, e.g. [30, 60, 90]")
    return value


def _check_weights(value: dict[str, int] | None) -> dict[str, int] | None:
    if value is None:
        return value
    if set(value) != set(DEFAULT_CREDIT_WEIGHTS) or any(w < 0 for w in value.values()):
        raise ValueError(f"give a weight >= 0 for each of {', '.join(DEFAULT_CREDIT_WEIGHTS)}")
    if sum(value.values()) != 100:
        raise ValueError("the weights must sum to 100")
    return value


def _check_grades(value: dict[str, int] | None) -> dict[str, int] | None:
    if value is None:
        return value
    if set(value) != {"A", "B", "C"} or not (100 >= value["A"] > value["B"] > value["C"] >= 0):
        raise ValueError("give the least score of A, B and C, with 100 >= A > B > C >= 0")
    return value


class SellerDetails(BaseModel):
    """Who sells: the seller block printed on quotes (all optional; the organisation's name
    stands in for a missing legal name)."""

    model_config = ConfigDict(extra="forbid")

    legal_name: str | None = PydanticField(default=None, max_length=300)
    address: str | None = PydanticField(default=None, max_length=1000, description="Several lines allowed.")
    tax_id: str | None = PydanticField(
        default=None, max_length=64, description="VAT number, 统一社会信用代码 or similar."
    )
    email: EmailAddress | None = None
    phone: str | None = PydanticField(default=None, max_length=64)
    website: str | None = PydanticField(default=None, max_length=300)


class OrganisationSettings(BaseModel):
    """Every organisation-wide setting, one typed object; later domains add their knobs here."""

    model_config = ConfigDict(extra="forbid")

    timezone: TimezoneName = "UTC"
    base_currency: IsoCurrencyCode = "USD"
    country: IsoCountryCode | None = PydanticField(
        default=None, description="Where the organisation is (ISO 3166-1); formats amounts on quotes."
    )
    default_phone_country: IsoCountryCode | None = "US"
    seller: SellerDetails = PydanticField(default_factory=SellerDetails)
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
    # Collections (回款): payments wait for a finance user's confirmation unless turned off.
    payment_confirmation_required: bool = True
    aging_bucket_edges: list[int] = PydanticField(default_factory=lambda: list(DEFAULT_AGING_EDGES))
    dunning_language: Literal["zh", "en"] = "zh"
    risk_overdue_days: int = PydanticField(default=30, ge=1)
    risk_overdue_amount: Decimal | None = PydanticField(default=None, ge=0)
    credit_rating_weights: dict[str, int] = PydanticField(
        default_factory=lambda: dict(DEFAULT_CREDIT_WEIGHTS)
    )
    credit_rating_grades: dict[str, int] = PydanticField(default_factory=lambda: dict(DEFAULT_CREDIT_GRADES))

    _edges = field_validator("aging_bucket_edges")(_check_edges)
    _weights = field_validator("credit_rating_weights")(_check_weights)
    _grades = field_validator("credit_rating_grades")(_check_grades)

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
    base_currency: IsoCurrencyCode | None = None
    country: IsoCountryCode | None = None
    default_phone_country: IsoCountryCode | None = None
    seller: SellerDetails | None = PydanticField(
        default=None, description="Only the seller fields sent change (null clears one)."
    )
    quote_discount_threshold_percent: Decimal | None = PydanticField(default=None, ge=0, le=100)
    quote_total_approval_limit: Decimal | None = PydanticField(default=None, ge=0)
    lead_claim_limit: int | None = PydanticField(default=None, ge=0)
    lead_recycle_after: DurationText | None = None
    lead_recycle_warning: DurationText | None = None
    lost_reasons: list[str] | None = None
    duplicate_match_threshold: int | None = PydanticField(default=None, ge=50, le=100)
    payment_confirmation_required: bool | None = None
    aging_bucket_edges: list[int] | None = None
    dunning_language: Literal["zh", "en"] | None = None
    risk_overdue_days: int | None = PydanticField(default=None, ge=1)
    risk_overdue_amount: Decimal | None = PydanticField(default=None, ge=0)
    credit_rating_weights: dict[str, int] | None = None
    credit_rating_grades: dict[str, int] | None = None

    _edges = field_validator("aging_bucket_edges")(_check_edges)
    _weights = field_validator("credit_rating_weights")(_check_weights)
    _grades = field_validator("credit_rating_grades")(_check_grades)


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

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ORGANISATION_UPDATE))  # type: ignore[assignment]

    name: str | None = Field(default=None, min_length=1, max_length=200)
    settings: OrganisationSettingsUpdate | None = None


class OrganisationLogo(TenantScoped, SQLModel, table=True):
    """The organisation's logo (PNG or JPEG), printed on its quotes. Its id is the organisation's
    id, so the primary key (org_id, id) holds one logo per organisation."""

    __tablename__ = "organisation_logos"

    org_id: uuid.UUID = Field(
        default=None, primary_key=True, foreign_key="organisations.id", ondelete="CASCADE"
    )
    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    content_type: str = Field(max_length=32)
    width: int
    height: int
    size_bytes: int
    sha256: str = Field(max_length=64)
    data: bytes = Field(sa_type=LargeBinary)
    created_at: datetime = TimestampField()
    updated_at: datetime = TimestampField()


class OrganisationLogoRead(SQLModel):
    """The stored logo's facts (GET /v1/organisation/logo returns the image itself)."""

    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    updated_at: datetime

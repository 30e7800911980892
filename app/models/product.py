"""Products: the price list quotes draw from."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import model_validator
from sqlalchemy import Numeric, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import IdMixin, TenantMixin, TimestampsMixin, VersionMixin
from app.models.common import CurrencyCode, Input, Patch
from app.money import plain_percent, round_money


class Product(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A sellable item: sku unique per organisation, price in one currency, a tax rate in percent."""

    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("org_id", "sku"),)

    sku: str = Field(max_length=64)
    name: str = Field(max_length=300)
    description: str | None = Field(default=None, max_length=4000)
    unit_price: Decimal = Field(sa_type=Numeric(18, 4))
    currency: str = Field(max_length=3)
    tax_rate: Decimal = Field(default=Decimal("0"), sa_type=Numeric(7, 4))
    active: bool = Field(default=True)


class ProductCreate(Input):
    """POST /v1/products."""

    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=4000)
    unit_price: Decimal = Field(ge=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode
    tax_rate: Decimal = Field(default=Decimal("0"), ge=0, le=100, decimal_places=4)
    active: bool = True


class ProductUpdate(Patch):
    """PATCH /v1/products/{id}."""

    not_null = ("sku", "name", "unit_price", "currency", "tax_rate", "active")

    sku: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=4000)
    unit_price: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode | None = None
    tax_rate: Decimal | None = Field(default=None, ge=0, le=100, decimal_places=4)
    active: bool | None = None


class ProductRead(SQLModel):
    """A product as the API shows it."""

    id: uuid.UUID
    org_id: uuid.UUID
    sku: str
    name: str
    description: str | None
    unit_price: Decimal
    currency: str
    tax_rate: Decimal
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int

    @model_validator(mode="after")
    def _money_digits(self) -> ProductRead:
        self.unit_price = round_money(self.unit_price, self.currency)
        self.tax_rate = plain_percent(self.tax_rate)
        return self

"""Products: every member reads the price list; admins and managers maintain it."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, Forbidden, ValidationFailed
from app.models.common import Role
from app.models.product import Product, ProductCreate, ProductUpdate
from app.money import fits_currency
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.common import apply_changes, contains, flush_unique, get_or_404, snapshot

AUDITED = ["sku", "name", "unit_price", "currency", "tax_rate", "active"]


def _may_write(principal: Principal) -> None:
    if principal.role not in (Role.admin, Role.manager):
        raise Forbidden("Only admins and managers maintain products.")


def _check_price(price: Decimal, currency: str) -> None:
    if not fits_currency(price, currency):
        message = f"{currency} prices have at most the currency's minor-unit digits"
        raise ValidationFailed(
            message, errors=[FieldError(field="unit_price", code="too_many_decimals", message=message)]
        )


async def create_product(session: AsyncSession, principal: Principal, data: ProductCreate) -> Product:
    """A new product; sku is unique in the organisation (409)."""
    _may_write(principal)
    _check_price(data.unit_price, data.currency)
    product = Product(**data.model_dump())
    session.add(product)
    await flush_unique(session, f"A product with sku {product.sku!r} already exists.")
    audit.record(
        session,
        actor=principal,
        entity="product",
        entity_id=product.id,
        action="create",
        changes=snapshot(product, AUDITED),
    )
    return product


async def get_product(session: AsyncSession, product_id: uuid.UUID) -> Product:
    """One product of the organisation."""
    return await get_or_404(session, Product, product_id, what="product")


async def list_products(
    session: AsyncSession,
    page: PageParams,
    *,
    active: bool | None = None,
    currency: str | None = None,
    q: str | None = None,
) -> tuple[list[Product], str | None]:
    """Products, filtered by active, currency or a search of sku and name."""
    stmt = select(Product)
    if active is not None:
        stmt = stmt.where(col(Product.active) == active)
    if currency is not None:
        stmt = stmt.where(col(Product.currency) == currency)
    if q:
        stmt = stmt.where(or_(contains(col(Product.sku), q.strip()), contains(col(Product.name), q.strip())))
    return await paginate(
        session,
        stmt,
        page,
        id_column=Product.id,
        sortable={"created_at": Product.created_at, "sku": Product.sku, "name": Product.name},
        default_sort="sku",
    )


async def update_product(
    session: AsyncSession,
    principal: Principal,
    product_id: uuid.UUID,
    data: ProductUpdate,
    *,
    expected_version: int | None,
) -> Product:
    """Change a product; quotes already made keep the price they were made with."""
    _may_write(principal)
    product = await get_product(session, product_id)
    changes = data.changes()
    _check_price(changes.get("unit_price", product.unit_price), changes.get("currency", product.currency))
    diff = apply_changes(product, changes, expected_version=expected_version)
    if diff:
        await flush_unique(session, f"A product with sku {product.sku!r} already exists.")
        audit.record(
            session, actor=principal, entity="product", entity_id=product.id, action="update", changes=diff
        )
    return product

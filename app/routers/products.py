"""Products: the price list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.common import CurrencyCode, Role
from app.models.product import ProductCreate, ProductRead, ProductUpdate
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import products as service

router = APIRouter(prefix="/v1/products", tags=["products"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("products:read"))]
Writer = Annotated[Principal, Depends(require("products:write", Role.manager))]


@router.get("", response_model=Page[ProductRead], summary="List products")
async def list_products(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    active: bool | None = None,
    currency: CurrencyCode | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Search sku and name")] = None,
) -> Page[ProductRead]:
    """Every member reads the price list."""
    rows, next_cursor = await service.list_products(session, page, active=active, currency=currency, q=q)
    return Page(data=[ProductRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    response_model=ProductRead,
    status_code=status.HTTP_201_CREATED,
    summary="Create a product",
    responses=problem_responses(409),
)
async def create_product(
    body: ProductCreate, principal: Writer, session: SessionDep, response: Response
) -> ProductRead:
    """Admins and managers; sku unique in the organisation (409)."""
    product = await service.create_product(session, principal, body)
    set_etag(response, product)
    return ProductRead.model_validate(product)


@router.get(
    "/{product_id}", response_model=ProductRead, summary="Get a product", responses=problem_responses(404)
)
async def get_product(
    product_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> ProductRead:
    """One product."""
    product = await service.get_product(session, product_id)
    set_etag(response, product)
    return ProductRead.model_validate(product)


@router.patch(
    "/{product_id}",
    response_model=ProductRead,
    summary="Change a product",
    responses=problem_responses(404, 409, 412),
)
async def update_product(
    product_id: uuid.UUID,
    body: ProductUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> ProductRead:
    """Admins and managers; quotes already made keep their prices."""
    product = await service.update_product(session, principal, product_id, body, expected_version=version)
    set_etag(response, product)
    return ProductRead.model_validate(product)

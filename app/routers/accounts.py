"""Accounts (customer companies) and contacts (people at them)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.account import (
    AccountCreate,
    AccountRead,
    AccountUpdate,
    ContactCreate,
    ContactRead,
    ContactUpdate,
)
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import accounts as service

router = APIRouter(prefix="/v1/accounts", tags=["accounts"], responses=COMMON_ERRORS)
contacts_router = APIRouter(prefix="/v1/contacts", tags=["contacts"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("accounts:read"))]
Writer = Annotated[Principal, Depends(require("accounts:write"))]
Search = Annotated[str | None, Query(max_length=200, description="Search name (and domain / email)")]


@router.get("", response_model=Page[AccountRead], summary="List accounts")
async def list_accounts(
    principal: Reader, session: SessionDep, page: PageDep, q: Search = None, owner_id: uuid.UUID | None = None
) -> Page[AccountRead]:
    """Accounts are shared by the organisation: every member reads them."""
    rows, next_cursor = await service.list_accounts(session, page, q=q, owner_id=owner_id)
    return Page(data=[AccountRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("", response_model=AccountRead, status_code=status.HTTP_201_CREATED, summary="Create an account")
async def create_account(
    body: AccountCreate, principal: Writer, session: SessionDep, response: Response
) -> AccountRead:
    """A customer company; the owner defaults to you."""
    account = await service.create_account(session, principal, body)
    set_etag(response, account)
    return AccountRead.model_validate(account)


@router.get(
    "/{account_id}", response_model=AccountRead, summary="Get an account", responses=problem_responses(404)
)
async def get_account(
    account_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> AccountRead:
    """One account."""
    account = await service.get_account(session, account_id)
    set_etag(response, account)
    return AccountRead.model_validate(account)


@router.patch(
    "/{account_id}",
    response_model=AccountRead,
    summary="Change an account",
    responses=problem_responses(404, 412),
)
async def update_account(
    account_id: uuid.UUID,
    body: AccountUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> AccountRead:
    """Only what is sent changes; If-Match guards against lost updates."""
    account = await service.update_account(session, principal, account_id, body, expected_version=version)
    set_etag(response, account)
    return AccountRead.model_validate(account)


@contacts_router.get("", response_model=Page[ContactRead], summary="List contacts")
async def list_contacts(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    account_id: uuid.UUID | None = None,
    q: Search = None,
) -> Page[ContactRead]:
    """Contacts, optionally of one account."""
    rows, next_cursor = await service.list_contacts(session, page, account_id=account_id, q=q)
    return Page(data=[ContactRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@contacts_router.post(
    "", response_model=ContactRead, status_code=status.HTTP_201_CREATED, summary="Create a contact"
)
async def create_contact(
    body: ContactCreate, principal: Writer, session: SessionDep, response: Response
) -> ContactRead:
    """A person, at an account or on their own."""
    contact = await service.create_contact(session, principal, body)
    set_etag(response, contact)
    return ContactRead.model_validate(contact)


@contacts_router.get(
    "/{contact_id}", response_model=ContactRead, summary="Get a contact", responses=problem_responses(404)
)
async def get_contact(
    contact_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> ContactRead:
    """One contact."""
    contact = await service.get_contact(session, contact_id)
    set_etag(response, contact)
    return ContactRead.model_validate(contact)


@contacts_router.patch(
    "/{contact_id}",
    response_model=ContactRead,
    summary="Change a contact",
    responses=problem_responses(404, 412),
)
async def update_contact(
    contact_id: uuid.UUID,
    body: ContactUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> ContactRead:
    """Only what is sent changes; If-Match guards against lost updates."""
    contact = await service.update_contact(session, principal, contact_id, body, expected_version=version)
    set_etag(response, contact)
    return ContactRead.model_validate(contact)

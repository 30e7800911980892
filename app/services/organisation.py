"""Organisations: creation with their first admin, and their typed settings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import scope_session
from app.models.api_key import ApiKey
from app.models.common import Role
from app.models.organisation import (
    Organisation,
    OrganisationSettings,
    OrganisationUpdate,
)
from app.models.user import User
from app.security import Principal, hash_password_async, new_api_key
from app.services import audit
from app.services.common import apply_changes, get_or_404
from app.services.deals import pipelines


@dataclass(frozen=True)
class NewOrganisation:
    """What `loudou org create` prints: the ids and the admin's key (shown once)."""

    org: Organisation
    admin: User
    api_key: str


async def create_organisation(
    session: AsyncSession,
    *,
    name: str,
    admin_email: str,
    admin_name: str = "",
    admin_password: str | None = None,
    settings: OrganisationSettings | None = None,
) -> NewOrganisation:
    """Create an organisation, its admin user and the admin's first API key; scopes the session."""
    org = Organisation(name=name, settings=(settings or OrganisationSettings()).model_dump(mode="json"))
    session.add(org)
    await session.flush()
    scope_session(session, org.id)
    admin = User(
        email=admin_email.strip().lower(),
        name=admin_name or admin_email.split("@")[0],
        role=Role.admin,
        password_hash=await hash_password_async(admin_password) if admin_password else None,
    )
    session.add(admin)
    await session.flush()
    token, prefix, digest = new_api_key()
    session.add(ApiKey(user_id=admin.id, name="bootstrap", prefix=prefix, key_hash=digest))
    await pipelines.seed_default_pipeline(session)
    audit.record(
        session,
        actor=None,
        entity="organisation",
        entity_id=org.id,
        action="create",
        changes={"name": [None, name], "admin_email": [None, admin.email]},
        org_id=org.id,
    )
    await session.flush()
    return NewOrganisation(org=org, admin=admin, api_key=token)


async def get_organisation(session: AsyncSession, org_id: uuid.UUID) -> Organisation:
    """The caller's organisation."""
    return await get_or_404(session, Organisation, org_id, what="organisation")


async def update_organisation(
    session: AsyncSession,
    principal: Principal,
    data: OrganisationUpdate,
    *,
    expected_version: int | None,
) -> Organisation:
    """Change the name and/or some settings; unsent settings keep their values."""
    org = await get_organisation(session, principal.org_id)
    changes: dict[str, object] = {}
    if data.name is not None:
        changes["name"] = data.name
    if data.settings is not None:
        merged = org.typed_settings().model_copy(update=data.settings.model_dump(exclude_unset=True))
        changes["settings"] = OrganisationSettings.model_validate(merged.model_dump()).model_dump(mode="json")
    diff = apply_changes(org, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session,
            actor=principal,
            entity="organisation",
            entity_id=org.id,
            action="update",
            changes=diff,
        )
    await session.flush()
    return org

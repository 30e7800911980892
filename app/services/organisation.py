"""Organisations: creation with their first admin, and their typed settings."""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import scope_session
from app.errors import (
    FieldError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.models.api_key import ApiKey
from app.models.base import utcnow
from app.models.common import Role
from app.models.organisation import (
    Organisation,
    OrganisationLogo,
    OrganisationSettings,
    OrganisationSettingsUpdate,
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


def merge_settings(current: OrganisationSettings, update: OrganisationSettingsUpdate) -> OrganisationSettings:
    """The settings with what `update` sent applied (seller fields one by one), validated."""
    merged = current.model_dump()
    sent = update.model_dump(exclude_unset=True)
    if "seller" in sent:
        sent["seller"] = {**merged["seller"], **(sent["seller"] or {})}
    return OrganisationSettings.model_validate({**merged, **sent})


async def update_organisation(
    session: AsyncSession,
    principal: Principal | None,
    data: OrganisationUpdate,
    *,
    expected_version: int | None,
    org_id: uuid.UUID | None = None,
) -> Organisation:
    """Change the name and/or some settings; unsent settings keep their values. Without a
    principal (the `loudou org update` command) `org_id` names the organisation."""
    target = principal.org_id if principal is not None else org_id
    assert target is not None
    org = await get_organisation(session, target)
    changes: dict[str, object] = {}
    if data.name is not None:
        changes["name"] = data.name
    if data.settings is not None:
        changes["settings"] = merge_settings(org.typed_settings(), data.settings).model_dump(mode="json")
    diff = apply_changes(org, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session,
            actor=principal,
            entity="organisation",
            entity_id=org.id,
            action="update",
            changes=diff,
            org_id=org.id,
        )
    await session.flush()
    return org


LOGO_MAX_BYTES = 512 * 1024
LOGO_MAX_SIDE = 4000  # pixels; a larger logo is a mistake (and a decompression-bomb risk)
LOGO_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}


def _image_size(data: bytes, expected_format: str) -> tuple[int, int]:
    """Width and height of a PNG/JPEG that decodes as the format it claims to be and that fpdf2
    can place on a page; ValidationFailed otherwise (Pillow, which fpdf2 already needs, reads it)."""
    from PIL import Image, UnidentifiedImageError

    def invalid(message: str) -> ValidationFailed:
        return ValidationFailed(
            message, errors=[FieldError(field="body", code="invalid_image", message=message)]
        )

    try:
        with Image.open(io.BytesIO(data)) as image:
            found, size = image.format, image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise invalid(f"The body is not a readable {expected_format} image ({exc}).") from exc
    if found != expected_format:
        raise invalid(f"The body is a {found} image, not the {expected_format} its Content-Type says.")
    if max(size) > LOGO_MAX_SIDE or min(size) < 1:
        raise invalid(
            f"A logo is at most {LOGO_MAX_SIDE} pixels on each side; this one is {size[0]}×{size[1]}."
        )
    try:  # what the quote PDF will do with it: refuse now what would break every PDF later
        from fpdf import FPDF

        trial = FPDF()
        trial.add_page()
        trial.image(io.BytesIO(data), x=10, y=10, h=16)
    except Exception as exc:
        raise invalid(f"This image cannot be placed in a PDF ({type(exc).__name__}: {exc}).") from exc
    return size


async def get_logo(session: AsyncSession, org_id: uuid.UUID) -> OrganisationLogo | None:
    """The organisation's logo, if it has one."""
    return (
        await session.execute(select(OrganisationLogo).where(col(OrganisationLogo.org_id) == org_id))
    ).scalar_one_or_none()


async def set_logo(
    session: AsyncSession, principal: Principal, *, data: bytes, content_type: str | None
) -> OrganisationLogo:
    """Store (or replace) the organisation's logo: PNG or JPEG, at most LOGO_MAX_BYTES (admins)."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can change the organisation's logo.")
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in LOGO_TYPES:
        raise UnsupportedMediaType(
            "A logo is sent as the raw image with Content-Type image/png or image/jpeg."
        )
    if len(data) > LOGO_MAX_BYTES:
        raise PayloadTooLarge(f"A logo is at most {LOGO_MAX_BYTES} bytes; this one is {len(data)}.")
    if not data:
        raise ValidationFailed(
            "The body is empty.", errors=[FieldError(field="body", code="missing", message="the image")]
        )
    width, height = _image_size(data, LOGO_TYPES[media])
    facts: dict[str, Any] = {
        "content_type": media,
        "width": width,
        "height": height,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "data": data,
        "updated_at": utcnow(),
    }
    # One statement whatever is there already, so two first uploads at once cannot collide.
    upsert = (
        pg_insert(OrganisationLogo)
        .values(org_id=principal.org_id, id=principal.org_id, created_at=facts["updated_at"], **facts)
        .on_conflict_do_update(index_elements=["org_id", "id"], set_=facts)
    )
    await session.execute(upsert)
    logo = await get_logo(session, principal.org_id)
    assert logo is not None
    await session.refresh(logo)
    audit.record(
        session,
        actor=principal,
        entity="organisation",
        entity_id=principal.org_id,
        action="logo",
        changes={"logo": [None, {k: v for k, v in facts.items() if k not in ("data", "updated_at")}]},
    )
    await session.flush()
    return logo


async def delete_logo(session: AsyncSession, principal: Principal) -> None:
    """Remove the organisation's logo (admins); 404 when there is none."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can change the organisation's logo.")
    logo = await get_logo(session, principal.org_id)
    if logo is None:
        raise NotFound("The organisation has no logo.")
    await session.delete(logo)
    audit.record(
        session,
        actor=principal,
        entity="organisation",
        entity_id=principal.org_id,
        action="logo_delete",
        changes={"logo": [logo.sha256, None]},
    )
    await session.flush()

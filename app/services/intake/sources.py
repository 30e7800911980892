"""Intake sources: configured by admins; each has a public key (in its URL) and, for webhooks, a
Standard Webhooks secret that can be rotated with a grace period for the previous one."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, Forbidden, NotFound, ValidationFailed
from app.models.base import utcnow
from app.models.intake import (
    IntakeSource,
    IntakeSourceCreate,
    IntakeSourceRead,
    IntakeSourceUpdate,
    IntakeSourceWithSecret,
    SourceKind,
)
from app.models.user import Team, User
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services import cache as intake_cache
from app.services.common import apply_changes, get_or_404

ENDPOINTS = {SourceKind.form: "forms", SourceKind.email: "email", SourceKind.webhook: "webhooks"}
SECRET_FIELDS = {"signing_key", "basic_auth_password", "secret", "previous_secret"}


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def to_read(source: IntakeSource) -> IntakeSourceRead:
    """The API view: secrets are only said to be set."""
    return IntakeSourceRead.model_validate(source, update=_extra(source))


def to_read_with_secret(source: IntakeSource) -> IntakeSourceWithSecret:
    """The view of create and rotate-secret, the only answers that carry the webhook secret."""
    return IntakeSourceWithSecret.model_validate(source, update=_extra(source))


def _extra(source: IntakeSource) -> dict[str, Any]:
    return {
        "signing_key_set": bool(source.signing_key),
        "basic_auth_password_set": bool(source.basic_auth_password),
        "secret_set": bool(source.secret),
        "endpoint": f"/v1/intake/{ENDPOINTS[SourceKind(source.kind)]}/{source.key}",
    }


def _redacted(diff: dict[str, Any]) -> dict[str, Any]:
    return {k: (["***", "***"] if k in SECRET_FIELDS else v) for k, v in diff.items()}


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only an admin can configure intake sources.")


def _require_reader(principal: Principal) -> None:
    if principal.role not in ("admin", "manager"):
        raise Forbidden("Only admins and managers can see intake sources and the inbox.")


async def _check_refs(session: AsyncSession, owner_id: uuid.UUID | None, team_id: uuid.UUID | None) -> None:
    errors = []
    if owner_id is not None and await session.get(User, owner_id) is None:
        errors.append(FieldError(field="default_owner_id", code="not_found", message="no such user"))
    if team_id is not None and await session.get(Team, team_id) is None:
        errors.append(FieldError(field="default_team_id", code="not_found", message="no such team"))
    if errors:
        raise ValidationFailed("Unknown owner or team.", errors=errors)


def _check_kind(kind: SourceKind, provider: str | None) -> None:
    if kind == SourceKind.email and provider is None:
        raise ValidationFailed(
            "An email source needs a provider.",
            errors=[
                FieldError(field="provider", code="required", message="sendgrid, mailgun, postmark or mime")
            ],
        )
    if kind != SourceKind.email and provider is not None:
        raise ValidationFailed(
            "Only email sources have a provider.",
            errors=[FieldError(field="provider", code="not_allowed", message="leave it out")],
        )


async def create_source(
    session: AsyncSession, principal: Principal, data: IntakeSourceCreate
) -> IntakeSource:
    """Add a source; it gets its public key, and a `whsec_` secret for a webhook."""
    _require_admin(principal)
    _check_kind(data.kind, data.provider)
    await _check_refs(session, data.default_owner_id, data.default_team_id)
    source = IntakeSource(**data.model_dump(), key=secrets.token_urlsafe(24))
    if data.kind == SourceKind.webhook:
        source.secret = new_webhook_secret()
    session.add(source)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="intake_source",
        entity_id=source.id,
        action="create",
        changes={"kind": [None, str(source.kind)], "name": [None, source.name]},
    )
    return source


async def list_sources(
    session: AsyncSession, principal: Principal, page: PageParams, *, kind: SourceKind | None = None
) -> tuple[list[IntakeSource], str | None]:
    """The organisation's sources (deleted ones excluded)."""
    _require_reader(principal)
    stmt = select(IntakeSource).where(col(IntakeSource.deleted_at).is_(None))
    if kind is not None:
        stmt = stmt.where(col(IntakeSource.kind) == kind)
    return await paginate(
        session,
        stmt,
        page,
        id_column=IntakeSource.id,
        sortable={"created_at": IntakeSource.created_at, "name": IntakeSource.name},
        default_sort="created_at",
    )


async def get_source(session: AsyncSession, principal: Principal, source_id: uuid.UUID) -> IntakeSource:
    """One source of the organisation."""
    _require_reader(principal)
    source = await get_or_404(session, IntakeSource, source_id, what="intake source")
    if source.deleted_at is not None:
        raise NotFound(f"No intake source with id {source_id}.")
    return source


async def update_source(
    session: AsyncSession,
    principal: Principal,
    source_id: uuid.UUID,
    data: IntakeSourceUpdate,
    *,
    expected_version: int | None,
) -> IntakeSource:
    """Change a source (its mapping, origins, credentials …); the key stays."""
    _require_admin(principal)
    source = await get_source(session, principal, source_id)
    changes = data.changes()
    await _check_refs(session, changes.get("default_owner_id"), changes.get("default_team_id"))
    diff = apply_changes(source, changes, expected_version=expected_version)
    intake_cache.forget_source(source.key)
    if diff:
        audit.record(
            session,
            actor=principal,
            entity="intake_source",
            entity_id=source.id,
            action="update",
            changes=_redacted(diff),
        )
        await session.flush()
    return source


async def delete_source(
    session: AsyncSession, principal: Principal, source_id: uuid.UUID, *, expected_version: int | None
) -> IntakeSource:
    """Retire a source: its URL stops answering; its events and leads stay."""
    _require_admin(principal)
    source = await get_source(session, principal, source_id)
    diff = apply_changes(source, {"deleted_at": utcnow(), "active": False}, expected_version=expected_version)
    intake_cache.forget_source(source.key)
    audit.record(
        session, actor=principal, entity="intake_source", entity_id=source.id, action="delete", changes=diff
    )
    await session.flush()
    return source


async def rotate_secret(
    session: AsyncSession, principal: Principal, source_id: uuid.UUID, *, grace_hours: int
) -> IntakeSource:
    """A new webhook secret; the previous one keeps verifying for `grace_hours`."""
    _require_admin(principal)
    source = await get_source(session, principal, source_id)
    if source.kind != SourceKind.webhook:
        raise ValidationFailed(
            "Only webhook sources have a signing secret.",
            errors=[
                FieldError(field="kind", code="not_webhook", message="rotate-secret is for webhook sources")
            ],
        )
    apply_changes(
        source,
        {
            "previous_secret": source.secret,
            "previous_secret_expires_at": utcnow() + timedelta(hours=grace_hours),
            "secret": new_webhook_secret(),
        },
    )
    intake_cache.forget_source(source.key)
    audit.record(
        session,
        actor=principal,
        entity="intake_source",
        entity_id=source.id,
        action="rotate_secret",
        changes={"grace_hours": grace_hours},
    )
    await session.flush()
    return source

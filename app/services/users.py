"""Users: the directory every member may read; admins manage it; everyone manages themselves."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, FieldError, Forbidden, Unauthorized, ValidationFailed
from app.models.api_key import ApiKey
from app.models.base import utcnow
from app.models.common import Role
from app.models.user import Team, User, UserCreate, UserUpdate
from app.pagination import PageParams, paginate
from app.security import Principal, hash_password_async, verify_password_async
from app.services import audit
from app.services.common import apply_changes, contains, flush_unique, get_or_404, snapshot

SELF_EDITABLE = frozenset({"name", "timezone", "working_hours"})
AUDITED = ["email", "name", "role", "team_id", "active", "capacity", "weight", "timezone", "finance"]


async def _check_team(session: AsyncSession, team_id: uuid.UUID | None) -> None:
    if team_id is not None and await session.get(Team, team_id) is None:
        raise ValidationFailed(
            "Unknown team.",
            errors=[FieldError(field="team_id", code="not_found", message="no such team")],
        )


async def list_users(
    session: AsyncSession,
    page: PageParams,
    *,
    role: Role | None = None,
    team_id: uuid.UUID | None = None,
    active: bool | None = None,
    q: str | None = None,
) -> tuple[list[User], str | None]:
    """Users of the organisation, filtered, one page."""
    stmt = select(User)
    if role is not None:
        stmt = stmt.where(col(User.role) == role)
    if team_id is not None:
        stmt = stmt.where(col(User.team_id) == team_id)
    if active is not None:
        stmt = stmt.where(col(User.active) == active)
    if q:
        stmt = stmt.where(or_(contains(col(User.email), q.strip()), contains(col(User.name), q.strip())))
    return await paginate(
        session,
        stmt,
        page,
        id_column=User.id,
        sortable={"created_at": User.created_at, "email": User.email, "name": User.name},
        default_sort="created_at",
    )


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    """One user of the organisation."""
    return await get_or_404(session, User, user_id, what="user")


async def create_user(session: AsyncSession, principal: Principal, data: UserCreate) -> User:
    """Add a user (admins only); the password is optional (API keys work without one)."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can add users.")
    await _check_team(session, data.team_id)
    fields = data.model_dump(exclude={"password"})
    fields["email"] = data.email
    user = User(**fields)
    if data.password:
        user.password_hash = await hash_password_async(data.password)
    session.add(user)
    await flush_unique(session, f"A user with email {user.email} already exists.")
    audit.record(
        session,
        actor=principal,
        entity="user",
        entity_id=user.id,
        action="create",
        changes=snapshot(user, AUDITED),
    )
    return user


async def update_user(
    session: AsyncSession,
    principal: Principal,
    user_id: uuid.UUID,
    data: UserUpdate,
    *,
    expected_version: int | None,
) -> User:
    """Admins change anything; a user may change their own name, timezone and working hours."""
    user = await get_user(session, user_id)
    changes = data.model_dump(exclude_unset=True)
    if not principal.is_admin:
        if user.id != principal.user_id:
            raise Forbidden("Only an admin can change other users.")
        refused = set(changes) - SELF_EDITABLE
        if refused:
            raise Forbidden(f"Only an admin can change {', '.join(sorted(refused))}.")
    if "email" in changes and changes["email"] is not None:
        changes["email"] = str(changes["email"]).lower()
    data.refuse_nulls(changes)
    if "team_id" in changes:
        await _check_team(session, changes["team_id"])
    if (
        user.id == principal.user_id
        and (changes.get("active") is False or changes.get("role", Role.admin) != Role.admin)
        and user.role == Role.admin
    ):
        raise Conflict("An admin cannot demote or deactivate themselves.")
    diff = apply_changes(user, changes, expected_version=expected_version)
    if diff:
        await flush_unique(session, f"A user with email {user.email} already exists.")
        if diff.get("active") == [True, False]:
            await _revoke_keys_of(session, user.id)
        audit.record(
            session,
            actor=principal,
            entity="user",
            entity_id=user.id,
            action="update",
            changes=diff,
        )
    return user


async def deactivate_user(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, *, expected_version: int | None
) -> User:
    """DELETE keeps the row (their records keep their owner) but deactivates it and revokes keys."""
    return await update_user(
        session, principal, user_id, UserUpdate(active=False), expected_version=expected_version
    )


async def _revoke_keys_of(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(
        update(ApiKey)
        .where(col(ApiKey.user_id) == user_id, col(ApiKey.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )


async def change_password(
    session: AsyncSession,
    principal: Principal,
    user_id: uuid.UUID,
    *,
    current_password: str | None,
    new_password: str,
) -> User:
    """Your own password needs the current one (if set); an admin resets anyone's."""
    user = await get_user(session, user_id)
    own = user.id == principal.user_id
    if not own and not principal.is_admin:
        raise Forbidden("Only an admin can reset another user's password.")
    needs_current = own and user.password_hash and not principal.is_admin
    if needs_current and not (
        current_password and await verify_password_async(current_password, user.password_hash)
    ):
        raise Unauthorized("The current password is wrong.")
    user.password_hash = await hash_password_async(new_password)
    user.updated_at = utcnow()
    user.version += 1
    audit.record(
        session,
        actor=principal,
        entity="user",
        entity_id=user.id,
        action="password_reset" if not own else "password_change",
        changes={},
    )
    await session.flush()
    return user

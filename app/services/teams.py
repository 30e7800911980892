"""Teams: a manager and members. Everyone reads them; admins change them."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, Forbidden, ValidationFailed
from app.models.user import Team, TeamCreate, TeamRead, TeamUpdate, User
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.common import apply_changes, flush_unique, get_or_404, snapshot


async def _check_users(session: AsyncSession, ids: list[uuid.UUID], field: str) -> None:
    if not ids:
        return
    found = set((await session.execute(select(col(User.id)).where(col(User.id).in_(ids)))).scalars())
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise ValidationFailed(
            f"Unknown user(s): {', '.join(missing)}.",
            errors=[FieldError(field=field, code="not_found", message="no such user")],
        )


async def _members(session: AsyncSession, team_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    rows = await session.execute(
        select(col(User.team_id), col(User.id))
        .where(col(User.team_id).in_(team_ids))
        .order_by(col(User.created_at))
    )
    out: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for team_id, user_id in rows:
        if team_id is not None:
            out[team_id].append(user_id)
    return out


async def to_read(session: AsyncSession, teams: list[Team]) -> list[TeamRead]:
    """Teams with their member ids."""
    members = await _members(session, [t.id for t in teams])
    return [TeamRead.model_validate({**t.model_dump(), "member_ids": members.get(t.id, [])}) for t in teams]


async def _set_members(session: AsyncSession, team: Team, member_ids: list[uuid.UUID]) -> None:
    await _check_users(session, member_ids, "member_ids")
    await session.execute(
        update(User).where(col(User.team_id) == team.id, col(User.id).not_in(member_ids)).values(team_id=None)
    )
    if member_ids:
        await session.execute(update(User).where(col(User.id).in_(member_ids)).values(team_id=team.id))


async def list_teams(session: AsyncSession, page: PageParams) -> tuple[list[Team], str | None]:
    """Teams of the organisation, one page."""
    return await paginate(
        session,
        select(Team),
        page,
        id_column=Team.id,
        sortable={"created_at": Team.created_at, "name": Team.name},
        default_sort="name",
    )


async def get_team(session: AsyncSession, team_id: uuid.UUID) -> Team:
    """One team."""
    return await get_or_404(session, Team, team_id, what="team")


async def create_team(session: AsyncSession, principal: Principal, data: TeamCreate) -> Team:
    """Add a team (admins only), optionally with a manager and members."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can add teams.")
    if data.manager_id:
        await _check_users(session, [data.manager_id], "manager_id")
    team = Team(name=data.name, manager_id=data.manager_id)
    session.add(team)
    await flush_unique(session, f"A team named {data.name!r} already exists.")
    member_ids = list(data.member_ids)
    if data.manager_id and data.manager_id not in member_ids:
        member_ids.append(data.manager_id)
    await _set_members(session, team, member_ids)
    audit.record(
        session,
        actor=principal,
        entity="team",
        entity_id=team.id,
        action="create",
        changes={
            **snapshot(team, ["name", "manager_id"]),
            "member_ids": [None, [str(m) for m in member_ids]],
        },
    )
    return team


async def update_team(
    session: AsyncSession,
    principal: Principal,
    team_id: uuid.UUID,
    data: TeamUpdate,
    *,
    expected_version: int | None,
) -> Team:
    """Rename, change the manager, or replace the member list (admins only)."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can change teams.")
    team = await get_team(session, team_id)
    changes = data.changes(exclude={"member_ids"})
    if changes.get("manager_id"):
        await _check_users(session, [changes["manager_id"]], "manager_id")
    diff = apply_changes(team, changes, expected_version=expected_version)
    if data.member_ids is not None:
        await _set_members(session, team, data.member_ids)
        diff["member_ids"] = [None, [str(m) for m in data.member_ids]]
        if "version" not in diff and not any(k != "member_ids" for k in diff):
            team.version += 1
    if diff:
        await flush_unique(session, f"A team named {team.name!r} already exists.")
        audit.record(
            session,
            actor=principal,
            entity="team",
            entity_id=team.id,
            action="update",
            changes=diff,
        )
    return team


async def delete_team(
    session: AsyncSession, principal: Principal, team_id: uuid.UUID, *, expected_version: int | None
) -> None:
    """Delete a team; its members stay, without a team."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can delete teams.")
    team = await get_team(session, team_id)
    apply_changes(team, {}, expected_version=expected_version)
    await session.execute(update(User).where(col(User.team_id) == team.id).values(team_id=None))
    await session.delete(team)
    audit.record(session, actor=principal, entity="team", entity_id=team.id, action="delete")
    await session.flush()

"""Every owner change goes through `set_owner`: same fields, an audit entry, the same events."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from app.db import tenant_session
from app.models.assignment import AssignmentRule
from app.models.audit import AuditEntry
from app.models.base import utcnow
from app.models.lead import Lead
from app.models.outbox import OutboxEvent
from app.models.user import Team
from app.services.assignment.engine import assign, escalate
from app.services.assignment.recycling import sweep_organisation
from app.state import AppState
from tests.conftest import Org


def _canonical(event: object) -> str:
    return json.dumps(event, sort_keys=True)


async def test_engine_sla_escalation_and_recycling_are_audited_owner_changes(
    state: AppState, org: Org
) -> None:
    org_id = uuid.UUID(org.id)
    admin = uuid.UUID(org.admin_id)
    rep = uuid.UUID((await org.add_user("rep"))[0])
    async with tenant_session(state.sessions, org_id) as s:
        team = Team(name="North", manager_id=admin)
        rule = AssignmentRule(name="all to the admin", target_user_ids=[str(admin)], contact_sla="PT1H")
        by_rule = Lead(email="rule@example.com")
        escalated = Lead(email="late@example.com", owner_id=rep, pooled=False, assigned_at=utcnow())
        quiet = Lead(
            email="quiet@example.com", owner_id=rep, pooled=False, assigned_at=utcnow() - timedelta(hours=2)
        )
        s.add_all([team, rule, by_rule, escalated, quiet])
        await s.flush()
        rule.target_team_id = team.id

        await assign(s, by_rule, trigger="lead.created", trigger_key=f"t:{by_rule.id}")
        assert (by_rule.owner_id, by_rule.team_id, by_rule.pooled) == (admin, team.id, False)
        assert by_rule.assigned_at is not None and by_rule.version == 2
        # SLA reassignment with nobody else eligible: back to the pool
        await assign(s, by_rule, trigger="sla", trigger_key=f"sla:{by_rule.id}", exclude=frozenset({admin}))
        # Annotated: mypy would keep `assigned_at` narrowed to datetime from the assert above.
        after_sla: tuple[uuid.UUID | None, bool, datetime | None, int] = (
            by_rule.owner_id,
            by_rule.pooled,
            by_rule.assigned_at,
            by_rule.version,
        )
        assert after_sla == (None, True, None, 3)

        await escalate(s, escalated, rule=rule, trigger_key=f"esc:{escalated.id}")
        assert (escalated.owner_id, escalated.team_id, escalated.pooled) == (admin, team.id, False)

        await sweep_organisation(s, recycle_after=timedelta(hours=1), warn_before=None)
        assert (quiet.owner_id, quiet.pooled, quiet.assigned_at) == (None, True, None)
        await s.flush()

        audits = (await s.execute(select(AuditEntry).where(col(AuditEntry.entity) == "lead"))).scalars().all()
        owner_changes = {(a.entity_id, a.action): a.changes.get("owner_id") for a in audits}
        assert owner_changes == {
            (by_rule.id, "auto_assign"): [None, str(admin)],
            (by_rule.id, "return_to_pool"): [str(admin), None],
            (escalated.id, "escalate"): [str(rep), str(admin)],
            (quiet.id, "recycle"): [str(rep), None],
        }
        assert all(a.actor_user_id is None for a in audits)

        events = (await s.execute(select(OutboxEvent))).scalars().all()
        payloads = sorted(
            ((e.event_type, e.payload) for e in events if e.event_type.startswith("lead.")), key=_canonical
        )
        assert payloads == sorted(
            [
                (
                    "lead.assigned",
                    {
                        "lead_id": str(by_rule.id),
                        "owner_id": str(admin),
                        "team_id": str(team.id),
                        "by": "lead.created",
                        "rule_id": str(rule.id),
                    },
                ),
                (
                    "lead.recycled",
                    {"lead_id": str(by_rule.id), "previous_owner_id": str(admin), "reason": "sla"},
                ),
                (
                    "lead.assigned",
                    {
                        "lead_id": str(escalated.id),
                        "owner_id": str(admin),
                        "team_id": str(team.id),
                        "by": "sla",
                    },
                ),
                (
                    "lead.recycled",
                    {"lead_id": str(quiet.id), "previous_owner_id": str(rep), "reason": "no_follow_up"},
                ),
            ],
            key=_canonical,
        )
        await s.rollback()

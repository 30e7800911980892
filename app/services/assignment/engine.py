"""Lead auto-assignment: ordered rules, three strategies, and a decision row that explains each call.

A rule matches a lead when all its conditions hold. Its candidates are its users (or its team's
members); inactive users, users at capacity and (if the rule asks) users outside their working
hours are skipped, each with the reason. No eligible candidate: the next rule. No rule: the pool.
The rule's cursor row is locked (SELECT … FOR UPDATE) while one lead is assigned, so several
workers at once keep round robin fair and never read a stale load.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from time import monotonic
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.encoders import jsonable_encoder
from sqlalchemy import Select, Table, func, insert, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import TenancyError
from app.errors import NotFound
from app.models.assignment import AssignmentCursor, AssignmentDecision, AssignmentRule
from app.models.base import build, column_values, utcnow
from app.models.durations import parse_duration
from app.models.lead import OPEN_LEAD, Lead
from app.models.user import Team, User
from app.services.common import get_or_404
from app.services.leads.owner import NewOwner, set_owner, set_owners

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
KEPT = "The lead already had an owner (or is closed); rules were not run."


@dataclass(frozen=True)
class Candidate:
    """A possible owner and what eligibility depends on."""

    user_id: uuid.UUID
    name: str
    active: bool
    capacity: int | None
    open_leads: int | None  # None: not counted (the decision does not depend on it)
    weight: int
    timezone: str
    working_hours: dict[str, Any] | None
    last_assigned_at: datetime | None


_LEAD_COLUMNS = tuple(attr.key for attr in sa_inspect(Lead).column_attrs)
_AS_IS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """`jsonable_encoder(value)` for a column value, without its walk for the common types (a
    lead's ids and times are most of its columns, and a batch converts every lead's)."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is uuid.UUID:
        return str(value)
    if kind is datetime:
        return value.isoformat()
    return jsonable_encoder(value)


def lead_fields(lead: Lead) -> dict[str, Any]:
    """The lead's columns as plain JSON values (what rule conditions look at)."""
    values = lead.__dict__
    return {key: _plain(values[key] if key in values else getattr(lead, key)) for key in _LEAD_COLUMNS}


def lead_value(lead: Mapping[str, Any], field: str) -> Any:
    """A lead field by name; `attributes.<key>`, `email_domain` and `intake_source` are derived."""
    if field.startswith("attributes."):
        value: Any = lead.get("attributes") or {}
        for part in field.split(".")[1:]:
            value = value.get(part) if isinstance(value, Mapping) else None
        return value
    if field == "email_domain":
        email = lead.get("email") or ""
        return email.rpartition("@")[2].lower() or None
    if field in ("intake_source", "intake_source_id"):
        return lead.get("source_id")
    return lead.get(field)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    return str(a) == str(b) if a is not None and b is not None else a == b


def condition_holds(condition: Mapping[str, Any], lead: Mapping[str, Any]) -> bool:
    """Evaluate one {field, op, value} against a lead (strings compare case-insensitively)."""
    value = lead_value(lead, condition["field"])
    op, expected = condition["op"], condition.get("value")
    if op == "exists":
        return (value not in (None, "", [], {})) == (expected is not False)
    if op == "eq":
        return _same(value, expected)
    if op == "ne":
        return not _same(value, expected)
    if op in ("in", "not_in"):
        options = expected if isinstance(expected, list) else [expected]
        found = any(_same(value, option) for option in options)
        return found if op == "in" else not found
    if op == "contains":
        if isinstance(value, list):
            return any(_same(item, expected) for item in value)
        return isinstance(value, str) and str(expected).casefold() in value.casefold()
    if op in ("gte", "lte"):
        if value is None or expected is None:
            return False
        try:
            left, right = float(value), float(expected)
        except (TypeError, ValueError):
            return False
        return left >= right if op == "gte" else left <= right
    return False


def rule_matches(rule: AssignmentRule, lead: Mapping[str, Any]) -> bool:
    """All conditions hold (a rule without conditions matches every lead)."""
    return all(condition_holds(c, lead) for c in rule.conditions)


def within_working_hours(candidate: Candidate, now: datetime) -> bool:
    """Whether `now` falls in the candidate's hours for that weekday, in their timezone."""
    if not candidate.working_hours:
        return True
    local = now.astimezone(ZoneInfo(candidate.timezone or "UTC"))
    span = candidate.working_hours.get(WEEKDAYS[local.weekday()])
    if not span:
        return False
    start, end = (time.fromisoformat(t) if t != "24:00" else time.max for t in span)
    return start <= local.time() < end


def skip_reason(candidate: Candidate, now: datetime, *, respect_hours: bool, strategy: str) -> str | None:
    """Why this candidate cannot take a lead now, or None."""
    if not candidate.active:
        return "inactive"
    if candidate.capacity is not None and (candidate.open_leads or 0) >= candidate.capacity:
        return f"at capacity ({candidate.open_leads}/{candidate.capacity} open leads)"
    if strategy == "weighted" and candidate.weight <= 0:
        return "weight 0"
    if respect_hours and not within_working_hours(candidate, now):
        local = now.astimezone(ZoneInfo(candidate.timezone or "UTC"))
        return f"outside working hours ({local:%a %H:%M} {candidate.timezone})"
    return None


def pick(
    strategy: str, ordered: Sequence[Candidate], eligible: Sequence[Candidate], state: Mapping[str, Any]
) -> tuple[Candidate, dict[str, Any]]:
    """Choose among eligible candidates; returns the choice and the strategy's new state."""
    order = {c.user_id: i for i, c in enumerate(ordered)}
    assigned = int(state.get("assigned", 0)) + 1
    if strategy == "weighted":
        # Smooth weighted round robin (nginx): deterministic, spreads picks evenly by weight.
        current = {k: int(v) for k, v in dict(state.get("current", {})).items()}
        total = sum(c.weight for c in eligible)
        for c in eligible:
            current[str(c.user_id)] = current.get(str(c.user_id), 0) + c.weight
        chosen = max(eligible, key=lambda c: (current[str(c.user_id)], -order[c.user_id]))
        current[str(chosen.user_id)] -= total
        return chosen, {"current": current, "last_user_id": str(chosen.user_id), "assigned": assigned}
    if strategy == "least_loaded":
        epoch = datetime.min.replace(tzinfo=utcnow().tzinfo)
        chosen = min(
            eligible, key=lambda c: (c.open_leads or 0, c.last_assigned_at or epoch, order[c.user_id])
        )
        return chosen, {"last_user_id": str(chosen.user_id), "assigned": assigned}
    # round_robin: the next eligible candidate after the last one chosen, in a fixed order.
    last = state.get("last_user_id")
    start = (order.get(uuid.UUID(last), -1) + 1) if last else 0
    eligible_ids = {c.user_id for c in eligible}
    for step in range(len(ordered)):
        candidate = ordered[(start + step) % len(ordered)]
        if candidate.user_id in eligible_ids:
            return candidate, {"last_user_id": str(candidate.user_id), "assigned": assigned}
    raise ValueError("pick() needs at least one eligible candidate")


def counts_load(rule: AssignmentRule, user: User) -> bool:
    """Whether a decision by `rule` depends on `user`'s open leads: `least_loaded` compares
    everyone's; the other strategies only check a capacity, where one is set."""
    return rule.strategy == "least_loaded" or user.capacity is not None


async def load_candidates(
    session: AsyncSession, rule: AssignmentRule, *, every_load: bool = False
) -> list[Candidate]:
    """The rule's users (listed order, or team members oldest first) with their current load:
    the open leads (and the latest assignment) of the users the decision depends on
    (`counts_load`), or of all of them with `every_load`; None for the others.

    A user's open leads are counted anew for each batch (an index range of their open leads),
    so a rule over reps without a capacity does not pay, batch after batch, a count that grows
    with every lead they hold and that the decision does not read."""
    if rule.target_user_ids:
        ids = [uuid.UUID(str(u)) for u in rule.target_user_ids]
        users = {
            u.id: u for u in (await session.execute(select(User).where(col(User.id).in_(ids)))).scalars()
        }
        ordered_users = [users[i] for i in ids if i in users]
    elif rule.target_team_id:
        ordered_users = list(
            (
                await session.execute(
                    select(User)
                    .where(col(User.team_id) == rule.target_team_id)
                    .order_by(col(User.created_at), col(User.id))
                )
            ).scalars()
        )
    else:
        ordered_users = []
    ids = [u.id for u in ordered_users if every_load or counts_load(rule, u)]
    load: dict[uuid.UUID, tuple[int, datetime | None]] = {}
    if ids:
        rows = await session.execute(
            select(col(Lead.owner_id), func.count(), func.max(col(Lead.assigned_at)))
            .where(col(Lead.owner_id).in_(ids), OPEN_LEAD)
            .group_by(col(Lead.owner_id))
        )
        load = {row[0]: (int(row[1]), row[2]) for row in rows if row[0] is not None}
    return [
        Candidate(
            user_id=u.id,
            name=u.name or u.email,
            active=u.active,
            capacity=u.capacity,
            open_leads=load.get(u.id, (0, None))[0] if u.id in ids else None,
            weight=u.weight,
            timezone=u.timezone,
            working_hours=u.working_hours,
            last_assigned_at=load.get(u.id, (0, None))[1],
        )
        for u in ordered_users
    ]


async def active_rules(session: AsyncSession, only: uuid.UUID | None = None) -> list[AssignmentRule]:
    """Active rules in evaluation order."""
    stmt = select(AssignmentRule).where(col(AssignmentRule.active).is_(True))
    if only is not None:
        stmt = stmt.where(col(AssignmentRule.id) == only)
    return list(
        (
            await session.execute(stmt.order_by(col(AssignmentRule.position), col(AssignmentRule.created_at)))
        ).scalars()
    )


async def _lock_cursor(session: AsyncSession, rule: AssignmentRule) -> AssignmentCursor:
    await session.execute(
        pg_insert(AssignmentCursor)
        .values(rule_id=rule.id, org_id=rule.org_id, state={}, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["org_id", "rule_id"])
    )
    cursor = (
        await session.execute(
            select(AssignmentCursor)
            .where(col(AssignmentCursor.rule_id) == rule.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return cursor


@dataclass
class Evaluation:
    """The outcome of running the rules for one lead (assigning or just previewing)."""

    outcome: str
    rule: AssignmentRule | None
    chosen: Candidate | None
    rules_considered: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    state_before: dict[str, Any]
    state_after: dict[str, Any]
    explanation: str


@dataclass
class BatchMemo:
    """What a batch of assignments in one transaction reads once: the active rules, each rule's
    locked cursor and its candidates, whose load is kept current in memory as leads are given
    out (the transaction holds the cursor lock, so nobody else assigns by these rules meanwhile)."""

    rules: list[AssignmentRule] | None = None
    cursors: dict[uuid.UUID, AssignmentCursor] | None = None
    candidates: dict[uuid.UUID, list[Candidate]] | None = None
    users: dict[uuid.UUID, User | None] = field(default_factory=dict)

    async def user(self, session: AsyncSession, user_id: uuid.UUID) -> User | None:
        """A chosen user, loaded once per batch."""
        if user_id not in self.users:
            self.users[user_id] = await session.get(User, user_id)
        return self.users[user_id]

    def chosen(self, rule_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> None:
        """Count a lead given to `user_id` by the rule in the remembered load."""
        if self.candidates is None or rule_id not in self.candidates:
            return
        self.candidates[rule_id] = [
            replace(c, open_leads=c.open_leads + 1, last_assigned_at=now)
            if c.user_id == user_id and c.open_leads is not None
            else c
            for c in self.candidates[rule_id]
        ]


async def evaluate(
    session: AsyncSession,
    lead: Mapping[str, Any],
    *,
    now: datetime,
    lock: bool,
    exclude: frozenset[uuid.UUID] = frozenset(),
    only_rule: uuid.UUID | None = None,
    memo: BatchMemo | None = None,
) -> tuple[Evaluation, AssignmentCursor | None]:
    """Run the rules; with `lock`, the chosen rule's cursor stays locked for the caller to advance.
    With a `memo` (a batch in one transaction, `lock` set), rules, cursors and candidates are
    read once and reused."""
    considered: list[dict[str, Any]] = []
    if memo is not None and only_rule is None:
        if memo.rules is None:
            memo.rules = await active_rules(session)
        rules = memo.rules
    else:
        rules = await active_rules(session, only_rule)
    for rule in rules:
        if not rule_matches(rule, lead):
            considered.append({"rule_id": str(rule.id), "name": rule.name, "matched": False})
            continue
        cursor: AssignmentCursor | None = None
        if lock and memo is not None:
            memo.cursors = memo.cursors if memo.cursors is not None else {}
            cursor = memo.cursors.get(rule.id)
            if cursor is None:
                cursor = memo.cursors[rule.id] = await _lock_cursor(session, rule)
        elif lock:
            cursor = await _lock_cursor(session, rule)
        state: dict[str, Any] = dict(cursor.state) if cursor else dict(await _peek_state(session, rule.id))
        if memo is not None:
            memo.candidates = memo.candidates if memo.candidates is not None else {}
            if rule.id not in memo.candidates:
                memo.candidates[rule.id] = await load_candidates(session, rule)
            ordered = memo.candidates[rule.id]
        else:  # a preview (no lock) shows every candidate's load
            ordered = await load_candidates(session, rule, every_load=not lock)
        evaluated: list[dict[str, Any]] = []
        eligible: list[Candidate] = []
        for c in ordered:
            reason = (
                "current owner, who missed the contact SLA"
                if c.user_id in exclude
                else skip_reason(c, now, respect_hours=rule.respect_working_hours, strategy=rule.strategy)
            )
            evaluated.append(
                {
                    "user_id": str(c.user_id),
                    "name": c.name,
                    "open_leads": c.open_leads,
                    "capacity": c.capacity,
                    "eligible": reason is None,
                    "reason": reason or "eligible",
                }
            )
            if reason is None:
                eligible.append(c)
        if not eligible:
            considered.append(
                {
                    "rule_id": str(rule.id),
                    "name": rule.name,
                    "matched": True,
                    "result": "no eligible candidate",
                    "candidates": evaluated,
                }
            )
            continue
        chosen, new_state = pick(rule.strategy, ordered, eligible, state)
        for entry in evaluated:
            if entry["user_id"] == str(chosen.user_id):
                entry["reason"] = f"chosen by {rule.strategy}"
        considered.append({"rule_id": str(rule.id), "name": rule.name, "matched": True, "result": "assigned"})
        explanation = (
            f"Rule {rule.name!r} matched; {len(eligible)} of {len(ordered)} candidates eligible; "
            f"{rule.strategy} chose {chosen.name}."
        )
        return (
            Evaluation("assigned", rule, chosen, considered, evaluated, state, new_state, explanation),
            cursor,
        )
    explanation = (
        "No rule matched."
        if not any(r.get("matched") for r in considered)
        else ("Matching rules had no eligible candidate.")
    )
    return Evaluation(
        "pooled", None, None, considered, [], {}, {}, explanation + " The lead stays in the pool."
    ), None


async def _peek_state(session: AsyncSession, rule_id: uuid.UUID) -> dict[str, Any]:
    cursor = await session.get(AssignmentCursor, rule_id)
    return dict(cursor.state) if cursor else {}


async def assign(
    session: AsyncSession,
    lead: Lead,
    *,
    trigger: str,
    trigger_key: str,
    exclude: frozenset[uuid.UUID] = frozenset(),
    only_rule: uuid.UUID | None = None,
    memo: BatchMemo | None = None,
) -> AssignmentDecision:
    """Assign a (locked) lead by the rules and record the decision; running it twice does nothing more.
    With a `memo` (`assign_created_batch`: leads claimed without a decision, under their row
    locks) the look-up of an earlier decision is left out and nothing is flushed: the batch
    writes its rows together at the end."""
    if memo is None:
        existing = (
            await session.execute(
                select(AssignmentDecision).where(col(AssignmentDecision.trigger_key) == trigger_key)
            )
        ).scalar_one_or_none()
        if existing is not None:
            return existing
    now = utcnow()
    previous_owner = lead.owner_id
    if trigger == "lead.created" and (lead.owner_id is not None or not lead.is_open):
        decision = AssignmentDecision(
            lead_id=lead.id,
            trigger=trigger,
            trigger_key=trigger_key,
            outcome="kept",
            chosen_user_id=lead.owner_id,
            previous_owner_id=previous_owner,
            explanation=KEPT,
        )
        session.add(decision)
        await session.flush()
        return decision
    evaluation, cursor = await evaluate(
        session, lead_fields(lead), now=now, lock=True, exclude=exclude, only_rule=only_rule, memo=memo
    )
    sla_due_at = None
    if evaluation.outcome == "assigned" and evaluation.chosen and evaluation.rule:
        assert cursor is not None
        cursor.state = evaluation.state_after
        cursor.updated_at = now
        if memo is not None:
            memo.chosen(evaluation.rule.id, evaluation.chosen.user_id, now)
        owner = await (
            memo.user(session, evaluation.chosen.user_id)
            if memo
            else session.get(User, evaluation.chosen.user_id)
        )
        if evaluation.rule.contact_sla:
            sla_due_at = now + parse_duration(evaluation.rule.contact_sla)
        await set_owner(
            session,
            lead,
            evaluation.chosen.user_id,
            team_id=evaluation.rule.target_team_id or (owner.team_id if owner else None),
            actor=None,
            action="auto_assign",
            by=trigger,
            rule_id=evaluation.rule.id,
        )
    elif previous_owner is not None:
        # Nobody else could take it (an SLA reassignment): back to the pool rather than stay stale.
        await set_owner(
            session, lead, None, team_id=lead.team_id, actor=None, action="return_to_pool", reason=trigger
        )
    decision = build(
        AssignmentDecision,
        **_decision_values(lead.id, trigger, trigger_key, evaluation, previous_owner, sla_due_at),
    )
    session.add(decision)
    if memo is None:
        await session.flush()
    return decision


def _decision_values(
    lead_id: uuid.UUID,
    trigger: str,
    trigger_key: str,
    evaluation: Evaluation,
    previous_owner: uuid.UUID | None,
    sla_due_at: datetime | None,
) -> dict[str, Any]:
    """A decision row's values for an evaluation (assign, and the batch's rows)."""
    return {
        "lead_id": lead_id,
        "trigger": trigger,
        "trigger_key": trigger_key,
        "outcome": evaluation.outcome,
        "rule_id": evaluation.rule.id if evaluation.rule else None,
        "rule_name": evaluation.rule.name if evaluation.rule else None,
        "strategy": evaluation.rule.strategy if evaluation.rule else None,
        "chosen_user_id": evaluation.chosen.user_id if evaluation.chosen else None,
        "previous_owner_id": previous_owner,
        "explanation": evaluation.explanation,
        "rules_considered": evaluation.rules_considered,
        "candidates": evaluation.candidates,
        "state_before": evaluation.state_before,
        "state_after": evaluation.state_after,
        "sla_due_at": sla_due_at,
    }


async def assign_created_lead(
    session: AsyncSession, *, lead_id: uuid.UUID, trigger_key: str
) -> AssignmentDecision:
    """Lock a new lead and assign it by the rules (`lead.created`); NotFound when it is gone.
    A lead has one `lead.created` decision whatever the key: the job and the sweep never both run
    the rules for it."""
    lead = await get_or_404(session, Lead, lead_id, what="lead", lock=True)
    earlier = await _created_decision(session, lead_id)
    if earlier is not None:
        return earlier
    return await assign(session, lead, trigger="lead.created", trigger_key=trigger_key)


async def _created_decision(session: AsyncSession, lead_id: uuid.UUID) -> AssignmentDecision | None:
    return (
        await session.execute(
            select(AssignmentDecision)
            .where(
                col(AssignmentDecision.lead_id) == lead_id, col(AssignmentDecision.trigger) == "lead.created"
            )
            .limit(1)
        )
    ).scalar_one_or_none()


BATCH_SIZE = 200
# A lead without its `lead.created` decision (a correlated NOT EXISTS on the decisions).
_NO_CREATED_DECISION = ~(
    select(col(AssignmentDecision.id))
    .where(
        col(AssignmentDecision.org_id) == col(Lead.org_id),
        col(AssignmentDecision.lead_id) == col(Lead.id),
        col(AssignmentDecision.trigger) == "lead.created",
    )
    .exists()
)


class LeadBusy(Exception):
    """The lead is locked by another transaction (another worker's batch): try again shortly."""

    def __init__(self, lead_id: uuid.UUID) -> None:
        super().__init__(f"lead {lead_id} is being assigned elsewhere")
        self.lead_id = lead_id


BATCH_SECONDS = 1.0
# A job whose oldest lead has waited this long takes the backlog along (up to BATCH_SIZE more):
# under steady intake the batches then grow with the queue instead of queueing behind each other
# on the rule cursor (at 168 leads/s: accepted -> assigned p50 1.0 s with 1 s here, 0.23 s now).
CATCH_UP_AFTER = timedelta(seconds=0.15)


async def assign_created_batch(
    session: AsyncSession,
    *,
    lead_id: uuid.UUID,
    trigger_key: str,
    limit: int = BATCH_SIZE,
    budget_seconds: float = BATCH_SECONDS,
) -> AssignmentDecision:
    """`assign_created_lead` for the job's lead, then, in the same transaction, for up to
    `limit - 1` undecided new leads of the organisation created at or after it (oldest first),
    claimed with FOR UPDATE SKIP LOCKED so two workers never claim the same lead. It stops
    taking claimed leads once `budget_seconds` have passed (the job has a deadline; the leads
    left are unlocked at commit and go to their own jobs).

    One transaction holds the rule cursor's row lock for the whole batch, so round robin stays
    exact (each decision records the state before and after it, in order) while the workers
    stop queueing on the cursor lead by lead; the claimed leads' own jobs then find their
    decision and do nothing. The job's lead's decision is returned."""
    # Most jobs find their lead decided by a batch already: one look-up, no lock (decisions are
    # never changed once written).
    earlier = await _created_decision(session, lead_id)
    if earlier is not None:
        return earlier
    mine = await session.execute(
        select(col(Lead.id)).where(col(Lead.id) == lead_id).with_for_update(skip_locked=True)
    )
    if mine.scalar_one_or_none() is None:
        if await session.get(Lead, lead_id) is None:
            raise NotFound(f"No lead with id {lead_id}.")
        raise LeadBusy(lead_id)  # in another worker's batch right now: its decision is coming
    decision = await assign_created_lead(session, lead_id=lead_id, trigger_key=trigger_key)
    if decision.trigger_key != trigger_key or limit <= 1:
        return decision  # decided earlier: another batch or the sweep is on these leads
    lead = await session.get(Lead, lead_id)
    assert lead is not None
    claimed = (
        await session.execute(
            select(Lead)
            .where(
                col(Lead.created_at) >= lead.created_at,
                col(Lead.id) != lead_id,
                col(Lead.owner_id).is_(None),
                OPEN_LEAD,
                _NO_CREATED_DECISION,
            )
            .order_by(col(Lead.created_at), col(Lead.id))
            .limit(limit - 1)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    ).scalars()
    deadline = monotonic() + budget_seconds
    memo = BatchMemo()
    with session.no_autoflush:  # the rows go out together at the end (one UPDATE of the cursor)
        for other in list(claimed):
            if monotonic() > deadline:
                break
            await assign(
                session, other, trigger="lead.created", trigger_key=f"lead.created:{other.id}", memo=memo
            )
    await session.flush()
    return decision


@dataclass
class BatchOutcome:
    """What `assign_created_leads` did: leads decided now, and leads still without a decision
    (locked by another transaction, or left when the time budget ran out)."""

    decided: int
    undecided: int


def _undecided_created(lead_ids: Sequence[uuid.UUID]) -> Any:
    return select(Lead).where(col(Lead.id).in_(lead_ids), _NO_CREATED_DECISION)


_LEADS: Table = Lead.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = AssignmentDecision.__table__  # type: ignore[attr-defined]
# A claimed lead's columns, and whether it is open (`Lead.is_open`, computed by the server).
_CLAIM_COLUMNS = (*_LEADS.c, OPEN_LEAD.label("is_open"))


def _claim(org_id: uuid.UUID) -> Select[Any]:
    """Leads of the organisation as plain rows, locked (FOR UPDATE SKIP LOCKED), oldest first."""
    return (
        select(*_CLAIM_COLUMNS)
        .where(_LEADS.c.org_id == org_id)
        .order_by(_LEADS.c.created_at, _LEADS.c.id)
        .with_for_update(of=_LEADS, skip_locked=True)
    )


async def assign_created_leads(
    session: AsyncSession,
    lead_ids: Sequence[uuid.UUID],
    *,
    more: int = BATCH_SIZE,
    budget_seconds: float = BATCH_SECONDS,
) -> BatchOutcome:
    """Assign new leads by the rules (`lead.created`), oldest first, in the session's transaction:
    the relay hands a batch of `lead.created` events of one organisation to one job. When the
    oldest of them has waited over CATCH_UP_AFTER (the jobs are behind), up to `more` other
    undecided pooled leads created since come along, so one job catches up on the backlog and
    the later jobs find their leads decided (while they keep up, each job takes only its own
    leads, and two workers' jobs never hold each other's).

    The leads without a decision are claimed with FOR UPDATE SKIP LOCKED (a lead in another
    worker's batch is left to it), and the rules' cursors are locked once for the batch, so round
    robin stays exact and each decision records the state before and after it, in order. Leads
    already decided, or gone, are left alone; a re-run decides only what is still undecided.
    `undecided` counts the given leads still without a decision.

    The same decisions as `assign` makes lead by lead, written together at the end: the leads are
    read as plain rows and the owners, audit entries, events and decisions go out with one
    statement per table (`set_owners`), not through the unit of work."""
    if not lead_ids:
        return BatchOutcome(decided=0, undecided=0)
    org_id = session.info.get("org_id")
    if org_id is None:
        raise TenancyError("assigning leads needs a session bound to their organisation")
    conn = await session.connection()
    own = list(
        (await conn.execute(_claim(org_id).where(_LEADS.c.id.in_(lead_ids), _NO_CREATED_DECISION))).mappings()
    )
    claimed = own
    if own and more > 0 and utcnow() - own[0]["created_at"] > CATCH_UP_AFTER:
        others = (
            await conn.execute(
                _claim(org_id)
                .where(
                    _LEADS.c.created_at >= own[0]["created_at"],
                    _LEADS.c.id.not_in(lead_ids),
                    _LEADS.c.owner_id.is_(None),
                    OPEN_LEAD,
                    _NO_CREATED_DECISION,
                )
                .limit(more)
            )
        ).mappings()
        claimed = sorted([*own, *others], key=lambda lead: (lead["created_at"], str(lead["id"])))
    deadline = monotonic() + budget_seconds
    memo = BatchMemo()
    owners: list[NewOwner] = []
    decisions: list[dict[str, Any]] = []
    for lead in claimed:
        if monotonic() > deadline:
            break
        decisions.append(await _decide_created(session, lead, memo, owners))
    if decisions:
        await set_owners(session, org_id, owners, action="auto_assign")
        for row in decisions:
            row["org_id"] = org_id
        await conn.execute(insert(_DECISIONS), decisions)
    await session.flush()  # the rules' cursors
    own_ids = {lead["id"] for lead in own}
    if sum(row["lead_id"] in own_ids for row in decisions) == len(set(lead_ids)):
        return BatchOutcome(decided=len(decisions), undecided=0)  # every given lead decided now
    left = (
        await session.execute(select(func.count()).select_from(_undecided_created(lead_ids).subquery()))
    ).scalar_one()
    return BatchOutcome(decided=len(decisions), undecided=int(left))


async def _decide_created(
    session: AsyncSession, lead: Mapping[str, Any], memo: BatchMemo, owners: list[NewOwner]
) -> dict[str, Any]:
    """`assign(trigger="lead.created")` for a claimed lead row without a decision: the decision's
    column values; an owner given is added to `owners` and the chosen rule's cursor advanced."""
    trigger_key = f"lead.created:{lead['id']}"
    if lead["owner_id"] is not None or not lead["is_open"]:
        return column_values(
            AssignmentDecision,
            {
                "lead_id": lead["id"],
                "trigger": "lead.created",
                "trigger_key": trigger_key,
                "outcome": "kept",
                "chosen_user_id": lead["owner_id"],
                "previous_owner_id": lead["owner_id"],
                "explanation": KEPT,
            },
        )
    now = utcnow()
    fields = {key: _plain(lead[key]) for key in _LEAD_COLUMNS}
    evaluation, cursor = await evaluate(session, fields, now=now, lock=True, memo=memo)
    sla_due_at = None
    if evaluation.outcome == "assigned" and evaluation.chosen and evaluation.rule:
        assert cursor is not None
        cursor.state = evaluation.state_after
        cursor.updated_at = now
        memo.chosen(evaluation.rule.id, evaluation.chosen.user_id, now)
        owner = await memo.user(session, evaluation.chosen.user_id)
        if evaluation.rule.contact_sla:
            sla_due_at = now + parse_duration(evaluation.rule.contact_sla)
        owners.append(
            NewOwner(
                lead_id=lead["id"],
                owner_id=evaluation.chosen.user_id,
                team_id=evaluation.rule.target_team_id or (owner.team_id if owner else None),
                old_team_id=lead["team_id"],
                old_pooled=lead["pooled"],
                old_assigned_at=lead["assigned_at"],
                by="lead.created",
                rule_id=evaluation.rule.id,
            )
        )
    return column_values(
        AssignmentDecision,
        _decision_values(lead["id"], "lead.created", trigger_key, evaluation, None, sla_due_at),
    )


async def undecided_leads(
    session: AsyncSession, *, since: datetime, until: datetime, limit: int = 200
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(org id, lead id) of pooled leads created in [since, until) without any decision, any
    organisation (read through the created_at index: the window bounds the cost)."""
    rows = await session.execute(
        select(col(Lead.org_id), col(Lead.id))
        .where(
            col(Lead.created_at) >= since,
            col(Lead.created_at) < until,
            col(Lead.pooled).is_(True),
            col(Lead.owner_id).is_(None),
            col(Lead.deleted_at).is_(None),
            col(Lead.duplicate_of).is_(None),
            ~select(col(AssignmentDecision.id))
            .where(
                col(AssignmentDecision.org_id) == col(Lead.org_id),
                col(AssignmentDecision.lead_id) == col(Lead.id),
            )
            .exists(),
        )
        .order_by(col(Lead.created_at))
        .limit(limit)
        .execution_options(cross_tenant=True)
    )
    return [(row[0], row[1]) for row in rows]


async def latest_decision(session: AsyncSession, lead_id: uuid.UUID) -> AssignmentDecision | None:
    """The most recent decision about a lead."""
    return (
        await session.execute(
            select(AssignmentDecision)
            .where(col(AssignmentDecision.lead_id) == lead_id)
            .order_by(col(AssignmentDecision.created_at).desc(), col(AssignmentDecision.id).desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def escalate(
    session: AsyncSession, lead: Lead, *, rule: AssignmentRule, trigger_key: str
) -> AssignmentDecision:
    """Hand a lead whose contact SLA was missed to the team's manager (rule's team, else the owner's)."""
    team_id = rule.target_team_id
    if team_id is None and lead.owner_id is not None:
        owner = await session.get(User, lead.owner_id)
        team_id = owner.team_id if owner else None
    team = await session.get(Team, team_id) if team_id else None
    manager_id = team.manager_id if team else None
    previous = lead.owner_id
    if manager_id is not None:
        await set_owner(session, lead, manager_id, team_id=team_id, actor=None, action="escalate", by="sla")
    decision = AssignmentDecision(
        lead_id=lead.id,
        trigger="sla",
        trigger_key=trigger_key,
        outcome="escalated" if manager_id else "kept",
        rule_id=rule.id,
        rule_name=rule.name,
        strategy=rule.strategy,
        chosen_user_id=manager_id or previous,
        previous_owner_id=previous,
        explanation=(
            "Contact SLA missed; escalated to the team manager."
            if manager_id
            else "Contact SLA missed, but the team has no manager; the owner keeps the lead."
        ),
    )
    session.add(decision)
    await session.flush()
    return decision

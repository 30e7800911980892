"""Dunning (催款): policies and the daily run.

The policy of an installment is its account's own (when active), else the organisation's
default. A run "as of" local date D looks at every installment that is not settled now (paid or
written off; a payment that settles one stops its later steps) and whose order existed on D. A
step is due when due date + offset_days ≤ D. Each step is claimed once per installment by
inserting its log row under the unique key (org_id, installment_id, step_id): a rerun, or a
second worker running at the same time, finds the row and does nothing (the second insert
waits for the first transaction and then does nothing). A claimed step is:
- skipped ("promise_to_pay") when its day falls inside a promise-to-pay window
  (promise_made_on ≤ day ≤ promise_date), never fired later;
- skipped ("superseded") when a later step of the policy is due too (a run that missed days, or
  an order entered late, sends only the latest step, not every reminder at once);
- skipped ("no_billing_address") for an email step when the account has no billing email and
  no contact with an email;
- otherwise fired: an email (an outbound message), a task for the order's owner, an escalation
  task for the owner's team manager, or the legal-notice flag on the account.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Date, cast, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, Forbidden, NotFound, ValidationFailed
from app.models.account import Account, Contact
from app.models.base import utcnow
from app.models.common import Role
from app.models.dunning import (
    DunningAction,
    DunningLog,
    DunningOutcome,
    DunningPolicy,
    DunningPolicyCreate,
    DunningPolicyRead,
    DunningPolicyUpdate,
    DunningStep,
    DunningStepIn,
    DunningStepRead,
    MessageState,
    OutboundMessage,
)
from app.models.events import DunningEmail, DunningMessage
from app.models.lead import Activity, ActivityKind
from app.models.receivable import Installment, Order, OrderStatus
from app.models.user import Team, User
from app.money import round_money
from app.security import Principal
from app.services import audit, outbox
from app.services.common import check_version, flush_unique
from app.services.receivables import ledger, mail
from app.services.receivables.installments import get_installment


def _check_write(principal: Principal) -> None:
    if not principal.allows("dunning:write"):
        raise Forbidden("This credential may not change dunning.")
    if not (principal.is_admin or principal.is_finance or principal.role == Role.manager):
        raise Forbidden("Only admins, managers and finance users manage dunning.")


# --- policies ---------------------------------------------------------------------------------


async def _steps(session: AsyncSession, policy_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[DunningStep]]:
    rows = (
        await session.execute(
            select(DunningStep)
            .where(col(DunningStep.policy_id).in_(policy_ids), col(DunningStep.retired).is_(False))
            .order_by(col(DunningStep.offset_days), col(DunningStep.position))
        )
    ).scalars()
    out: dict[uuid.UUID, list[DunningStep]] = {p: [] for p in policy_ids}
    for step in rows:
        out[step.policy_id].append(step)
    return out


def read_model(policy: DunningPolicy, steps: list[DunningStep]) -> DunningPolicyRead:
    """A policy with its steps as the API shows it."""
    data = policy.model_dump(warnings=False)
    data["steps"] = [DunningStepRead.model_validate(s.model_dump(warnings=False)) for s in steps]
    return DunningPolicyRead.model_validate(data)


async def _add_steps(
    session: AsyncSession, policy: DunningPolicy, steps: list[DunningStepIn], start: int
) -> None:
    for position, step in enumerate(sorted(steps, key=lambda s: s.offset_days), start):
        session.add(DunningStep(policy_id=policy.id, position=position, **step.model_dump()))


async def _unset_default(session: AsyncSession, keep: uuid.UUID) -> None:
    await session.execute(
        update(DunningPolicy)
        .where(col(DunningPolicy.is_default).is_(True), col(DunningPolicy.id) != keep)
        .values(is_default=False, updated_at=utcnow(), version=col(DunningPolicy.version) + 1)
        .execution_options(synchronize_session=False)
    )


async def create_policy(
    session: AsyncSession, principal: Principal, data: DunningPolicyCreate
) -> DunningPolicyRead:
    """A new policy; `is_default` makes it the organisation's default (the previous one stops being)."""
    _check_write(principal)
    policy = DunningPolicy(name=data.name, is_default=data.is_default, active=data.active)
    if data.is_default:
        await _unset_default(session, policy.id)
    session.add(policy)
    await session.flush()
    await _add_steps(session, policy, data.steps, 1)
    await flush_unique(session, "Another policy is the default.")
    audit.record(
        session,
        actor=principal,
        entity="dunning_policy",
        entity_id=policy.id,
        action="create",
        changes={"name": [None, data.name], "steps": [None, [s.model_dump(mode="json") for s in data.steps]]},
    )
    return read_model(policy, (await _steps(session, [policy.id]))[policy.id])


async def get_policy(session: AsyncSession, policy_id: uuid.UUID, *, lock: bool = False) -> DunningPolicy:
    """One policy of the organisation, else 404."""
    stmt = select(DunningPolicy).where(col(DunningPolicy.id) == policy_id)
    if lock:
        stmt = stmt.with_for_update()
    policy = (await session.execute(stmt)).scalar_one_or_none()
    if policy is None:
        raise NotFound(f"No dunning policy with id {policy_id}.")
    return policy


async def read_policy(session: AsyncSession, policy_id: uuid.UUID) -> DunningPolicyRead:
    """One policy with its steps."""
    policy = await get_policy(session, policy_id)
    return read_model(policy, (await _steps(session, [policy.id]))[policy.id])


async def list_policies(session: AsyncSession) -> list[DunningPolicyRead]:
    """Every policy of the organisation, the default first."""
    policies = list(
        (
            await session.execute(
                select(DunningPolicy).order_by(col(DunningPolicy.is_default).desc(), col(DunningPolicy.name))
            )
        ).scalars()
    )
    steps = await _steps(session, [p.id for p in policies])
    return [read_model(p, steps[p.id]) for p in policies]


async def update_policy(
    session: AsyncSession,
    principal: Principal,
    policy_id: uuid.UUID,
    data: DunningPolicyUpdate,
    *,
    expected_version: int | None = None,
) -> DunningPolicyRead:
    """Rename, (de)activate, make default, or replace the steps (old steps are retired: their
    log rows stay, and they never fire again)."""
    _check_write(principal)
    policy = await get_policy(session, policy_id, lock=True)
    check_version(policy, expected_version)
    changes = data.model_dump(exclude_unset=True, exclude={"steps"})
    if data.is_default:
        await _unset_default(session, policy.id)
    for name, value in changes.items():
        if value is None:
            raise ValidationFailed(
                f"{name} cannot be null.",
                errors=[FieldError(field=name, code="null", message="may not be null")],
            )
        setattr(policy, name, value)
    if data.steps is not None:
        last = (
            await session.execute(
                select(func.coalesce(func.max(col(DunningStep.position)), 0)).where(
                    col(DunningStep.policy_id) == policy.id
                )
            )
        ).scalar_one()
        await session.execute(
            update(DunningStep)
            .where(col(DunningStep.policy_id) == policy.id)
            .values(retired=True)
            .execution_options(synchronize_session=False)
        )
        await _add_steps(session, policy, data.steps, int(last) + 1)
    policy.version += 1
    policy.updated_at = utcnow()
    await flush_unique(session, "Another policy is the default.")
    audit.record(
        session,
        actor=principal,
        entity="dunning_policy",
        entity_id=policy.id,
        action="update",
        changes={k: [None, v] for k, v in data.model_dump(mode="json", exclude_unset=True).items()},
    )
    return read_model(policy, (await _steps(session, [policy.id]))[policy.id])


# --- the run ----------------------------------------------------------------------------------


async def _candidates(session: AsyncSession, org_id: uuid.UUID, as_of: date, tz: str) -> list[Any]:
    """(installment, order, account) of unsettled installments whose order existed on `as_of`,
    in due-date order (every run claims in the same order)."""
    stmt = (
        select(Installment, Order, Account)
        .join(Order, col(Order.id) == col(Installment.order_id))
        .join(Account, col(Account.id) == col(Order.account_id))
        .where(
            col(Installment.status).not_in(ledger.SETTLED),
            col(Order.status) != OrderStatus.cancelled,
            col(Installment.due_date) <= as_of + timedelta(days=366),
            cast(func.timezone(tz, col(Order.ordered_at)), Date) <= as_of,
        )
        .order_by(col(Installment.due_date), col(Installment.id))
    )
    return [row for row in (await session.execute(stmt)).all() if ledger.open_amount(row[0]) > 0]


async def _policies_with_steps(
    session: AsyncSession,
) -> tuple[DunningPolicy | None, dict[uuid.UUID, DunningPolicy], dict[uuid.UUID, list[DunningStep]]]:
    policies = list((await session.execute(select(DunningPolicy).where(col(DunningPolicy.active)))).scalars())
    default = next((p for p in policies if p.is_default), None)
    by_id = {p.id: p for p in policies}
    return default, by_id, await _steps(session, list(by_id))


async def run(session: AsyncSession, org_id: uuid.UUID, *, as_of: date, smtp: bool) -> tuple[int, int]:
    """Run dunning for one organisation as of a local date; (fired, skipped) by this run."""
    settings = await ledger.settings_of(session, org_id)
    default, policies, steps_of = await _policies_with_steps(session)
    if not policies:
        return 0, 0
    fired = skipped = 0
    for inst, order, account in await _candidates(session, org_id, as_of, settings.timezone):
        policy = policies.get(account.dunning_policy_id) if account.dunning_policy_id else None
        policy = policy or default
        if policy is None:
            continue
        due = [s for s in steps_of[policy.id] if inst.due_date + timedelta(days=s.offset_days) <= as_of]
        for step in due:
            day = inst.due_date + timedelta(days=step.offset_days)
            reason = None
            if (
                inst.promise_date
                and inst.promise_made_on
                and inst.promise_made_on <= day <= inst.promise_date
            ):
                reason = "promise_to_pay"
            elif step.offset_days < due[-1].offset_days:
                reason = "superseded"
            log_id = await _claim(session, org_id, inst, policy, step, day, as_of, reason)
            if log_id is None:
                continue  # already logged by an earlier or a concurrent run
            if reason is not None:
                skipped += 1
                continue
            outcome = await _fire(
                session, org_id, inst, order, account, step, settings.dunning_language, smtp
            )
            if outcome:  # the legal-notice flag changes nothing on its log row
                await session.execute(
                    update(DunningLog)
                    .where(col(DunningLog.id) == log_id)
                    .values(**outcome)
                    .execution_options(synchronize_session=False)
                )
            if outcome.get("outcome") == DunningOutcome.skipped:
                skipped += 1
            else:
                fired += 1
    return fired, skipped


async def _claim(
    session: AsyncSession,
    org_id: uuid.UUID,
    inst: Installment,
    policy: DunningPolicy,
    step: DunningStep,
    day: date,
    as_of: date,
    reason: str | None,
) -> uuid.UUID | None:
    """Insert the step's log row unless it exists; its id when this run claimed it."""
    stmt = (
        insert(DunningLog)
        .values(
            id=uuid.uuid4(),
            org_id=org_id,
            installment_id=inst.id,
            step_id=step.id,
            policy_id=policy.id,
            offset_days=step.offset_days,
            action=str(step.action),
            trigger_date=day,
            run_for=as_of,
            outcome=DunningOutcome.skipped if reason else DunningOutcome.fired,
            reason=reason,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["org_id", "installment_id", "step_id"])
        .returning(col(DunningLog.id))
    )
    return (await session.execute(stmt)).scalar_one_or_none()


def _values(inst: Installment, order: Order, account: Account, day: date) -> dict[str, str]:
    return {
        "customer": account.name,
        "order": order.number,
        "amount": str(round_money(ledger.open_amount(inst), inst.currency)),
        "currency": inst.currency,
        "due_date": inst.due_date.isoformat(),
        "days": str((day - inst.due_date).days),
    }


async def _fire(
    session: AsyncSession,
    org_id: uuid.UUID,
    inst: Installment,
    order: Order,
    account: Account,
    step: DunningStep,
    language: str,
    smtp: bool,
) -> dict[str, Any]:
    """Do a step's action; the log row's changes."""
    day = inst.due_date + timedelta(days=step.offset_days)
    values = _values(inst, order, account, day)
    if step.action == DunningAction.email:
        to = account.billing_email or await _contact_email(session, account.id)
        if not to:
            return {"outcome": DunningOutcome.skipped, "reason": "no_billing_address"}
        lang = step.language or language
        subject_t, body_t = mail.templates_for(lang, step.subject_template, step.body_template)
        message = OutboundMessage(
            installment_id=inst.id,
            account_id=account.id,
            to_address=to,
            subject=mail.render(subject_t, values)[:500],
            body=mail.render(body_t, values),
            language=lang,
            transport="smtp" if smtp else "webhook",
            state=MessageState.queued if smtp else MessageState.handed_off,
        )
        message.org_id = org_id
        session.add(message)
        await session.flush()
        if smtp:
            await outbox.emit(session, DunningEmail(message_id=message.id), org_id=org_id)
        else:
            await outbox.emit(
                session,
                DunningMessage(
                    message_id=message.id,
                    installment_id=inst.id,
                    account_id=account.id,
                    to=to,
                    subject=message.subject,
                    body=message.body,
                    language=lang,
                ),
                org_id=org_id,
            )
        return {"message_id": message.id}
    if step.action in (DunningAction.owner_task, DunningAction.manager_task):
        owner = order.owner_id
        if step.action == DunningAction.manager_task:
            owner = await _manager_of(session, order.owner_id) or owner
        subject = (
            f"催款 / Collect {values['amount']} {values['currency']} from {values['customer']} "
            f"(order {values['order']}, due {values['due_date']})"
        )
        if step.action == DunningAction.manager_task:
            subject = "Escalation: " + subject
        task = Activity(
            kind=ActivityKind.task,
            subject=subject[:500],
            owner_id=owner,
            due_at=utcnow(),
            deal_id=order.deal_id,
            details={
                "installment_id": str(inst.id),
                "order_id": str(order.id),
                "dunning_step_id": str(step.id),
            },
        )
        task.org_id = org_id
        session.add(task)
        await session.flush()
        return {"task_id": task.id}
    account.legal_notice = True
    account.legal_notice_at = account.legal_notice_at or utcnow()
    account.version += 1
    audit.record(
        session,
        actor=None,
        entity="account",
        entity_id=account.id,
        action="legal_notice",
        changes={"legal_notice": [False, True], "installment_id": [None, str(inst.id)]},
        org_id=org_id,
    )
    return {}


async def _contact_email(session: AsyncSession, account_id: uuid.UUID) -> str | None:
    return (
        await session.execute(
            select(col(Contact.email))
            .where(col(Contact.account_id) == account_id, col(Contact.email).is_not(None))
            .order_by(col(Contact.created_at))
            .limit(1)
        )
    ).scalar_one_or_none()


async def _manager_of(session: AsyncSession, user_id: uuid.UUID | None) -> uuid.UUID | None:
    if user_id is None:
        return None
    return (
        await session.execute(
            select(col(Team.manager_id))
            .join(User, col(User.team_id) == col(Team.id))
            .where(col(User.id) == user_id)
        )
    ).scalar_one_or_none()


async def run_for_principal(
    session: AsyncSession, principal: Principal, *, as_of: date | None, smtp: bool
) -> tuple[date, int, int]:
    """POST /v1/dunning/run: the organisation's run as of a date (default today)."""
    _check_write(principal)
    day = as_of or await ledger.org_today(session, principal.org_id)
    fired, skipped = await run(session, principal.org_id, as_of=day, smtp=smtp)
    return day, fired, skipped


async def log_of(session: AsyncSession, principal: Principal, installment_id: uuid.UUID) -> list[DunningLog]:
    """The dunning log of an installment the caller may see, by trigger day."""
    await get_installment(session, principal, installment_id)
    return list(
        (
            await session.execute(
                select(DunningLog)
                .where(col(DunningLog.installment_id) == installment_id)
                .order_by(col(DunningLog.trigger_date), col(DunningLog.offset_days))
            )
        ).scalars()
    )

"""Lead scoring: the organisation's active rules, summed, with a breakdown of every point."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import FieldError, Forbidden, ValidationFailed
from app.models.lead import Lead
from app.models.scoring import ScoringOperator, ScoringRule, ScoringRuleCreate, ScoringRuleUpdate
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services import cache as intake_cache
from app.services.common import apply_changes, get_or_404

FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "yahoo.co.jp",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "proton.me",
        "protonmail.com",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "zoho.com",
        "qq.com",
        "163.com",
        "126.com",
        "sina.com",
        "sohu.com",
        "foxmail.com",
        "naver.com",
        "hanmail.net",
    }
)
LEAD_FIELDS = frozenset(
    {"email", "phone", "name", "company", "title", "country", "industry", "message", "source", "tags"}
)


def _field_value(lead: Lead, name: str) -> Any:
    if name.startswith("attributes."):
        return lead.attributes.get(name.removeprefix("attributes."))
    value = getattr(lead, name, None)
    return getattr(value, "value", value)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, str) and len(value) > 100:
        return None  # no amount is that long; Decimal of a huge string is slow
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None  # "NaN" cannot be ordered


def matches(rule: ScoringRule, lead: Lead) -> bool:
    """Whether the lead satisfies the rule's condition (string comparisons ignore case)."""
    value = _field_value(lead, rule.field)
    op = rule.operator
    if op == ScoringOperator.present:
        return value not in (None, "", [], {})
    if op == ScoringOperator.absent:
        return value in (None, "", [], {})
    if value in (None, ""):
        return False
    if op in (ScoringOperator.free_mail, ScoringOperator.company_email):
        domain = str(value).rpartition("@")[2].lower()
        free = domain in FREE_MAIL_DOMAINS
        return free if op == ScoringOperator.free_mail else (bool(domain) and not free)
    text = str(value).lower() if not isinstance(value, list) else [str(v).lower() for v in value]
    wanted = rule.value
    if op == ScoringOperator.eq:
        return text == str(wanted).lower()
    if op == ScoringOperator.neq:
        return text != str(wanted).lower()
    if op == ScoringOperator.in_:
        options = {str(w).lower() for w in (wanted if isinstance(wanted, list) else [wanted])}
        return bool(set(text) & options) if isinstance(text, list) else text in options
    if op == ScoringOperator.contains:
        return str(wanted).lower() in text
    left, right = _number(value), _number(wanted)
    if left is None or right is None:
        return False
    return left >= right if op == ScoringOperator.gte else left <= right


async def rescore(session: AsyncSession, lead: Lead) -> None:
    """Recompute `score` and `score_breakdown` from the organisation's active rules."""
    score(lead, await intake_cache.scoring_rules(session, lead.org_id))


def score(lead: Lead, rules: list[ScoringRule]) -> None:
    """Set `score` and `score_breakdown` from these rules."""
    breakdown: list[dict[str, Any]] = [
        {
            "rule_id": str(r.id),
            "name": r.name,
            "field": r.field,
            "operator": str(r.operator),
            "points": r.points,
        }
        for r in rules
        if matches(r, lead)
    ]
    lead.score = sum(int(b["points"]) for b in breakdown)
    lead.score_breakdown = breakdown


def _check_field(name: str | None) -> None:
    if name is not None and name not in LEAD_FIELDS and not name.startswith("attributes."):
        raise ValidationFailed(
            f"Cannot score on {name!r}.",
            errors=[
                FieldError(
                    field="field",
                    code="invalid_field",
                    message=f"one of {', '.join(sorted(LEAD_FIELDS))} or attributes.<key>",
                )
            ],
        )


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only an admin can change scoring rules.")


async def list_rules(session: AsyncSession, page: PageParams) -> tuple[list[ScoringRule], str | None]:
    """The organisation's scoring rules."""
    return await paginate(
        session,
        select(ScoringRule),
        page,
        id_column=ScoringRule.id,
        sortable={"created_at": ScoringRule.created_at},
        default_sort="created_at",
    )


async def create_rule(session: AsyncSession, principal: Principal, data: ScoringRuleCreate) -> ScoringRule:
    """Add a rule (admins); existing leads are rescored when they next change."""
    _admin(principal)
    intake_cache.forget_rules(principal.org_id)
    _check_field(data.field)
    rule = ScoringRule(**data.model_dump())
    session.add(rule)
    await session.flush()
    audit.record(session, actor=principal, entity="scoring_rule", entity_id=rule.id, action="create")
    return rule


async def update_rule(
    session: AsyncSession,
    principal: Principal,
    rule_id: uuid.UUID,
    data: ScoringRuleUpdate,
    *,
    expected_version: int | None,
) -> ScoringRule:
    """Change a rule (admins)."""
    _admin(principal)
    intake_cache.forget_rules(principal.org_id)
    rule = await get_or_404(session, ScoringRule, rule_id, what="scoring rule")
    changes = data.changes()  # 422 for a null in a column that cannot be empty
    _check_field(changes.get("field"))
    diff = apply_changes(rule, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session, actor=principal, entity="scoring_rule", entity_id=rule.id, action="update", changes=diff
        )
    await session.flush()
    return rule


async def delete_rule(session: AsyncSession, principal: Principal, rule_id: uuid.UUID) -> None:
    """Remove a rule (admins)."""
    _admin(principal)
    intake_cache.forget_rules(principal.org_id)
    rule = await get_or_404(session, ScoringRule, rule_id, what="scoring rule")
    await session.delete(rule)
    audit.record(session, actor=principal, entity="scoring_rule", entity_id=rule.id, action="delete")
    await session.flush()

"""Rule evaluation and strategies, as pure functions."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime

from app.services.assignment.engine import Candidate, condition_holds, pick, skip_reason, within_working_hours


def _c(name: str, **kw: object) -> Candidate:
    base: dict[str, object] = {
        "user_id": uuid.uuid5(uuid.NAMESPACE_DNS, name),
        "name": name,
        "active": True,
        "capacity": None,
        "open_leads": 0,
        "weight": 1,
        "timezone": "UTC",
        "working_hours": None,
        "last_assigned_at": None,
    }
    base.update(kw)
    return Candidate(**base)  # type: ignore[arg-type]


LEAD = {
    "score": 72,
    "country": "CN",
    "source": "web_form",
    "industry": "Manufacturing",
    "title": "Sales Director",
    "email": "li@acme-robotics.cn",
    "attributes": {"plan": "pro", "seats": 40},
    "source_id": "2b1f0000-0000-0000-0000-000000000000",
}


def test_conditions_cover_every_operator() -> None:
    assert condition_holds({"field": "score", "op": "gte", "value": 50}, LEAD)
    assert not condition_holds({"field": "score", "op": "lte", "value": 50}, LEAD)
    assert condition_holds({"field": "country", "op": "in", "value": ["CN", "HK"]}, LEAD)
    assert condition_holds({"field": "country", "op": "not_in", "value": ["US"]}, LEAD)
    assert condition_holds({"field": "title", "op": "contains", "value": "director"}, LEAD)
    assert condition_holds({"field": "industry", "op": "eq", "value": "manufacturing"}, LEAD)
    assert condition_holds({"field": "source", "op": "ne", "value": "email"}, LEAD)
    assert condition_holds({"field": "attributes.plan", "op": "eq", "value": "pro"}, LEAD)
    assert condition_holds({"field": "attributes.seats", "op": "gte", "value": 25}, LEAD)
    assert condition_holds({"field": "email_domain", "op": "eq", "value": "acme-robotics.cn"}, LEAD)
    assert condition_holds({"field": "intake_source", "op": "eq", "value": LEAD["source_id"]}, LEAD)
    assert condition_holds({"field": "phone", "op": "exists", "value": False}, LEAD)
    assert not condition_holds({"field": "attributes.missing", "op": "gte", "value": 1}, LEAD)


def test_round_robin_goes_around_in_order_and_skips_ineligible() -> None:
    a, b, c = _c("a"), _c("b"), _c("c")
    state: dict[str, object] = {}
    picks = []
    for _ in range(6):
        chosen, state = pick("round_robin", [a, b, c], [a, b, c], state)
        picks.append(chosen.name)
    assert picks == ["a", "b", "c", "a", "b", "c"]
    chosen, state = pick("round_robin", [a, b, c], [a, c], {"last_user_id": str(a.user_id)})
    assert chosen.name == "c"


def test_weighted_is_deterministic_and_proportional() -> None:
    heavy, light = _c("heavy", weight=3), _c("light", weight=1)
    state: dict[str, object] = {}
    picks = []
    for _ in range(8):
        chosen, state = pick("weighted", [heavy, light], [heavy, light], state)
        picks.append(chosen.name)
    assert Counter(picks) == {"heavy": 6, "light": 2}
    assert picks[:4] == ["heavy", "heavy", "light", "heavy"]  # smooth, not bursty


def test_least_loaded_takes_fewest_open_then_longest_idle() -> None:
    early = datetime(2026, 1, 1, tzinfo=UTC)
    late = datetime(2026, 6, 1, tzinfo=UTC)
    busy = _c("busy", open_leads=5)
    idle_recent = _c("recent", open_leads=1, last_assigned_at=late)
    idle_long = _c("long", open_leads=1, last_assigned_at=early)
    chosen, _ = pick("least_loaded", [busy, idle_recent, idle_long], [busy, idle_recent, idle_long], {})
    assert chosen.name == "long"


def test_skip_reasons_name_the_cause() -> None:
    now = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)  # a Monday, 22:00 in Shanghai
    assert skip_reason(_c("x", active=False), now, respect_hours=False, strategy="round_robin") == "inactive"
    full = _c("x", capacity=3, open_leads=3)
    assert (
        skip_reason(full, now, respect_hours=False, strategy="round_robin") == "at capacity (3/3 open leads)"
    )
    night = _c("x", timezone="Asia/Shanghai", working_hours={"mon": ["09:00", "18:00"]})
    assert not within_working_hours(night, now)
    assert skip_reason(night, now, respect_hours=True, strategy="round_robin") == (
        "outside working hours (Mon 22:00 Asia/Shanghai)"
    )
    assert skip_reason(night, now, respect_hours=False, strategy="round_robin") is None
    assert skip_reason(_c("x", weight=0), now, respect_hours=False, strategy="weighted") == "weight 0"


def test_lead_fields_match_the_json_encoder_column_by_column() -> None:
    """`lead_fields` skips `jsonable_encoder` for ids, times and scalars: each column's value must
    be what the encoder makes of it (conditions compare those strings and numbers)."""
    from fastapi.encoders import jsonable_encoder
    from sqlalchemy import inspect as sa_inspect

    from app.models.base import build
    from app.models.lead import Lead, LeadSource, LeadStatus
    from app.services.assignment.engine import lead_fields

    now = datetime(2026, 12, 2, 8, 30, 15, 123456, tzinfo=UTC)
    lead = build(
        Lead,
        id=uuid.uuid4(),
        org_id=uuid.uuid4(),
        name="Li Wei",
        email="li@acme-robotics.cn",
        phone=None,
        company="Acme",
        country="CN",
        status=LeadStatus.qualified,
        source=LeadSource.web_form,
        source_id=uuid.uuid4(),
        source_detail={"utm": {"source": "baidu"}, "ids": [uuid.uuid4()]},
        attributes={"plan": "pro", "seats": 40, "since": now},
        tags=["vip", "expo"],
        score=72,
        pooled=False,
        owner_id=uuid.uuid4(),
        assigned_at=now,
        created_at=now,
        updated_at=now,
        touch_count=3,
        version=4,
    )
    expected = {a.key: jsonable_encoder(getattr(lead, a.key)) for a in sa_inspect(Lead).column_attrs}
    got = lead_fields(lead)
    assert got == expected
    assert got["status"] == "qualified" and type(got["status"]) is str
    assert got["owner_id"] == str(lead.owner_id)
    assert got["assigned_at"] == "2026-12-02T08:30:15.123456+00:00"
    assert got["attributes"]["since"] == "2026-12-02T08:30:15.123456+00:00"

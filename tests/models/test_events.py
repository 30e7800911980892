"""Typed events: each class names its type, and payloads are written as they always were."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.models import events
from app.models.events import EVENT_SCHEMAS, EventData, LeadAssigned, LeadRecycleWarning


def _concrete() -> list[type[EventData]]:
    found = [c for c in vars(events).values() if isinstance(c, type) and issubclass(c, EventData)]
    return [c for c in found if "event_type" in vars(c)]


def test_every_published_event_type_has_its_class() -> None:
    types = {c.event_type for c in _concrete()}
    assert set(EVENT_SCHEMAS) <= types
    for event_type, schema in EVENT_SCHEMAS.items():
        assert any(c.event_type == event_type and issubclass(c, schema) for c in _concrete()), event_type
    assert len(types) == len(_concrete())  # one class per type


def test_payload_keeps_only_what_the_emitter_set_and_writes_iso_datetimes() -> None:
    lead_id, owner = uuid.uuid4(), uuid.uuid4()
    assert LeadAssigned(lead_id=lead_id, owner_id=owner, team_id=None, by="claim").payload() == {
        "lead_id": str(lead_id),
        "owner_id": str(owner),
        "team_id": None,
        "by": "claim",
    }
    at = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)
    warning = LeadRecycleWarning(lead_id=lead_id, owner_id=None, recycle_at=at).payload()
    assert warning == {"lead_id": str(lead_id), "owner_id": None, "recycle_at": "2026-11-30T08:30:00+00:00"}

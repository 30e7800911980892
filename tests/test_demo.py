"""`loudou demo`: an organisation filled through the API, the same counts for the same seed."""

from __future__ import annotations

import uuid

from app.config import Settings
from app.demo import load_demo


async def test_the_demo_fills_every_entity_and_a_seed_gives_the_same_counts(settings: Settings) -> None:
    first = await load_demo(settings, name=f"Demo {uuid.uuid4().hex[:6]}", seed=7, months=2)
    second = await load_demo(settings, name=f"Demo {uuid.uuid4().hex[:6]}", seed=7, months=2)
    assert first.org_id != second.org_id
    assert first.counts == second.counts
    counts = first.counts
    assert counts["leads"] == 24 and counts["users"] == 7 and counts["teams"] == 2
    for entity in (
        "activities",
        "deals",
        "deal_stage_history",
        "deal_field_history",
        "quotes",
        "quote_lines",
    ):
        assert counts[entity] > 0, entity
    assert counts["orders"] >= 1 and counts["installments"] == 2 * counts["orders"]
    assert counts["accounts"] == counts["contacts"] == counts["deals"] == 8

"""docs/scale.md carries the distribution plan `loudou schema plan` prints from the migrated
schema, so the document cannot drift from the tables (a new table changes the plan)."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from app.cli import _schema_plan
from app.config import Settings
from app.distribution import plan, read_catalog, render

DOC = Path(__file__).resolve().parent.parent / "docs" / "scale.md"


def documented_plan() -> str:
    """The SQL block between the plan markers of docs/scale.md."""
    found = re.search(r"<!-- plan:begin -->\n```sql\n(.*?)```\n<!-- plan:end -->", DOC.read_text(), re.S)
    assert found, "docs/scale.md lost its plan markers"
    return found.group(1)


async def test_the_documented_plan_is_what_the_command_prints(settings: Settings) -> None:
    # What `loudou schema plan` prints (the command is this call inside embedded_if_needed).
    printed = await _schema_plan(settings)
    assert printed == documented_plan(), "run `loudou schema plan` and paste it into docs/scale.md"


async def test_every_table_is_placed_once(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            catalog = await read_catalog(conn)
    finally:
        await engine.dispose()
    p = plan(catalog)
    placed = p.reference + p.distributed + [t for t, _ in p.own] + p.local
    assert sorted(placed) == sorted(catalog.tables)
    assert {"leads", "deals", "users", "outbox"} <= set(p.distributed)
    assert p.reference[0] == "organisations" and p.local == ["alembic_version"]
    # Every distributed table comes after the tables its foreign keys point at (cycles aside).
    order = {t: i for i, t in enumerate(p.distributed)}
    for fk in catalog.foreign_keys:
        if fk.table in order and fk.target in order and fk.table != fk.target and fk not in p.deferred:
            assert order[fk.target] < order[fk.table], fk.name
    assert "create_distributed_table('leads', 'org_id', colocate_with =>" in render(p)

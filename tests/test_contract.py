"""The committed contract: the OpenAPI document and the migrations match the code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from app.main import openapi_document
from app.models.export import DATABASE_MAINTAINED_COLUMNS, STAMPED_TABLES, change_index_name

ROOT = Path(__file__).resolve().parent.parent


def test_committed_openapi_matches_the_app() -> None:
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert committed == openapi_document(), "run `loudou openapi` and commit openapi/openapi.json"


def test_every_operation_has_an_id_summary_and_declared_errors() -> None:
    doc = openapi_document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert ":" in op["operationId"], (path, method)
            assert op.get("summary"), (path, method)
            if path.startswith("/v1/"):
                errors = [code for code in op["responses"] if code.startswith(("4", "5"))]
                assert errors, (path, method)


async def test_migrations_build_exactly_the_models(database_url: str) -> None:
    engine = create_async_engine(database_url)

    # The export's change stamps are maintained by the database alone, so no model declares them.
    maintained_indexes = {change_index_name(t) for t in STAMPED_TABLES}

    def declared(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if not reflected or compare_to is not None:
            return True
        if type_ == "column":
            return not (obj.table.name in STAMPED_TABLES and name in DATABASE_MAINTAINED_COLUMNS)
        return not (type_ == "index" and name in maintained_indexes)

    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"include_object": declared})
        changes: list[Any] = compare_metadata(context, SQLModel.metadata)
        return changes

    try:
        async with engine.connect() as conn:
            changes = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert changes == [], "a model changed without a migration"

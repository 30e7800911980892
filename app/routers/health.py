"""Liveness, readiness."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.deps import StateDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Process status."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Each component's status; 503 names the ones that are down."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
    down: list[str]


@router.get("/healthz", response_model=Health, summary="Process is up")
async def healthz() -> Health:
    """The process answers; no dependency is checked."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Database and Redis reachable",
    responses={503: {"model": Readiness, "description": "A component is down"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    """200 when PostgreSQL and Redis answer within a second; 503 naming what is down."""

    async def database() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await state.redis.ping()

    checks: dict[str, str] = {}
    for name, probe in (("database", database), ("redis", redis)):
        try:
            await asyncio.wait_for(probe(), timeout=1.0)
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready", whatever it is
            checks[name] = f"down: {type(exc).__name__}"
    down = [name for name, status in checks.items() if status != "ok"]
    body = Readiness(status="unavailable" if down else "ok", checks=checks, down=down)
    return JSONResponse(body.model_dump(), status_code=503 if down else 200)

"""The `loudou` command line: org create --json, --help everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.config import Settings

LOUDOU = str(Path(sys.executable).parent / "loudou")


def _run(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or ""}
    return subprocess.run([LOUDOU, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_org_create_json_prints_a_working_admin_key(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    done = _run(["org", "create", "Acme", "--admin-email", "admin@acme.test", "--json"], settings)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out) == {"org_id", "user_id", "api_key"}
    r = await client.get("/v1/me", headers={"Authorization": f"Bearer {out['api_key']}"})
    assert r.status_code == 200
    assert r.json()["organisation"]["id"] == out["org_id"]
    assert r.json()["organisation"]["name"] == "Acme"
    assert r.json()["role"] == "admin" and r.json()["user"]["email"] == "admin@acme.test"


def test_org_create_rejects_a_bad_email(settings: Settings) -> None:
    done = _run(["org", "create", "Acme", "--admin-email", "not-an-email"], settings)
    assert done.returncode != 0
    assert "admin-email" in done.stderr


@pytest.mark.parametrize(
    "command",
    [[], ["dev"], ["serve"], ["worker"], ["migrate"], ["org", "create"], ["openapi"], ["schema", "plan"]],
)
def test_every_command_has_help(settings: Settings, command: list[str]) -> None:
    done = _run([*command, "--help"], settings)
    assert done.returncode == 0
    assert "Usage" in done.stdout


def test_serve_in_production_needs_a_secret_key(settings: Settings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "LOUDOU_ENV": "production",
        "LOUDOU_HOME": str(tmp_path),
    }
    env.pop("LOUDOU_SECRET_KEY", None)
    done = subprocess.run(
        [LOUDOU, "serve", "--workers", "2"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0 and "LOUDOU_SECRET_KEY" in done.stderr
    assert not (tmp_path / "secret_key").exists()

"""The `loudou` command line: org create --json, --help everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings
from tests.conftest import Org

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
    # Without --country/--currency/--timezone the defaults stay.
    org = (await organisation_of(client, out["api_key"]))["settings"]
    assert (org["country"], org["base_currency"], org["timezone"]) == (None, "USD", "UTC")
    assert org["default_phone_country"] == "US"


def test_org_create_rejects_a_bad_email(settings: Settings) -> None:
    done = _run(["org", "create", "Acme", "--admin-email", "not-an-email"], settings)
    assert done.returncode != 0
    assert "admin-email" in done.stderr


async def organisation_of(client: httpx.AsyncClient, api_key: str) -> dict[str, Any]:
    r = await client.get("/v1/organisation", headers={"Authorization": f"Bearer {api_key}"})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_org_create_sets_country_currency_and_timezone(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    done = _run(
        [
            *("org", "create", "Acme", "--admin-email", "a@acme.test"),
            *("--country", "CN", "--currency", "CNY", "--timezone", "Asia/Shanghai", "--json"),
        ],
        settings,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out) == {"org_id", "user_id", "api_key"}
    org = (await organisation_of(client, out["api_key"]))["settings"]
    assert (org["country"], org["base_currency"], org["timezone"]) == ("CN", "CNY", "Asia/Shanghai")
    assert org["default_phone_country"] == "CN"
    # Phone numbers are read as Chinese now.
    r = await client.post(
        "/v1/leads", json={"phone": "138 0013 8000"}, headers={"Authorization": f"Bearer {out['api_key']}"}
    )
    assert r.status_code == 201 and r.json()["phone"] == "+8613800138000"


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--country", "XX", "ISO 3166-1"),
        ("--country", "China", "ISO 3166-1"),
        ("--currency", "RMB", "ISO 4217"),
        ("--timezone", "Asia/Beijing", "IANA timezone"),
    ],
)
def test_org_create_refuses_unknown_codes_clearly(option: str, value: str, says: str) -> None:
    # Checked before anything is started, so in-process is the same as the command line.
    done = CliRunner().invoke(cli, ["org", "create", "Bad", "--admin-email", "b@bad.test", option, value])
    assert done.exit_code == 2
    assert option in done.output and says in done.output and value in done.output


async def test_org_update_changes_only_what_is_given(settings: Settings, org: Org) -> None:
    before = await organisation_of(org.client, org.admin_key)
    done = _run(["org", "update", org.id, "--currency", "cny", "--json"], settings)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["base_currency"] == "CNY"
    after = await organisation_of(org.client, org.admin_key)
    assert after["settings"] == {**before["settings"], "base_currency": "CNY"}
    assert after["version"] == before["version"] + 1
    done = _run(["org", "update", org.id, "--country", "CN", "--timezone", "Asia/Shanghai"], settings)
    assert done.returncode == 0, done.stderr
    now = (await organisation_of(org.client, org.admin_key))["settings"]
    assert (now["country"], now["default_phone_country"], now["timezone"]) == ("CN", "CN", "Asia/Shanghai")
    assert now["base_currency"] == "CNY"
    done = _run(["org", "update", str(uuid.uuid4()), "--currency", "EUR"], settings)
    assert done.returncode == 2 and "no organisation" in done.stderr


def test_org_update_needs_something_to_change() -> None:
    done = CliRunner().invoke(cli, ["org", "update", str(uuid.uuid4())])
    assert done.exit_code == 2 and "nothing to change" in done.output
    done = CliRunner().invoke(cli, ["org", "update", "not-an-id", "--currency", "EUR"])
    assert done.exit_code == 2 and "not an organisation id" in done.output


def test_the_suggested_command_is_one_that_org_update_accepts() -> None:
    from app.cli import settings_command

    line = settings_command("0000", {"country": "CN", "base_currency": "CNY", "timezone": "Asia/Shanghai"})
    assert line == "loudou org update 0000 --country CN --currency CNY --timezone Asia/Shanghai"


@pytest.mark.parametrize(
    "command",
    [
        *([], ["dev"], ["serve"], ["worker"], ["migrate"]),
        *(["org", "create"], ["org", "update"], ["openapi"], ["schema", "plan"]),
    ],
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

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


async def test_org_create_without_options_keeps_the_defaults(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    done = _run(["org", "create", "Plain", "--admin-email", "p@plain.test", "--json"], settings)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    org = (await organisation_of(client, out["api_key"]))["settings"]
    assert (org["country"], org["base_currency"], org["timezone"]) == (None, "USD", "UTC")
    assert org["default_phone_country"] == "US"


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--country", "XX", "ISO 3166-1"),
        ("--country", "China", "ISO 3166-1"),
        ("--currency", "RMB", "ISO 4217"),
        ("--timezone", "Asia/Beijing", "IANA timezone"),
    ],
)
def test_org_create_refuses_unknown_codes_clearly(
    settings: Settings, option: str, value: str, says: str
) -> None:
    done = _run(["org", "create", "Bad", "--admin-email", "b@bad.test", option, value], settings)
    assert done.returncode == 2
    assert option in done.stderr and says in done.stderr and value in done.stderr


async def test_org_update_changes_only_what_is_given(settings: Settings, client: httpx.AsyncClient) -> None:
    done = _run(["org", "create", "Later", "--admin-email", "l@later.test", "--json"], settings)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    before = await organisation_of(client, out["api_key"])
    done = _run(["org", "update", out["org_id"], "--currency", "cny", "--json"], settings)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["base_currency"] == "CNY"
    after = await organisation_of(client, out["api_key"])
    assert after["settings"] == {**before["settings"], "base_currency": "CNY"}
    assert after["version"] == before["version"] + 1
    done = _run(["org", "update", out["org_id"], "--country", "CN", "--timezone", "Asia/Shanghai"], settings)
    assert done.returncode == 0, done.stderr
    after = (await organisation_of(client, out["api_key"]))["settings"]
    assert (after["country"], after["default_phone_country"], after["timezone"]) == (
        "CN",
        "CN",
        "Asia/Shanghai",
    )
    done = _run(["org", "update", str(uuid.uuid4()), "--currency", "EUR"], settings)
    assert done.returncode == 2 and "no organisation" in done.stderr
    done = _run(["org", "update", out["org_id"]], settings)
    assert done.returncode == 2 and "nothing to change" in done.stderr


def test_the_suggested_command_is_one_that_org_update_accepts() -> None:
    from app.cli import settings_command

    line = settings_command("0000", {"country": "CN", "base_currency": "CNY", "timezone": "Asia/Shanghai"})
    assert line == "loudou org update 0000 --country CN --currency CNY --timezone Asia/Shanghai"


@pytest.mark.parametrize(
    "command",
    [[], ["dev"], ["serve"], ["worker"], ["migrate"], ["org", "create"], ["org", "update"], ["openapi"]],
)
def test_every_command_has_help(settings: Settings, command: list[str]) -> None:
    done = _run([*command, "--help"], settings)
    assert done.returncode == 0
    assert "Usage" in done.stdout

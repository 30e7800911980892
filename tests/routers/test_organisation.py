"""Organisation settings: one typed object, admin only, partial updates."""

from __future__ import annotations

from tests.conftest import Org


async def test_settings_have_defaults_and_patch_merges(org: Org) -> None:
    r = await org.client.get("/v1/organisation", headers=org.auth())
    assert r.status_code == 200
    settings = r.json()["settings"]
    assert settings["timezone"] == "UTC" and settings["base_currency"] == "USD"
    assert settings["quote_discount_threshold_percent"] == "20"
    r = await org.client.patch(
        "/v1/organisation",
        json={"name": "Acme 上海", "settings": {"timezone": "Asia/Shanghai", "base_currency": "CNY"}},
        headers={**org.auth(), "If-Match": r.headers["etag"]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "Acme 上海"
    assert body["settings"]["timezone"] == "Asia/Shanghai"
    assert body["settings"]["base_currency"] == "CNY"
    assert body["settings"]["lead_claim_limit"] == 50  # untouched


async def test_invalid_settings_are_422_and_change_nothing(org: Org) -> None:
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"base_currency": "dollars"}}, headers=org.auth()
    )
    assert r.status_code == 422
    r = await org.client.patch("/v1/organisation", json={"settings": {"timezone": None}}, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.get("/v1/organisation", headers=org.auth())
    assert r.json()["settings"]["base_currency"] == "USD" and r.json()["version"] == 1


async def test_only_admins_read_or_change_the_organisation(org: Org) -> None:
    _, manager_key = await org.add_user("manager")
    assert (await org.client.get("/v1/organisation", headers=org.auth(manager_key))).status_code == 403
    r = await org.client.patch("/v1/organisation", json={"name": "x"}, headers=org.auth(manager_key))
    assert r.status_code == 403


async def test_stale_organisation_update_is_412(org: Org) -> None:
    r = await org.client.patch(
        "/v1/organisation", json={"name": "B"}, headers={**org.auth(), "If-Match": '"7"'}
    )
    assert r.status_code == 412

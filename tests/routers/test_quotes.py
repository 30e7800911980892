"""Quotes: server-side math, approval, the status machine, revisions, numbering, PDF, acceptance."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pypdf

from app.services.quotes.workflow import expire_due
from app.state import AppState
from app.workers.scheduled import expire_quotes
from app.workers.settings import WorkerSettings
from tests.conftest import Org
from tests.factories import events, make_deal, make_team


def _q(value: Decimal, exp: str) -> Decimal:
    return value.quantize(Decimal(exp), rounding=ROUND_HALF_UP)


async def make_quote(org: Org, deal_id: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "deal_id": deal_id,
        "lines": [{"description": "Consulting", "quantity": "1", "unit_price": "100.00", "tax_rate": "13"}],
        **fields,
    }
    r = await org.client.post("/v1/quotes", json=body, headers=org.auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def post(org: Org, path: str, key: str | None = None, json: Any = None) -> Any:
    return await org.client.post(path, json=json, headers=org.auth(key))


async def test_cny_quote_totals_match_an_independent_computation(org: Org) -> None:
    deal = await make_deal(org, currency="CNY")
    quote = await make_quote(
        org,
        deal["id"],
        lines=[
            {
                "description": "Widget",
                "quantity": "3",
                "unit_price": "19.99",
                "discount_percent": "15",
                "tax_rate": "13",
            }
        ],
    )
    gross = _q(Decimal("3") * Decimal("19.99"), "0.01")
    net = gross - _q(gross * Decimal(15) / 100, "0.01")
    tax = _q(net * Decimal(13) / 100, "0.01")
    line = quote["lines"][0]
    assert (line["gross"], line["net"], line["tax"], line["total"]) == tuple(
        map(str, (gross, net, tax, net + tax))
    )
    assert quote["total"] == str(net + tax) == "57.60"
    assert quote["number"] == f"Q-{date.today().year}-0001" and quote["revision"] == 1
    refreshed = (await org.client.get(f"/v1/deals/{deal['id']}", headers=org.auth())).json()
    assert quote["is_primary"] and refreshed["amount"] == "57.60"  # the primary quote drives the deal amount


async def test_jpy_quote_rounds_to_the_yen(org: Org) -> None:
    deal = await make_deal(org, currency="JPY")
    quote = await make_quote(
        org,
        deal["id"],
        lines=[
            {
                "description": "Service",
                "quantity": "7",
                "unit_price": "1234",
                "discount_percent": "10",
                "tax_rate": "10",
            }
        ],
    )
    gross = Decimal(7) * Decimal(1234)
    net = gross - _q(gross * Decimal("0.1"), "1")
    tax = _q(net * Decimal("0.1"), "1")
    assert quote["lines"][0]["net"] == str(net) and quote["lines"][0]["tax"] == str(tax)
    assert quote["total"] == str(net + tax) == "8551" and quote["tax_total"] == "777"


async def test_quote_level_discount_over_mixed_lines_and_products(org: Org) -> None:
    r = await org.client.post(
        "/v1/products",
        json={"sku": "LIC-1", "name": "Licence", "unit_price": "299.90", "currency": "CNY", "tax_rate": "6"},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    product = r.json()
    deal = await make_deal(org, currency="CNY")
    lines = [
        {"product_id": product["id"], "quantity": "2"},
        {
            "description": "Install",
            "quantity": "3",
            "unit_price": "19.99",
            "discount_percent": "15",
            "tax_rate": "13",
        },
        {
            "description": "Travel",
            "quantity": "1.5",
            "unit_price": "33.33",
            "discount_amount": "2.00",
            "tax_rate": "0",
        },
    ]
    quote = await make_quote(org, deal["id"], lines=lines, discount_percent="5")
    expected = [
        (Decimal(2), Decimal("299.90"), None, None, Decimal(6)),
        (Decimal(3), Decimal("19.99"), Decimal(15), None, Decimal(13)),
        (Decimal("1.5"), Decimal("33.33"), None, Decimal("2.00"), Decimal(0)),
    ]
    total = tax_total = Decimal(0)
    for got, (qty, price, pct, amount, rate) in zip(quote["lines"], expected, strict=True):
        gross = _q(qty * price, "0.01")
        own = _q(gross * pct / 100, "0.01") if pct is not None else (amount or Decimal(0))
        level = _q((gross - own) * Decimal(5) / 100, "0.01")
        net = gross - own - level
        tax = _q(net * rate / 100, "0.01")
        assert (got["gross"], got["quote_discount_amount"], got["net"], got["tax"], got["total"]) == tuple(
            map(str, (gross, level, net, tax, net + tax))
        )
        total += net + tax
        tax_total += tax
    assert quote["total"] == str(total) and quote["tax_total"] == str(tax_total)
    assert quote["lines"][0]["sku"] == "LIC-1" and quote["lines"][0]["description"] == "Licence"


async def test_bad_lines_are_422(org: Org) -> None:
    deal = await make_deal(org, currency="USD")
    cases = [
        [{"description": "x", "quantity": "1"}],
        [{"description": "x", "quantity": "1", "unit_price": "1.001"}],
        [{"description": "x", "quantity": "1", "unit_price": "1", "discount_amount": "2"}],
        [{"quantity": "1", "unit_price": "1"}],
        [{"description": "x", "quantity": "0", "unit_price": "1"}],
        [{"description": "x", "quantity": "9999999999", "unit_price": "99999999999999"}],
    ]
    for lines in cases:
        r = await org.client.post(
            "/v1/quotes", json={"deal_id": deal["id"], "lines": lines}, headers=org.auth()
        )
        assert r.status_code == 422, (lines, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    terms = [{"percent": "30", "due": "on_acceptance"}, {"percent": "60", "due_days": 30}]
    body = {"deal_id": deal["id"], "lines": cases[1], "payment_terms": terms}
    body["lines"] = [{"description": "x", "quantity": "1", "unit_price": "1"}]
    r = await org.client.post("/v1/quotes", json=body, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "must_sum_to_100"


async def test_discount_above_threshold_needs_a_manager_who_did_not_make_it(org: Org) -> None:
    team = await make_team(org)
    rep_id, rep = await org.add_user("rep", team_id=team)
    _, manager = await org.add_user("manager", team_id=team)
    _, viewer = await org.add_user("viewer")
    deal = await make_deal(org, rep, currency="USD")
    quote = await make_quote(
        org,
        deal["id"],
        rep,
        lines=[{"description": "x", "quantity": "1", "unit_price": "100.00", "discount_percent": "25"}],
    )
    r = await post(org, f"/v1/quotes/{quote['id']}/submit", rep)
    assert r.status_code == 200 and r.json()["status"] == "pending_approval"
    assert "25.00% is above the 20% threshold" in r.json()["approval_reasons"][0]
    r = await post(org, f"/v1/quotes/{quote['id']}/approve", rep)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await post(org, f"/v1/quotes/{quote['id']}/approve", viewer)
    assert r.status_code == 403
    r = await post(org, f"/v1/quotes/{quote['id']}/send", rep)
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    r = await post(org, f"/v1/quotes/{quote['id']}/approve", manager)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["approved_by_id"] != rep_id
    r = await post(org, f"/v1/quotes/{quote['id']}/approve", manager)
    assert r.status_code == 409
    r = await post(org, f"/v1/quotes/{quote['id']}/accept", manager)
    assert r.status_code == 409  # approved -> accepted skips sent
    r = await org.client.patch(f"/v1/quotes/{quote['id']}", json={"notes": "x"}, headers=org.auth(rep))
    assert r.status_code == 409


async def test_small_discount_is_approved_on_submit_and_total_limit_needs_approval(org: Org) -> None:
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"quote_total_approval_limit": "1000"}}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    deal = await make_deal(org, currency="USD")
    small = await make_quote(org, deal["id"])
    r = await post(org, f"/v1/quotes/{small['id']}/submit")
    assert r.json()["status"] == "approved" and r.json()["approval_reasons"] == []
    big = await make_quote(
        org, deal["id"], lines=[{"description": "x", "quantity": "11", "unit_price": "100"}]
    )
    r = await post(org, f"/v1/quotes/{big['id']}/submit")
    assert r.json()["status"] == "pending_approval" and "approval limit" in r.json()["approval_reasons"][0]


async def _sent_quote(org: Org, deal_id: str, **fields: Any) -> dict[str, Any]:
    quote = await make_quote(org, deal_id, **fields)
    assert (await post(org, f"/v1/quotes/{quote['id']}/submit")).json()["status"] == "approved"
    r = await post(org, f"/v1/quotes/{quote['id']}/send")
    assert r.status_code == 200 and r.json()["status"] == "sent"
    return dict(r.json())


async def test_revising_a_sent_quote_keeps_the_old_revision_intact(org: Org) -> None:
    deal = await make_deal(org, currency="CNY")
    sent = await _sent_quote(org, deal["id"])
    r = await post(
        org,
        f"/v1/quotes/{sent['id']}/revise",
        json={
            "lines": [
                {"description": "Consulting", "quantity": "2", "unit_price": "100.00", "tax_rate": "13"}
            ]
        },
    )
    assert r.status_code == 201, r.text
    new = r.json()
    assert (new["number"], new["revision"], new["status"]) == (sent["number"], 2, "draft")
    assert new["total"] == "226.00" and new["previous_revision_id"] == sent["id"] and new["is_primary"]
    old = (await org.client.get(f"/v1/quotes/{sent['id']}", headers=org.auth())).json()
    assert old["status"] == "superseded" and old["superseded_by_id"] == new["id"]
    assert old["lines"] == sent["lines"] and old["total"] == "113.00" and old["sent_at"] == sent["sent_at"]
    r = await post(org, f"/v1/quotes/{sent['id']}/revise", json={})
    assert r.status_code == 409
    r = await org.client.get(f"/v1/quotes/{new['id']}/revisions", headers=org.auth())
    assert r.status_code == 200
    revisions = r.json()
    assert [rv["quote"]["revision"] for rv in revisions] == [1, 2]
    change = revisions[1]["line_changes"][0]
    assert change["change"] == "changed" and change["fields"]["quantity"] == ["1", "2"]
    assert revisions[0]["total_change"] is None and revisions[1]["total_change"] == ["113.00", "226.00"]
    assert revisions[0]["line_changes"][0]["change"] == "added"
    deal_now = (await org.client.get(f"/v1/deals/{deal['id']}", headers=org.auth())).json()
    assert deal_now["amount"] == "226.00"


async def test_accepting_with_30_70_terms_creates_an_order_whose_installments_sum_to_the_total(
    org: Org, state: AppState
) -> None:
    account = (await org.client.post("/v1/accounts", json={"name": "ACME"}, headers=org.auth())).json()
    deal = await make_deal(org, currency="CNY", account_id=account["id"])
    terms = [{"percent": "30", "due": "on_acceptance"}, {"percent": "70", "due_days": 30}]
    sent = await _sent_quote(
        org,
        deal["id"],
        payment_terms=terms,
        lines=[{"description": "x", "quantity": "1", "unit_price": "333.33", "tax_rate": "13"}],
    )
    assert sent["total"] == "376.66"
    r = await post(org, f"/v1/quotes/{sent['id']}/accept")
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["total"] == "376.66" and order["currency"] == "CNY" and order["account_id"] == account["id"]
    assert re.fullmatch(r"SO-\d{4}-0001", order["number"])
    amounts = [Decimal(i["amount"]) for i in order["installments"]]
    assert [i["amount"] for i in order["installments"]] == ["113.00", "263.66"]
    assert sum(amounts) == Decimal("376.66")
    today = date.today()
    assert [i["due_date"] for i in order["installments"]] == [str(today), str(today + timedelta(days=30))]
    assert all(i["status"] == "scheduled" and i["paid_amount"] == "0.00" for i in order["installments"])
    r = await org.client.get(f"/v1/orders/{order['id']}", headers=org.auth())
    assert r.status_code == 200 and r.json() == order
    deal_now = (await org.client.get(f"/v1/deals/{deal['id']}", headers=org.auth())).json()
    assert deal_now["status"] == "won" and deal_now["amount"] == "376.66"
    accepted = await events(state, org, "quote.accepted")
    assert accepted == [
        {
            "quote_id": sent["id"],
            "number": sent["number"],
            "revision": 1,
            "deal_id": deal["id"],
            "order_id": order["id"],
            "total": "376.66",
            "currency": "CNY",
            "by_user_id": org.admin_id,
        }
    ]
    assert len(await events(state, org, "deal.won")) == 1
    r = await post(org, f"/v1/quotes/{sent['id']}/accept")
    assert r.status_code == 409
    r = await org.client.get(f"/v1/orders?deal_id={deal['id']}", headers=org.auth())
    assert [o["id"] for o in r.json()["data"]] == [order["id"]]
    revised = await post(org, f"/v1/quotes/{sent['id']}/revise", json={"notes": "v2"})
    assert revised.status_code == 409  # accepted is final: its order exists
    old = (await org.client.get(f"/v1/quotes/{sent['id']}", headers=org.auth())).json()
    assert old["status"] == "accepted" and old["lines"] == sent["lines"]


async def test_decline_and_illegal_transitions(org: Org) -> None:
    deal = await make_deal(org)
    sent = await _sent_quote(org, deal["id"])
    r = await post(org, f"/v1/quotes/{sent['id']}/decline", json={"reason": "budget"})
    assert r.status_code == 200 and r.json()["status"] == "declined" and r.json()["status_reason"] == "budget"
    for action in ("accept", "send", "submit", "approve"):
        r = await post(org, f"/v1/quotes/{sent['id']}/{action}")
        assert r.status_code == 409, action
        assert r.json()["code"] == "invalid_transition"


async def test_numbers_are_unique_and_gap_free_under_50_concurrent_creations(org: Org) -> None:
    deal = await make_deal(org)
    body = {"deal_id": deal["id"], "lines": [{"description": "x", "quantity": "1", "unit_price": "1"}]}
    responses = await asyncio.gather(
        *(org.client.post("/v1/quotes", json=body, headers=org.auth()) for _ in range(50))
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201]
    numbers = sorted(int(r.json()["number"].rsplit("-", 1)[1]) for r in responses)
    assert numbers == list(range(1, 51))
    assert sum(1 for r in responses if r.json()["is_primary"]) == 1


async def test_a_failed_creation_leaves_no_gap(org: Org) -> None:
    deal = await make_deal(org)
    good = {"deal_id": deal["id"], "lines": [{"description": "x", "quantity": "1", "unit_price": "1"}]}
    first = (await org.client.post("/v1/quotes", json=good, headers=org.auth())).json()
    bad = {
        **good,
        "lines": [{"description": "x", "quantity": "1", "unit_price": "1", "discount_amount": "5"}],
    }
    assert (await org.client.post("/v1/quotes", json=bad, headers=org.auth())).status_code == 422
    second = (await org.client.post("/v1/quotes", json=good, headers=org.auth())).json()
    assert int(second["number"][-4:]) == int(first["number"][-4:]) + 1


async def test_pdf_has_number_lines_totals_and_the_chinese_customer_printed_literally(org: Org) -> None:
    account = (
        await org.client.post("/v1/accounts", json={"name": "上海漏斗科技有限公司"}, headers=org.auth())
    ).json()
    contact = (
        await org.client.post(
            "/v1/contacts", json={"name": "张伟", "account_id": account["id"]}, headers=org.auth()
        )
    ).json()
    deal = await make_deal(org, currency="CNY", account_id=account["id"], contact_id=contact["id"])
    quote = await make_quote(
        org,
        deal["id"],
        notes="<script>alert('x')</script> <b>bold</b>",
        payment_terms=[{"percent": "30", "due": "on_acceptance"}, {"percent": "70", "due_days": 30}],
        lines=[
            {
                "description": "实施服务 Implementation",
                "quantity": "3",
                "unit_price": "19.99",
                "tax_rate": "13",
            },
            {"description": "Support <i>plan</i>", "quantity": "1", "unit_price": "500.00", "tax_rate": "6"},
        ],
    )
    r = await org.client.get(f"/v1/quotes/{quote['id']}/pdf", headers=org.auth())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(r.content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    for expected in (
        quote["number"],
        "上海漏斗科技有限公司",
        "张伟",
        "实施服务 Implementation",
        "Support <i>plan</i>",
        "<script>alert('x')</script>",
        quote["lines"][0]["total"],
        quote["lines"][1]["total"],
        quote["subtotal"],
        quote["tax_total"],
        quote["total"],
        "30%",
        "70%",
    ):
        assert expected in text, expected
    r = await org.client.get(f"/v1/quotes/{quote['id']}/pdf", headers=org.auth())
    assert r.status_code == 200


async def test_expiry_cron_expires_sent_quotes_past_valid_until_once(org: Org, state: AppState) -> None:
    deal = await make_deal(org)
    past = str(date.today() - timedelta(days=1))
    old_issue = str(date.today() - timedelta(days=10))
    stale = await _sent_quote(org, deal["id"], issue_date=old_issue, valid_until=past)
    fresh = await _sent_quote(org, deal["id"], valid_until=str(date.today() + timedelta(days=5)))
    draft = await make_quote(org, deal["id"], issue_date=old_issue, valid_until=past)
    first, second = await asyncio.gather(expire_quotes({"state": state}), expire_quotes({"state": state}))
    assert first + second >= 1
    statuses = {
        q["id"]: (await org.client.get(f"/v1/quotes/{q['id']}", headers=org.auth())).json()
        for q in (stale, fresh, draft)
    }
    assert statuses[stale["id"]]["status"] == "expired" and statuses[stale["id"]]["expired_at"] is not None
    assert statuses[stale["id"]]["version"] == stale["version"] + 1
    assert statuses[fresh["id"]]["status"] == "sent" and statuses[draft["id"]]["status"] == "draft"
    await expire_quotes({"state": state})
    again = (await org.client.get(f"/v1/quotes/{stale['id']}", headers=org.auth())).json()
    assert again["version"] == stale["version"] + 1
    assert "cron:expire_quotes" in {job.name for job in WorkerSettings.cron_jobs}


async def test_quotes_and_orders_follow_deal_visibility_and_tenancy(org: Org, other_org: Org) -> None:
    team = await make_team(org)
    _, rep = await org.add_user("rep", team_id=team)
    _, rep2 = await org.add_user("rep")
    _, viewer = await org.add_user("viewer")
    deal = await make_deal(org, rep)
    sent = await _sent_quote(org, deal["id"])
    order = (await post(org, f"/v1/quotes/{sent['id']}/accept")).json()
    for path in (f"/v1/quotes/{sent['id']}", f"/v1/orders/{order['id']}", f"/v1/quotes/{sent['id']}/pdf"):
        assert (await org.client.get(path, headers=org.auth(rep))).status_code == 200
        assert (await org.client.get(path, headers=org.auth(viewer))).status_code == 200
        r = await org.client.get(path, headers=org.auth(rep2))
        assert r.status_code == 404, path
        r = await other_org.client.get(path, headers=other_org.auth())
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert (await org.client.get("/v1/quotes", headers=org.auth(rep2))).json()["data"] == []
    assert (await org.client.get("/v1/orders", headers=org.auth(rep2))).json()["data"] == []
    assert (await other_org.client.get("/v1/quotes", headers=other_org.auth())).json()["data"] == []
    assert (await other_org.client.get("/v1/orders", headers=other_org.auth())).json()["data"] == []
    r = await org.client.post(
        "/v1/quotes",
        json={"deal_id": deal["id"], "lines": [{"description": "x", "quantity": "1", "unit_price": "1"}]},
        headers=org.auth(viewer),
    )
    assert r.status_code == 403
    r = await other_org.client.post(
        "/v1/quotes",
        json={"deal_id": deal["id"], "lines": [{"description": "x", "quantity": "1", "unit_price": "1"}]},
        headers=other_org.auth(),
    )
    assert r.status_code == 404


async def test_stale_if_match_on_a_draft_quote_is_412(org: Org) -> None:
    deal = await make_deal(org)
    quote = await make_quote(org, deal["id"])
    url = f"/v1/quotes/{quote['id']}"
    r = await org.client.patch(url, json={"discount_percent": "5"}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["total"] == "107.35" and r.headers["etag"] == '"2"'
    r = await org.client.patch(url, json={"notes": "x"}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 412
    r = await org.client.post(f"{url}/submit", headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 412


async def test_reject_sends_a_pending_quote_back_to_draft_for_editing(org: Org) -> None:
    _, manager = await org.add_user("manager")
    _, rep = await org.add_user("rep")
    deal = await make_deal(org, currency="USD")
    quote = await make_quote(
        org,
        deal["id"],
        lines=[{"description": "x", "quantity": "1", "unit_price": "80.00", "discount_percent": "30"}],
    )
    assert (await post(org, f"/v1/quotes/{quote['id']}/submit")).json()["status"] == "pending_approval"
    r = await post(org, f"/v1/quotes/{quote['id']}/reject", rep, json={"reason": "too cheap"})
    assert r.status_code == 404  # the rep does not see the admin's deal
    r = await post(org, f"/v1/quotes/{quote['id']}/reject", manager, json={"reason": "too cheap"})
    assert r.status_code == 404  # nor does a manager outside the deal owner's team
    r = await post(org, f"/v1/quotes/{quote['id']}/reject", json={"reason": "too cheap"})
    assert r.status_code == 200 and r.json()["status"] == "draft" and r.json()["status_reason"] == "too cheap"
    r = await org.client.patch(
        f"/v1/quotes/{quote['id']}",
        json={
            "lines": [{"description": "x", "quantity": "1", "unit_price": "80.00", "discount_percent": "10"}]
        },
        headers=org.auth(),
    )
    assert r.status_code == 200 and r.json()["total"] == "72.00"
    assert (await post(org, f"/v1/quotes/{quote['id']}/submit")).json()["status"] == "approved"


async def test_tax_inclusive_quote_through_the_api(org: Org) -> None:
    deal = await make_deal(org, currency="CNY")
    quote = await make_quote(
        org,
        deal["id"],
        tax_inclusive=True,
        lines=[{"description": "Box", "quantity": "2", "unit_price": "56.50", "tax_rate": "13"}],
    )
    total = Decimal("113.00")
    tax = _q(total * 13 / 113, "0.01")
    assert (
        quote["total"] == str(total)
        and quote["tax_total"] == str(tax)
        and quote["net_total"] == str(total - tax)
    )


async def test_an_accepted_quote_cannot_be_revised_into_a_second_order(org: Org) -> None:
    """Acceptance 7: revise -> submit -> send -> accept used to make a second order for the deal."""
    deal = await make_deal(org, currency="CNY")
    sent = await _sent_quote(org, deal["id"])
    order = (await post(org, f"/v1/quotes/{sent['id']}/accept")).json()
    r = await post(org, f"/v1/quotes/{sent['id']}/revise", json={"notes": "again"})
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    r = await org.client.post(
        "/v1/quotes",
        json={"deal_id": deal["id"], "lines": [{"description": "x", "quantity": "1", "unit_price": "1"}]},
        headers=org.auth(),
    )
    assert r.status_code == 409  # nor can a fresh quote be made on the won deal
    orders = (await org.client.get(f"/v1/orders?deal_id={deal['id']}", headers=org.auth())).json()["data"]
    assert [o["id"] for o in orders] == [order["id"]]


async def test_quotes_on_a_lost_deal_are_neither_sent_nor_accepted(org: Org) -> None:
    deal = await make_deal(org)
    sent = await _sent_quote(org, deal["id"])
    approved = await make_quote(org, deal["id"])
    assert (await post(org, f"/v1/quotes/{approved['id']}/submit")).json()["status"] == "approved"
    settings = (await org.client.get("/v1/organisation", headers=org.auth())).json()["settings"]
    r = await post(org, f"/v1/deals/{deal['id']}/lost", json={"reason": settings["lost_reasons"][0]})
    assert r.status_code == 200, r.text
    for quote_id, action in ((sent["id"], "accept"), (approved["id"], "send")):
        r = await post(org, f"/v1/quotes/{quote_id}/{action}")
        assert r.status_code == 409 and "lost" in r.json()["detail"], r.text
    assert (await org.client.get(f"/v1/orders?deal_id={deal['id']}", headers=org.auth())).json()["data"] == []


async def test_a_quote_in_another_currency_cannot_dodge_the_total_approval_limit(org: Org) -> None:
    settings = (await org.client.get("/v1/organisation", headers=org.auth())).json()["settings"]
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"quote_total_approval_limit": "1000"}}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    foreign = "JPY" if settings["base_currency"] != "JPY" else "USD"
    deal = await make_deal(org, currency=foreign)
    quote = await make_quote(
        org,
        deal["id"],
        currency=foreign,
        lines=[{"description": "x", "quantity": "1", "unit_price": "900000"}],
    )
    r = await post(org, f"/v1/quotes/{quote['id']}/submit")
    assert r.json()["status"] == "pending_approval", r.text
    assert "base currency" in r.json()["approval_reasons"][0]


async def test_an_illegal_transition_problem_keeps_the_http_status(org: Org) -> None:
    deal = await make_deal(org)
    quote = await make_quote(org, deal["id"])
    r = await post(org, f"/v1/quotes/{quote['id']}/accept")
    assert r.status_code == 409
    body = r.json()
    assert body["status"] == 409 and body["quote_status"] == "draft" and body["code"] == "invalid_transition"


def _zone_off_utc_date() -> str:
    """A timezone whose date differs from UTC's right now: UTC+14 once it is 10:00 UTC, else UTC-12."""
    return "Pacific/Kiritimati" if datetime.now(UTC).hour >= 10 else "Etc/GMT+12"


async def test_issue_and_acceptance_dates_are_the_organisations_local_dates(org: Org) -> None:
    zone = _zone_off_utc_date()
    r = await org.client.patch("/v1/organisation", json={"settings": {"timezone": zone}}, headers=org.auth())
    assert r.status_code == 200, r.text
    before = datetime.now(ZoneInfo(zone)).date()
    deal = await make_deal(org, currency="CNY")
    terms = [{"percent": "30", "due": "on_acceptance"}, {"percent": "70", "due_days": 30}]
    sent = await _sent_quote(org, deal["id"], payment_terms=terms)
    revised = (await post(org, f"/v1/quotes/{sent['id']}/revise", json={"notes": "v2"})).json()
    assert (await post(org, f"/v1/quotes/{revised['id']}/submit")).json()["status"] == "approved"
    assert (await post(org, f"/v1/quotes/{revised['id']}/send")).json()["status"] == "sent"
    order = (await post(org, f"/v1/quotes/{revised['id']}/accept")).json()
    after = datetime.now(ZoneInfo(zone)).date()
    local_days = {str(before), str(after)}  # the same day unless the test straddles local midnight
    assert before != datetime.now(UTC).date() or before != after  # else this test could not tell
    assert sent["issue_date"] in local_days and revised["issue_date"] in local_days
    assert order["installments"][0]["due_date"] in local_days, order
    assert order["number"].startswith(f"SO-{before.year}-") or order["number"].startswith(f"SO-{after.year}-")


async def test_expiry_uses_each_organisations_local_date(org: Org, other_org: Org, state: AppState) -> None:
    # 2026-06-30 20:00 UTC is already 1 July in Shanghai and still 30 June in New York: a quote valid
    # until 30 June has expired in the first and not in the second.
    at = datetime(2026, 6, 30, 20, 0, tzinfo=UTC)
    quotes = {}
    for tenant, zone in ((org, "Asia/Shanghai"), (other_org, "America/New_York")):
        r = await tenant.client.patch(
            "/v1/organisation", json={"settings": {"timezone": zone}}, headers=tenant.auth()
        )
        assert r.status_code == 200, r.text
        deal = await make_deal(tenant)
        quotes[zone] = (
            tenant,
            await _sent_quote(tenant, deal["id"], issue_date="2026-06-01", valid_until="2026-06-30"),
        )
    async with state.sessions() as session, session.begin():
        assert await expire_due(session, at) >= 1
    shanghai, new_york = [
        (await tenant.client.get(f"/v1/quotes/{quote['id']}", headers=tenant.auth())).json()
        for tenant, quote in quotes.values()
    ]
    assert shanghai["status"] == "expired" and shanghai["expired_at"] is not None
    assert new_york["status"] == "sent"

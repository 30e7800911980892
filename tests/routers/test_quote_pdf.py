"""A quote a customer can receive: seller block and logo from the organisation, amounts with the
currency symbol and separators, validity, page numbers, and the table header on every page."""

from __future__ import annotations

import io
import re
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pypdf
from PIL import Image

from tests.conftest import Org
from tests.factories import make_deal

SELLER = {
    "legal_name": "上海漏斗科技有限公司",
    "address": "上海市浦东新区世纪大道 100 号\n200120 Shanghai, China",
    "tax_id": "91310115MA1K4XXXX7",
    "email": "sales@loudou.example",
    "phone": "+86 21 5555 0100",
    "website": "https://loudou.example",
}


def png(width: int = 240, height: int = 80, color: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 60), (20, 90, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


async def chinese_seller(org: Org) -> None:
    r = await org.client.patch(
        "/v1/organisation",
        json={"settings": {"country": "CN", "base_currency": "CNY", "seller": SELLER}},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["seller"]["legal_name"] == SELLER["legal_name"]


def yuan(value: str | Decimal) -> str:
    """¥ and thousands separators, computed here without the app's formatter."""
    amount = Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"-¥{-amount:,.2f}" if amount < 0 else f"¥{amount:,.2f}"


async def sixty_line_quote(org: Org) -> tuple[dict[str, Any], str]:
    account = (
        await org.client.post("/v1/accounts", json={"name": "北京客户有限公司"}, headers=org.auth())
    ).json()
    contact = (
        await org.client.post(
            "/v1/contacts", json={"name": "张伟", "account_id": account["id"]}, headers=org.auth()
        )
    ).json()
    deal = await make_deal(org, currency="CNY", account_id=account["id"], contact_id=contact["id"])
    valid_until = str(date.today() + timedelta(days=30))
    lines = [
        {
            "description": f"第 {i} 项 实施服务 Implementation item {i}",
            "quantity": str(1 + i % 4),
            "unit_price": f"{1234 + i * 1000}.5{i % 10}",
            "tax_rate": "13",
            **({"discount_percent": "5"} if i % 7 == 0 else {}),
        }
        for i in range(1, 61)
    ]
    body = {
        "deal_id": deal["id"],
        "valid_until": valid_until,
        "payment_terms": [{"percent": "30", "due": "on_acceptance"}, {"percent": "70", "due_days": 30}],
        "notes": "交付周期 6 周。Delivery in 6 weeks.",
        "lines": lines,
    }
    r = await org.client.post("/v1/quotes", json=body, headers=org.auth())
    assert r.status_code == 201, r.text
    return r.json(), valid_until


async def test_a_sixty_line_cny_quote_is_a_document_a_customer_can_receive(org: Org, tmp_path: Path) -> None:
    await chinese_seller(org)
    r = await org.client.put(
        "/v1/organisation/logo", content=png(), headers={**org.auth(), "Content-Type": "image/png"}
    )
    assert r.status_code == 200, r.text
    quote, valid_until = await sixty_line_quote(org)
    r = await org.client.get(f"/v1/quotes/{quote['id']}/pdf", headers=org.auth())
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    (tmp_path / "quote.pdf").write_bytes(r.content)  # pdftoppm it to look at the pages
    reader = pypdf.PdfReader(io.BytesIO(r.content))
    pages = [" ".join(page.extract_text().split()) for page in reader.pages]  # pypdf's spacing varies
    count = len(pages)
    assert count >= 2
    for number, text in enumerate(pages, start=1):
        assert f"Page {number}/{count}" in text, (number, text[-200:])
        assert "项目 Item" in text and "单价 Unit price" in text and "金额 Amount" in text  # header
        if number > 1:
            assert quote["number"] in text  # the running title
    first, everything = pages[0], "\n".join(pages)
    for expected in (
        SELLER["legal_name"],
        "上海市浦东新区世纪大道 100 号",
        "200120 Shanghai, China",
        f"Tax ID: {SELLER['tax_id']}",
        SELLER["email"],
        SELLER["phone"],
        "北京客户有限公司",
        "张伟",
        valid_until,
        quote["number"],
    ):
        assert expected in first, expected
    assert len(reader.pages[0].images) == 1  # the logo
    # Every line once, whole, in order: no row lost or split across pages.
    positions = [everything.find(f"Implementation item {i} ") for i in range(1, 61)]
    assert -1 not in positions and positions == sorted(positions)
    for line in quote["lines"]:
        assert f"{Decimal(line['total']):,.2f}" in everything, line["total"]
        assert f"{Decimal(line['unit_price']):,.2f}" in everything
    assert Decimal(quote["total"]) > 1_000_000
    for name in ("subtotal", "net_total", "tax_total", "total"):
        assert yuan(quote[name]) in everything, (name, yuan(quote[name]))
    assert yuan(f"-{quote['discount_total']}") in everything
    totals_page = next(i for i, text in enumerate(pages) if "合计 Total" in text)
    assert all(label in pages[totals_page] for label in ("小计 Subtotal", "税额 Tax", "合计 Total"))
    assert "30% on acceptance" in everything and "交付周期 6 周" in everything


async def test_a_short_quote_is_one_page_without_a_logo_and_uses_the_org_name(org: Org) -> None:
    deal = await make_deal(org, currency="USD")
    r = await org.client.post(
        "/v1/quotes",
        json={
            "deal_id": deal["id"],
            "lines": [{"description": "Setup", "quantity": "1", "unit_price": "12500"}],
        },
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    pdf = (await org.client.get(f"/v1/quotes/{r.json()['id']}/pdf", headers=org.auth())).content
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = reader.pages[0].extract_text()
    assert len(reader.pages) == 1 and "Page 1/1" in text and len(reader.pages[0].images) == 0
    name = (await org.client.get("/v1/organisation", headers=org.auth())).json()["name"]
    assert name in text and "$12,500.00" in text


async def test_logo_upload_replace_read_and_delete(org: Org, other_org: Org) -> None:
    first = png()
    r = await org.client.put(
        "/v1/organisation/logo", content=first, headers={**org.auth(), "Content-Type": "image/png"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["content_type"] == "image/png" and (r.json()["width"], r.json()["height"]) == (240, 80)
    assert r.json()["size_bytes"] == len(first) and re.fullmatch(r"[0-9a-f]{64}", r.json()["sha256"])
    second = jpeg()
    r = await org.client.put(
        "/v1/organisation/logo", content=second, headers={**org.auth(), "Content-Type": "image/jpeg"}
    )
    assert r.status_code == 200 and r.json()["content_type"] == "image/jpeg"
    _, rep_key = await org.add_user("rep")
    r = await org.client.get("/v1/organisation/logo", headers=org.auth(rep_key))
    assert r.status_code == 200 and r.content == second and r.headers["content-type"] == "image/jpeg"
    # Another organisation sees only its own (none).
    assert (await other_org.client.get("/v1/organisation/logo", headers=other_org.auth())).status_code == 404
    r = await org.client.delete("/v1/organisation/logo", headers=org.auth())
    assert r.status_code == 204
    assert (await org.client.get("/v1/organisation/logo", headers=org.auth())).status_code == 404
    assert (await org.client.delete("/v1/organisation/logo", headers=org.auth())).status_code == 404


async def test_logo_refusals_change_nothing(org: Org) -> None:
    auth = org.auth()
    r = await org.client.put(
        "/v1/organisation/logo", content=png(), headers={**auth, "Content-Type": "image/png"}
    )
    assert r.status_code == 200
    stored = (await org.client.get("/v1/organisation/logo", headers=auth)).content
    cases = [
        (png(), "image/gif", 415),
        (b"not an image at all", "image/png", 422),
        (jpeg(), "image/png", 422),  # says PNG, is a JPEG
        (b"", "image/png", 422),
        (png(5000, 10), "image/png", 422),  # too wide
        (b"\x89PNG" + b"\0" * (600 * 1024), "image/png", 413),
    ]
    for body, media, status in cases:
        r = await org.client.put(
            "/v1/organisation/logo", content=body, headers={**auth, "Content-Type": media}
        )
        assert r.status_code == status, (media, status, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    for role in ("manager", "rep", "viewer"):
        _, key = await org.add_user(role)
        r = await org.client.put(
            "/v1/organisation/logo", content=png(), headers={**org.auth(key), "Content-Type": "image/png"}
        )
        assert r.status_code == 403, role
        assert (await org.client.delete("/v1/organisation/logo", headers=org.auth(key))).status_code == 403
        assert (await org.client.get("/v1/organisation/logo", headers=org.auth(key))).content == stored
    assert (await org.client.get("/v1/organisation/logo", headers=auth)).content == stored


async def test_seller_settings_merge_field_by_field_and_are_checked(org: Org) -> None:
    await chinese_seller(org)
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"seller": {"tax_id": "NEW-1"}}}, headers=org.auth()
    )
    assert r.status_code == 200
    assert r.json()["settings"]["seller"] == {**SELLER, "tax_id": "NEW-1"}
    for bad in (
        {"seller": {"email": "nope"}},
        {"seller": {"fax": "1"}},
        {"country": "XX"},
        {"base_currency": "RMB"},
    ):
        r = await org.client.patch("/v1/organisation", json={"settings": bad}, headers=org.auth())
        assert r.status_code == 422, bad


async def test_transparent_png_and_jpeg_logos_both_print(org: Org) -> None:
    deal = await make_deal(org, currency="CNY")
    r = await org.client.post(
        "/v1/quotes",
        json={"deal_id": deal["id"], "lines": [{"description": "服务", "quantity": "1", "unit_price": "1"}]},
        headers=org.auth(),
    )
    quote_id = r.json()["id"]
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 300), (0, 128, 0, 90)).save(buffer, format="PNG")
    for body, media in ((buffer.getvalue(), "image/png"), (jpeg(), "image/jpeg")):
        r = await org.client.put(
            "/v1/organisation/logo", content=body, headers={**org.auth(), "Content-Type": media}
        )
        assert r.status_code == 200, r.text
        pdf = (await org.client.get(f"/v1/quotes/{quote_id}/pdf", headers=org.auth())).content
        assert len(pypdf.PdfReader(io.BytesIO(pdf)).pages[0].images) == 1, media

"""The quote document as PDF (fpdf2, pure Python), with a bundled CJK font.

Text is drawn as text: a customer name or note containing HTML or script is printed literally,
never interpreted. The font, Loudou Kai, is a GB2312 + Latin subset of LXGW WenKai (SIL OFL 1.1),
shipped in app/assets/fonts with its licence.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.account import Account, Contact
from app.models.organisation import Organisation
from app.money import plain_percent
from app.security import Principal
from app.services.deals import service as deals
from app.services.quotes.service import get_quote, read_model

FONT_PATH = Path(__file__).resolve().parents[2] / "assets" / "fonts" / "LoudouKai-Regular.ttf"
FONT = "LoudouKai"


def _terms_text(terms: list[dict[str, Any]]) -> list[str]:
    out = []
    for term in terms:
        percent = plain_percent(Decimal(str(term["percent"])))
        when = (
            "on acceptance 签约时"
            if term.get("due") == "on_acceptance"
            else f"{term['due_days']} days after acceptance 签约后 {term['due_days']} 天"
        )
        out.append(f"{percent}% {when}")
    return out


def render(
    *,
    org_name: str,
    customer: str,
    contact: str | None,
    quote: dict[str, Any],
) -> bytes:
    """Draw the quote: header, parties, dates, lines, totals, payment terms, notes."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_font(FONT, fname=str(FONT_PATH))
    pdf.set_title(f"Quote {quote['number']}")
    pdf.set_creator("Loudou")
    pdf.add_page()
    width = pdf.epw
    currency = quote["currency"]

    pdf.set_font(FONT, size=18)
    pdf.cell(width, 10, text=org_name, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=14)
    pdf.cell(
        width,
        8,
        text=f"报价单 Quote {quote['number']}  (revision {quote['revision']})",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.set_font(FONT, size=10)
    pdf.ln(2)
    facts = [
        ("客户 Customer", customer),
        ("联系人 Contact", contact or "-"),
        ("日期 Issue date", str(quote["issue_date"])),
        ("有效期至 Valid until", str(quote["valid_until"] or "-")),
        ("币种 Currency", currency),
        ("价格 Prices", "tax inclusive 含税" if quote["tax_inclusive"] else "tax exclusive 不含税"),
    ]
    for label, value in facts:
        pdf.cell(45, 6, text=label)
        pdf.multi_cell(width - 45, 6, text=value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)

    headings = ("#", "Item 项目", "Qty 数量", "Unit price 单价", "Discount 折扣", "Tax 税", "Total 金额")
    widths = (8, 62, 18, 26, 26, 22, 28)
    with pdf.table(
        col_widths=widths,
        headings_style=FontFace(emphasis="", fill_color=(235, 235, 235)),
        text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
    ) as table:
        row = table.row()
        for heading in headings:
            row.cell(heading)
        for line in quote["lines"]:
            discount = Decimal(line["discount_amount"]) + Decimal(line["quote_discount_amount"])
            item = line["description"] + (f"\n{line['sku']}" if line.get("sku") else "")
            row = table.row()
            row.cell(str(line["position"]))
            row.cell(item)
            row.cell(str(line["quantity"]))
            row.cell(str(line["unit_price"]))
            row.cell(str(discount))
            row.cell(f"{line['tax']} ({line['tax_rate']}%)")
            row.cell(str(line["total"]))
    pdf.ln(3)

    totals = [
        ("小计 Subtotal", quote["subtotal"]),
        ("折扣 Discount", f"-{quote['discount_total']}"),
        ("净额 Net", quote["net_total"]),
        ("税额 Tax", quote["tax_total"]),
        ("合计 Total", f"{quote['total']} {currency}"),
    ]
    if Decimal(str(quote["discount_percent"])):
        totals.insert(
            2, ("整单折扣 Quote discount", f"{plain_percent(Decimal(str(quote['discount_percent'])))}%")
        )
    for label, value in totals:
        pdf.cell(width - 50, 6, text=label, align="R")
        pdf.cell(50, 6, text=str(value), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.cell(width, 6, text="付款条件 Payment terms", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for text in _terms_text(quote["payment_terms"]):
        pdf.cell(width, 6, text=f"  • {text}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if quote.get("notes"):
        pdf.ln(2)
        pdf.multi_cell(width, 6, text=f"备注 Notes: {quote['notes']}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


async def quote_pdf(session: AsyncSession, principal: Principal, quote_id: uuid.UUID) -> tuple[str, bytes]:
    """The PDF of a quote the caller may see, and a file name for it."""
    quote = await get_quote(session, principal, quote_id)
    deal = await deals.get_deal(session, principal, quote.deal_id)
    org = await session.get(Organisation, principal.org_id)
    account = await session.get(Account, deal.account_id) if deal.account_id else None
    contact = await session.get(Contact, deal.contact_id) if deal.contact_id else None
    body = render(
        org_name=org.name if org else "",
        customer=account.name if account else deal.name,
        contact=contact.name if contact else None,
        quote=read_model(quote).model_dump(mode="json"),
    )
    return f"{quote.number}-r{quote.revision}.pdf", body

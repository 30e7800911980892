"""The quote document as PDF (fpdf2, pure Python), with a bundled CJK font.

What a customer receives: the seller block (logo, legal name, address, tax id, contact) from the
organisation's settings, the customer and contact, dates and validity, the lines in a table whose
header repeats on every page, totals with the currency's symbol and thousands separators (babel,
in the organisation country's locale), payment terms, notes, and "page n/N" on every page.

Text is drawn as text: a customer name or note containing HTML or script is printed literally,
never interpreted. The font, Loudou Kai, is a GB2312 + Latin subset of LXGW WenKai (SIL OFL 1.1),
shipped in app/assets/fonts with its licence.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, format_decimal
from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos
from fpdf.fonts import FontFace
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.account import Account, Contact
from app.models.organisation import Organisation, OrganisationSettings
from app.money import minor_units, plain_percent, round_money
from app.security import Principal
from app.services import organisation as organisations
from app.services.deals import service as deals
from app.services.quotes.service import get_quote, read_model

FONT_PATH = Path(__file__).resolve().parents[2] / "assets" / "fonts" / "LoudouKai-Regular.ttf"
FONT = "LoudouKai"
GREY = (110, 110, 110)
RULE = (200, 200, 200)
HEADING_FILL = (235, 235, 235)
LOGO_HEIGHT = 16.0  # mm
LOGO_MAX_WIDTH = 50.0  # mm
COLUMNS = (  # (heading, width in mm, alignment); the widths fill A4's 180 mm between margins
    ("#", 8, "LEFT"),
    ("项目 Item", 56, "LEFT"),
    ("数量 Qty", 13, "RIGHT"),
    ("单价 Unit price", 25, "RIGHT"),
    ("折扣 Discount", 22, "RIGHT"),
    ("税率 Tax %", 13, "RIGHT"),
    ("税额 Tax", 20, "RIGHT"),
    ("金额 Amount", 23, "RIGHT"),
)
TOTALS_HEIGHT = 48.0  # mm kept free for the totals block; less left on a page starts a new one


@cache
def _font_chars() -> frozenset[int]:
    """Code points the bundled font can draw."""
    with TTFont(str(FONT_PATH), lazy=True) as font:
        return frozenset(font.getBestCmap())


def _drawable(text: str) -> bool:
    chars = _font_chars()
    return all(ord(ch) in chars for ch in text)


@dataclass(frozen=True)
class Money:
    """Formats amounts of one currency the way the seller's country writes them."""

    currency: str
    locale: Locale

    @classmethod
    def of(cls, currency: str, country: str | None) -> Money:
        """The formatter for `currency` in the locale most used in `country` (English without one)."""
        locale = Locale("en")
        if country:
            with contextlib.suppress(UnknownLocaleError, ValueError):
                locale = Locale.parse(f"und_{country}")
        return cls(currency=currency, locale=locale)

    def number(self, value: Any) -> str:
        """An amount with thousands separators and the currency's minor-unit digits, no symbol."""
        digits = minor_units(self.currency)
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        amount = round_money(Decimal(str(value)), self.currency)
        return format_decimal(amount, format=pattern, locale=self.locale, numbering_system="latn")

    def amount(self, value: Any) -> str:
        """An amount with its currency symbol (the ISO code when the font cannot draw the symbol)."""
        amount = round_money(Decimal(str(value)), self.currency)
        text = format_currency(
            amount, self.currency, locale=self.locale, decimal_quantization=False, numbering_system="latn"
        )
        return text if _drawable(text) else f"{self.currency} {self.number(amount)}"

    def quantity(self, value: Any) -> str:
        """A quantity with separators and without trailing zeros ("1,200", "2.5")."""
        return format_decimal(plain_percent(Decimal(str(value))), locale=self.locale, numbering_system="latn")


@dataclass
class Seller:
    """The seller block: who sends the quote."""

    name: str
    address: list[str] = field(default_factory=list)
    tax_id: str | None = None
    contact: list[str] = field(default_factory=list)
    logo: bytes | None = None
    logo_size: tuple[int, int] = (1, 1)  # pixels, for the proportions

    @classmethod
    def of(
        cls,
        org_name: str,
        settings: OrganisationSettings,
        logo: bytes | None = None,
        logo_size: tuple[int, int] = (1, 1),
    ) -> Seller:
        """From the organisation's `seller` settings; its name stands in for a missing legal name."""
        details = settings.seller
        address = [line.strip() for line in (details.address or "").splitlines() if line.strip()]
        contact = [v for v in (details.phone, details.email, details.website) if v]
        return cls(
            name=details.legal_name or org_name,
            address=address,
            tax_id=details.tax_id,
            contact=contact,
            logo=logo,
            logo_size=logo_size,
        )


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


class QuoteDocument(FPDF):
    """A4 pages with the quote's running header (from page 2) and "page n/N" footer."""

    def __init__(self, *, running_title: str) -> None:
        super().__init__(format="A4")
        self.running_title = running_title
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(auto=True, margin=18)
        self.add_font(FONT, fname=str(FONT_PATH))
        self.alias_nb_pages()

    def header(self) -> None:
        """From the second page on: which quote this page belongs to."""
        if self.page_no() == 1:
            return
        self.set_font(FONT, size=8)
        self.set_text_color(*GREY)
        self.cell(self.epw, 5, text=self.running_title, align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*RULE)
        self.line(self.l_margin, self.get_y(), self.l_margin + self.epw, self.get_y())
        self.ln(3)
        self.set_text_color(0, 0, 0)

    def footer(self) -> None:
        """Page n/N on every page."""
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.set_text_color(*GREY)
        self.cell(
            self.epw, 5, text=f"第 {self.page_no()}/{{nb}} 页 · Page {self.page_no()}/{{nb}}", align=Align.C
        )
        self.set_text_color(0, 0, 0)


def _seller_block(pdf: QuoteDocument, seller: Seller, top: float) -> float:
    """Logo, name, address, tax id and contact in the left column; returns where it ends."""
    y = top
    if seller.logo:
        width_px, height_px = seller.logo_size
        height = LOGO_HEIGHT
        width = height * width_px / height_px
        if width > LOGO_MAX_WIDTH:  # a wide logo keeps its proportions within the column
            width, height = LOGO_MAX_WIDTH, LOGO_MAX_WIDTH * height_px / width_px
        pdf.image(io.BytesIO(seller.logo), x=pdf.l_margin, y=y, w=width, h=height)
        y += height + 2
    pdf.set_xy(pdf.l_margin, y)
    width = pdf.epw * 0.55
    pdf.set_font(FONT, size=13)
    pdf.multi_cell(width, 6, text=seller.name, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align=Align.L)
    pdf.set_font(FONT, size=9)
    lines = [*seller.address]
    if seller.tax_id:
        lines.append(f"税号 Tax ID: {seller.tax_id}")
    if seller.contact:
        lines.append(" · ".join(seller.contact))
    for line in lines:
        pdf.multi_cell(width, 4.6, text=line, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align=Align.L)
    return pdf.get_y()


def _title_block(pdf: QuoteDocument, quote: dict[str, Any], top: float) -> float:
    """Quote number, revision and dates in the right column; returns where it ends."""
    x = pdf.l_margin + pdf.epw * 0.55
    width = pdf.epw * 0.45
    pdf.set_xy(x, top)
    pdf.set_font(FONT, size=18)
    pdf.cell(width, 9, text="报价单 QUOTATION", align=Align.R, new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=9.5)
    rows = [
        ("编号 No.", f"{quote['number']}  (rev. {quote['revision']})"),
        ("日期 Date", str(quote["issue_date"])),
        ("有效期至 Valid until", str(quote["valid_until"] or "-")),
        ("币种 Currency", quote["currency"]),
    ]
    for label, value in rows:
        pdf.set_x(x)
        pdf.set_text_color(*GREY)
        pdf.cell(width * 0.45, 5, text=label, align=Align.R)
        pdf.set_text_color(0, 0, 0)
        pdf.cell(width * 0.55, 5, text=value, align=Align.R, new_x=XPos.LEFT, new_y=YPos.NEXT)
    return pdf.get_y()


def _customer_block(pdf: QuoteDocument, customer: str, contact: str | None, quote: dict[str, Any]) -> None:
    pdf.set_font(FONT, size=9)
    pdf.set_text_color(*GREY)
    pdf.cell(pdf.epw, 5, text="致 To", new_x=XPos.LMARGIN, new_y=YPos.NEXT, align=Align.L)
    pdf.set_text_color(0, 0, 0)
    pdf.set_font(FONT, size=11.5)
    pdf.multi_cell(pdf.epw, 6, text=customer, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align=Align.L)
    pdf.set_font(FONT, size=9.5)
    if contact:
        pdf.multi_cell(
            pdf.epw, 5, text=f"联系人 Attn: {contact}", new_x=XPos.LMARGIN, new_y=YPos.NEXT, align=Align.L
        )
    prices = "含税 Prices include tax" if quote["tax_inclusive"] else "不含税 Prices exclude tax"
    pdf.set_text_color(*GREY)
    pdf.cell(pdf.epw, 5, text=prices, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align=Align.L)
    pdf.set_text_color(0, 0, 0)


def _lines_table(pdf: QuoteDocument, quote: dict[str, Any], money: Money) -> None:
    pdf.set_font(FONT, size=9)
    pdf.set_draw_color(*RULE)
    with pdf.table(
        col_widths=tuple(width for _, width, _ in COLUMNS),
        width=pdf.epw,
        headings_style=FontFace(emphasis="", fill_color=HEADING_FILL),
        text_align=tuple(align for _, _, align in COLUMNS),
        repeat_headings=1,  # the header row on top of every page the table reaches
        line_height=5,
        padding=(1.2, 1.5),
    ) as table:
        row = table.row()
        for heading, _, _ in COLUMNS:
            row.cell(heading)
        for line in quote["lines"]:
            discount = Decimal(line["discount_amount"]) + Decimal(line["quote_discount_amount"])
            item = line["description"] + (f"\n{line['sku']}" if line.get("sku") else "")
            row = table.row()
            row.cell(str(line["position"]))
            row.cell(item)
            row.cell(money.quantity(line["quantity"]))
            row.cell(money.number(line["unit_price"]))
            row.cell(f"-{money.number(discount)}" if discount else "-")
            row.cell(f"{plain_percent(Decimal(str(line['tax_rate'])))}%")
            row.cell(money.number(line["tax"]))
            row.cell(money.number(line["total"]))


def _totals(pdf: QuoteDocument, quote: dict[str, Any], money: Money) -> None:
    if pdf.get_y() + TOTALS_HEIGHT > pdf.page_break_trigger:
        pdf.add_page()  # keep the totals together, under a repeated title
    pdf.ln(3)
    rows: list[tuple[str, str]] = [("小计 Subtotal", money.amount(quote["subtotal"]))]
    if Decimal(str(quote["discount_total"])):
        rows.append(("折扣 Discount", f"-{money.amount(quote['discount_total'])}"))
    if Decimal(str(quote["discount_percent"])):
        rows.append(("整单折扣 Quote discount", f"{plain_percent(Decimal(str(quote['discount_percent'])))}%"))
    rows += [("净额 Net", money.amount(quote["net_total"])), ("税额 Tax", money.amount(quote["tax_total"]))]
    label_width, value_width = pdf.epw - 55, 55
    pdf.set_font(FONT, size=10)
    for label, value in rows:
        pdf.cell(label_width, 6, text=label, align=Align.R)
        pdf.cell(value_width, 6, text=value, align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_draw_color(*RULE)
    pdf.line(pdf.l_margin + pdf.epw - 90, pdf.get_y() + 0.5, pdf.l_margin + pdf.epw, pdf.get_y() + 0.5)
    pdf.ln(1.5)
    pdf.set_font(FONT, size=13)
    pdf.cell(label_width, 8, text="合计 Total", align=Align.R)
    pdf.cell(
        value_width, 8, text=money.amount(quote["total"]), align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )


def render(
    *,
    seller: Seller,
    customer: str,
    contact: str | None,
    quote: dict[str, Any],
    country: str | None = None,
) -> bytes:
    """Draw the quote: seller and title, customer, lines (header repeated on every page), totals,
    payment terms, notes; amounts formatted for `country` (the seller's)."""
    money = Money.of(quote["currency"], country)
    pdf = QuoteDocument(
        running_title=f"{seller.name} · 报价单 Quote {quote['number']} (rev. {quote['revision']})"
    )
    pdf.set_title(f"Quote {quote['number']}")
    pdf.set_author(seller.name)
    pdf.set_creator("Loudou")
    pdf.add_page()
    top = pdf.get_y()
    bottom = max(_seller_block(pdf, seller, top), _title_block(pdf, quote, top))
    pdf.set_xy(pdf.l_margin, bottom + 3)
    pdf.set_draw_color(*RULE)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + pdf.epw, pdf.get_y())
    pdf.ln(3)
    _customer_block(pdf, customer, contact, quote)
    pdf.ln(4)
    _lines_table(pdf, quote, money)
    _totals(pdf, quote, money)
    terms = _terms_text(quote["payment_terms"])
    if terms:
        pdf.ln(4)
        pdf.set_font(FONT, size=10)
        pdf.cell(
            pdf.epw, 6, text="付款条件 Payment terms", new_x=XPos.LMARGIN, new_y=YPos.NEXT, align=Align.L
        )
        pdf.set_font(FONT, size=9.5)
        for text in terms:
            pdf.cell(pdf.epw, 5, text=f"  • {text}", new_x=XPos.LMARGIN, new_y=YPos.NEXT, align=Align.L)
    if quote.get("notes"):
        pdf.ln(3)
        pdf.set_font(FONT, size=9.5)
        pdf.multi_cell(
            pdf.epw,
            5,
            text=f"备注 Notes: {quote['notes']}",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
            align=Align.L,
        )
    return bytes(pdf.output())


async def quote_pdf(session: AsyncSession, principal: Principal, quote_id: uuid.UUID) -> tuple[str, bytes]:
    """The PDF of a quote the caller may see, and a file name for it."""
    quote = await get_quote(session, principal, quote_id)
    deal = await deals.get_deal(session, principal, quote.deal_id)
    org = await session.get(Organisation, principal.org_id)
    assert org is not None
    settings = org.typed_settings()
    logo = await organisations.get_logo(session, org.id)
    account = await session.get(Account, deal.account_id) if deal.account_id else None
    contact = await session.get(Contact, deal.contact_id) if deal.contact_id else None
    body = render(
        seller=Seller.of(
            org.name,
            settings,
            logo.data if logo else None,
            (logo.width, logo.height) if logo else (1, 1),
        ),
        customer=account.name if account else deal.name,
        contact=contact.name if contact else None,
        quote=read_model(quote).model_dump(mode="json"),
        country=settings.country,
    )
    return f"{quote.number}-r{quote.revision}.pdf", body

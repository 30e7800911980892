"""Inbound e-mail parsing: four providers into one InboundEmail, quote/signature stripping, signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.services.intake.email_inbound import (
    EmailParseError,
    EmailSignatureError,
    check_basic_auth,
    html_to_text,
    parse_mailgun,
    parse_mime,
    parse_postmark,
    parse_sendgrid,
    split_quote,
    split_signature,
    verify_mailgun_signature,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "emails"
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"  # the key the fixture's signature was made with


def _eml(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


# --- raw MIME -------------------------------------------------------------------------------


def test_mime_new_enquiry_yields_sender_subject_stripped_body_phone_and_company() -> None:
    email = parse_mime(_eml("signature.eml"), default_region="US")

    assert email.provider == "mime"
    assert email.from_name == "John Smith"
    assert email.from_email == "john.smith@acme-robotics.com"
    assert email.to == ["sales@inbound.loudou.example"]
    assert email.subject == "Quote request: 20 pick-and-place arms"
    assert email.reply_text == (
        "Hello,\n\nWe are expanding our assembly line in Fremont and need a quote for 20\n"
        "pick-and-place arms, delivery in Q1 2027. Could you also include\n"
        "installation and a 3-year service contract?"
    )
    assert email.signature == (
        "Best regards,\nJohn Smith\nHead of Procurement\nAcme Robotics Ltd\n+1 (415) 555-0100\n"
        "www.acme-robotics.com"
    )
    assert email.quoted_text is None
    assert email.phone == "+14155550100"
    assert email.company == "Acme Robotics Ltd"
    assert email.company_source == "signature"
    assert email.message_id == "CAKx7nQ2vJ+8f1Lw0pXa=Ya3fW9r@mail.gmail.com"
    assert email.in_reply_to is None
    assert email.references == []
    assert email.date == datetime(2026, 11, 19, 17, 14, 2, tzinfo=UTC)
    assert email.text.startswith("Hello,\n\nWe are expanding")
    assert email.text.endswith("www.acme-robotics.com")
    assert email.html is not None and "<div" in email.html
    assert email.headers["authentication-results"].startswith("mx.loudou.example; dkim=pass")
    assert email.headers["received-spf"].startswith("pass")
    assert "received" not in email.headers
    assert len(email.attachments) == 1
    attachment = email.attachments[0]
    assert (attachment.filename, attachment.content_type, attachment.content_id) == (
        "line-layout.pdf",
        "application/pdf",
        "f_lx8k2m9a0",
    )
    assert attachment.size > 0
    assert email.is_automated is False


def test_mime_reply_keeps_threading_headers_and_strips_two_line_on_wrote_quote() -> None:
    email = parse_mime(_eml("reply.eml"), default_region="US")

    assert email.from_email == "john.smith@acme-robotics.com"
    assert email.subject == "Re: Quote request: 20 pick-and-place arms"
    assert email.message_id == "CAKx7nQ3Lz0pQ1Ww4cR5=Zb8HkE2@mail.gmail.com"
    assert email.in_reply_to == "0f3c9a52-6a1e-4d7b-9a63-2d1f5e0b7c11@mail.loudou.example"
    assert email.references == [
        "CAKx7nQ2vJ+8f1Lw0pXa=Ya3fW9r@mail.gmail.com",
        "0f3c9a52-6a1e-4d7b-9a63-2d1f5e0b7c11@mail.loudou.example",
    ]
    assert email.thread_ids() == [
        "0f3c9a52-6a1e-4d7b-9a63-2d1f5e0b7c11@mail.loudou.example",
        "CAKx7nQ2vJ+8f1Lw0pXa=Ya3fW9r@mail.gmail.com",
    ]
    assert email.reply_text == (
        "Hi Anna,\n\nThursday at 10:00 works for us. Please bring the pricing for the\n"
        "service contract as well."
    )
    assert email.signature == "Thanks,\nJohn"
    assert email.quoted_text is not None
    assert email.quoted_text.startswith(
        "On Thu, 19 Nov 2026 at 16:02, Anna Lee <anna.lee@loudou.example>\nwrote:"
    )
    assert email.quoted_text.endswith("> +44 20 7946 0958")
    # Our own rep's number sits in the quote and must not become the lead's phone.
    assert email.phone is None
    assert email.mailbox_hash == "l7q3x2mbbq"
    assert email.company == "Acme Robotics"
    assert email.company_source == "domain"


def test_mime_html_only_is_converted_to_text_before_stripping() -> None:
    email = parse_mime(_eml("html_only.eml"), default_region="DE")

    assert email.from_name == "Lena Fißcher"
    assert email.from_email == "lena.fischer@brightwave.io"
    assert email.subject == "Demo request – Brightwave"
    assert email.reply_text == (
        "Hi there,\n\nWe'd like a demo of your pipeline API for our 12-person sales team & our ops lead.\n\n"
        "Is next Tuesday possible?"
    )
    assert email.signature == (
        "Kind regards,\nLena Fißcher\nHead of Revenue Operations\nBrightwave\nTel. +49 30 901820"
    )
    assert email.quoted_text == (
        "On Wed, 18 Nov 2026 at 11:00, Loudou <hello@loudou.example> wrote:\n\n> Thanks for signing up!"
    )
    assert "<p>" not in email.text and "<br>" not in email.text and "p { margin" not in email.text
    assert email.phone == "+4930901820"
    assert email.company == "Brightwave"
    assert email.company_source == "signature"


def test_mime_outlook_html_reply_in_windows_1252() -> None:
    email = parse_mime(_eml("outlook_html_reply.eml"), default_region="FR")

    assert email.from_name == "Pierre Dubois"
    assert email.reply_text == "Bonjour Anna,\n\nC'est d'accord, envoyez-moi le bon de commande."
    assert email.signature == (
        "Regards,\nPierre Dubois\nDirecteur général\nDubois & Fils SARL\n+33 1 42 68 53 00"
    )
    assert email.quoted_text is not None
    assert email.quoted_text.startswith("From: Anna Lee <anna.lee@loudou.example>\nSent: Thursday")
    assert email.quoted_text.endswith("Bonjour Pierre, voici notre devis.")
    assert email.phone == "+33142685300"
    assert email.company == "Dubois & Fils SARL"
    assert email.in_reply_to == "9d2e7f41-0c6b-4a3e-8f15-b27c6d9e0a58@mail.loudou.example"


def test_mime_gbk_chinese_mail_decodes_and_reads_chinese_signature() -> None:
    email = parse_mime(_eml("chinese_gbk.eml"), default_region="CN")

    assert email.from_name == "张喆"  # 喆 is GBK-only although the part declares GB2312
    assert email.from_email == "zhangzhe@xingchen-zn.cn"
    assert email.subject == "询价：焊接机器人30台"
    assert email.reply_text == (
        "王经理，您好！\n\n我司计划采购一批工业机器人（约30台），用于苏州新工厂的焊接产线。\n请提供报价单和交货周期，谢谢。"
    )
    assert email.signature is not None
    assert email.signature.startswith("此致\n敬礼\n\n张喆\n采购经理")
    assert email.phone == "+8613800138000"
    assert email.company == "苏州星辰智能装备有限公司"
    assert email.message_id == "202611201005212736581@xingchen-zn.cn"
    assert email.date == datetime(2026, 11, 20, 2, 5, 21, tzinfo=UTC)


def test_mime_without_any_message_header_is_rejected() -> None:
    with pytest.raises(EmailParseError, match="not an RFC 5322 message"):
        parse_mime(b"just some bytes\nthat are not mail\n")
    with pytest.raises(EmailParseError, match="empty"):
        parse_mime(b"")


def test_mime_odd_but_valid_mail_does_not_raise() -> None:
    raw = (
        b"From: nobody\r\nSubject: =?x-unknown?q?broken?=\r\nDate: not a date\r\n"
        b"Content-Type: text/plain; charset=x-made-up\r\n\r\nHello \xe4\xbd\xa0\xe5\xa5\xbd\r\n"
    )
    email = parse_mime(raw)

    assert email.from_email is None
    assert email.date is None
    assert email.text == "Hello 你好"


def test_mime_auto_reply_is_flagged() -> None:
    raw = (
        b"From: Out Of Office <ooo@example.com>\r\nTo: sales@inbound.loudou.example\r\n"
        b"Subject: Automatic reply\r\nAuto-Submitted: auto-replied\r\n\r\nI am away.\r\n"
    )
    assert parse_mime(raw).is_automated is True


# --- SendGrid -------------------------------------------------------------------------------


def test_sendgrid_parsed_mode() -> None:
    email = parse_sendgrid(_json("sendgrid_parsed.json"), default_region="DE")

    assert email.provider == "sendgrid"
    assert email.from_name == "Maria Garcia"
    assert email.from_email == "maria.garcia@northwind-logistics.com"
    assert email.to == ["sales@parse.loudou.example"]
    assert email.envelope_to == ["sales@parse.loudou.example"]
    assert email.subject == "Pricing for 40 seats"
    assert email.reply_text == (
        "Hello Loudou team,\n\nWe run 14 warehouses across Germany and Poland and are looking for a\n"
        "CRM pipeline we can drive from our own tools. Could we get pricing for\n40 seats?"
    )
    assert email.signature == (
        "Best regards,\nMaria Garcia\nOperations Director\nNorthwind Logistics GmbH\nTel: +49 89 21094 0"
    )
    assert email.phone == "+4989210940"
    assert email.company == "Northwind Logistics GmbH"
    assert email.message_id == "AM9PR07MB7105C2F1E0B8D4A6C1F3A2B4C5D6@AM9PR07MB7105.eurprd07.prod.outlook.com"
    assert email.date == datetime(2026, 11, 20, 9, 41, 5, tzinfo=UTC)
    assert email.headers["spf"] == "pass"
    assert email.headers["dkim"] == "{@northwind-logistics.com : pass}"
    assert email.headers["x-spam-score"] == "0.1"
    assert [(a.filename, a.content_type) for a in email.attachments] == [
        ("warehouses.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    ]


def test_sendgrid_raw_mode_parses_the_email_field_as_mime() -> None:
    email = parse_sendgrid(_json("sendgrid_raw.json"))

    assert email.provider == "sendgrid"
    assert email.from_email == "john.smith@acme-robotics.com"
    assert email.in_reply_to == "0f3c9a52-6a1e-4d7b-9a63-2d1f5e0b7c11@mail.loudou.example"
    assert email.references[-1] == "0f3c9a52-6a1e-4d7b-9a63-2d1f5e0b7c11@mail.loudou.example"
    assert email.reply_text.startswith("Hi Anna,\n\nThursday at 10:00 works for us.")
    assert email.envelope_to == ["reply+l7q3x2mbbq@inbound.loudou.example"]
    assert email.mailbox_hash == "l7q3x2mbbq"
    assert email.headers["spf"] == "pass"


def test_sendgrid_post_without_from_or_email_is_not_sendgrid() -> None:
    with pytest.raises(EmailParseError, match="not a SendGrid"):
        parse_sendgrid({"subject": "hello", "text": "hi"})


# --- Mailgun --------------------------------------------------------------------------------


def test_mailgun_route_post_uses_stripped_text_and_message_headers() -> None:
    form = _json("mailgun_route.json")
    verify_mailgun_signature(
        signing_key=MAILGUN_KEY,
        timestamp=form["timestamp"],
        token=form["token"],
        signature=form["signature"],
        now=float(form["timestamp"]) + 30,
    )
    email = parse_mailgun(form, default_region="GB")

    assert email.provider == "mailgun"
    assert email.from_name == "Priya Raman"
    assert email.from_email == "priya@lumen-analytics.co.uk"
    assert email.to == ["tom.becker@mg.loudou.example"]
    assert email.subject == "RE: Loudou proposal"
    assert email.reply_text == (
        "Hi Tom,\n\nYes please, send the contract over - we'd like to start with the Growth\n"
        "plan for 15 users from January."
    )
    assert email.signature == "Thanks,\nPriya Raman\nVP Sales, Lumen Analytics\n+44 20 7946 0123"
    assert email.quoted_text is not None and email.quoted_text.startswith("From: Tom Becker")
    assert email.phone == "+442079460123"
    assert email.company == "Lumen Analytics"
    assert email.message_id == (
        "DB9PR02MB7243E1D1C8A0A5F07B9A3C2FD4F62@DB9PR02MB7243.eurprd02.prod.outlook.com"
    )
    assert email.in_reply_to == "8a1f7c0e-3b5d-4e21-9c6a-7d2e4b9f0a13@mail.loudou.example"
    assert email.references == ["8a1f7c0e-3b5d-4e21-9c6a-7d2e4b9f0a13@mail.loudou.example"]
    assert email.headers["x-mailgun-spf"] == "Pass"
    assert email.date == datetime(2026, 11, 20, 11, 16, 5, tzinfo=UTC)


def test_mailgun_without_stripped_fields_strips_outlook_quote_itself() -> None:
    form = _json("mailgun_route.json")
    del form["stripped-text"], form["stripped-signature"]
    email = parse_mailgun(form, default_region="GB")

    assert email.reply_text.endswith("plan for 15 users from January.")
    assert email.signature == "Thanks,\nPriya Raman\nVP Sales, Lumen Analytics\n+44 20 7946 0123"
    assert email.quoted_text is not None and email.quoted_text.startswith("From: Tom Becker")


def test_mailgun_raw_mime_mode() -> None:
    form = {"recipient": "sales@mg.loudou.example", "body-mime": _eml("signature.eml").decode()}
    email = parse_mailgun(form, default_region="US")

    assert email.provider == "mailgun"
    assert email.phone == "+14155550100"
    assert email.company == "Acme Robotics Ltd"
    assert email.envelope_to == ["sales@mg.loudou.example"]


def test_mailgun_attachment_count_and_content_id_map() -> None:
    form = _json("mailgun_route.json")
    form["attachment-count"] = "2"
    form["content-id-map"] = json.dumps({"<ii_lx9a1b2c3>": "attachment-2"})
    email = parse_mailgun(form)

    assert [a.content_id for a in email.attachments] == [None, "ii_lx9a1b2c3"]


def test_mailgun_post_without_sender_is_not_mailgun() -> None:
    with pytest.raises(EmailParseError, match="not a Mailgun"):
        parse_mailgun({"body-plain": "hi"})


def _mailgun_sign(timestamp: str, token: str) -> str:
    return hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def test_mailgun_signature_valid() -> None:
    token = "a" * 50
    verify_mailgun_signature(
        signing_key=MAILGUN_KEY,
        timestamp="1795684573",
        token=token,
        signature=_mailgun_sign("1795684573", token),
        now=1795684573 + 899,
    )


def test_mailgun_signature_wrong() -> None:
    token = "a" * 50
    with pytest.raises(EmailSignatureError, match="does not match"):
        verify_mailgun_signature(
            signing_key="key-someone-else",
            timestamp="1795684573",
            token=token,
            signature=_mailgun_sign("1795684573", token),
            now=1795684573,
        )


def test_mailgun_signature_stale_timestamp() -> None:
    token = "b" * 50
    with pytest.raises(EmailSignatureError, match="stale"):
        verify_mailgun_signature(
            signing_key=MAILGUN_KEY,
            timestamp="1795684573",
            token=token,
            signature=_mailgun_sign("1795684573", token),
            now=1795684573 + 901,
        )


def test_mailgun_signature_future_timestamp() -> None:
    token = "c" * 50
    with pytest.raises(EmailSignatureError, match="future"):
        verify_mailgun_signature(
            signing_key=MAILGUN_KEY,
            timestamp="1795684573",
            token=token,
            signature=_mailgun_sign("1795684573", token),
            now=1795684573 - 3600,
        )


@pytest.mark.parametrize(
    ("timestamp", "token", "signature"),
    [
        ("", "t" * 50, "0" * 64),
        ("1795684573", "", "0" * 64),
        ("1795684573", "t" * 50, ""),
        ("17956845.73", "t" * 50, "0" * 64),
        ("1795684573", "t" * 50, "not-hex"),
        ("1795684573", "t" * 50, "é" * 64),
    ],
)
def test_mailgun_signature_malformed(timestamp: str, token: str, signature: str) -> None:
    with pytest.raises(EmailSignatureError):
        verify_mailgun_signature(
            signing_key=MAILGUN_KEY, timestamp=timestamp, token=token, signature=signature, now=1795684573
        )


# --- Postmark -------------------------------------------------------------------------------


def test_postmark_inbound_json() -> None:
    email = parse_postmark(_json("postmark_inbound.json"), default_region="US")

    assert email.provider == "postmark"
    assert email.from_name == "Daniel O'Brien"
    assert email.from_email == "daniel@harborfreight-analytics.com"
    assert email.to == ["sales+chicago@inbound.loudou.example"]
    assert email.cc == ["ops@harborfreight-analytics.com"]
    assert email.subject == "Re: Great meeting you at SaaStr"
    assert email.reply_text == (
        "Hi,\n\nI saw your talk at SaaStr. We're a 25-person team in Chicago and want to\n"
        "replace our spreadsheet pipeline. Can someone walk us through the API?"
    )
    assert email.signature == (
        "Cheers,\nDaniel O'Brien\nFounder & CEO\nHarbor Freight Analytics Inc.\n(312) 555-0147"
    )
    assert email.quoted_text == (
        "On Tue, Nov 17, 2026 at 9:00 AM Loudou <hello@loudou.example> wrote:\n"
        "> Thanks for visiting our booth!"
    )
    assert email.phone == "+13125550147"
    assert email.company == "Harbor Freight Analytics Inc."
    assert email.message_id == "CAGXpo2WKfxHWZ5UFYCR3H_J9SNMG+5AXUovfEFL6DjWBJSyZaA@mail.gmail.com"
    assert email.in_reply_to == "5c1e0b7a-2f3d-4a8e-b9c6-1d7f3e2a9b40@mail.loudou.example"
    assert email.references == ["5c1e0b7a-2f3d-4a8e-b9c6-1d7f3e2a9b40@mail.loudou.example"]
    assert email.provider_id == "73e6d360-66eb-11e1-8e72-a8904824019b"
    assert email.mailbox_hash == "chicago"
    assert email.envelope_to == ["sales+chicago@inbound.loudou.example"]
    assert email.date == datetime(2026, 11, 20, 22, 20, 11, tzinfo=UTC)
    assert email.headers["x-spam-status"] == "No"
    assert [(a.filename, a.content_type, a.size) for a in email.attachments] == [
        ("requirements.pdf", "application/pdf", 20)
    ]


def test_postmark_payload_without_from_is_not_postmark() -> None:
    with pytest.raises(EmailParseError, match="not a Postmark"):
        parse_postmark({"Subject": "hi", "TextBody": "hello"})


def _basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


def test_basic_auth_accepts_the_right_credentials() -> None:
    assert check_basic_auth(
        _basic(b"postmark:s3cr3t:with:colons"), username="postmark", password="s3cr3t:with:colons"
    )
    assert check_basic_auth("basic " + _basic(b"postmark:pw")[6:], username="postmark", password="pw")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        _basic(b"postmark"),
        _basic(b"postmark:wrong"),
        _basic(b"someone:pw"),
    ],
)
def test_basic_auth_rejects_everything_else(header: str | None) -> None:
    assert check_basic_auth(header, username="postmark", password="pw") is False


# --- quote and signature stripping ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reply", "quote_start"),
    [
        (
            "Sounds good.\n\nOn Thu, Nov 19, 2026 at 10:02 AM Anna Lee <anna@loudou.example> wrote:\n> Hi",
            "Sounds good.",
            "On Thu",
        ),
        (
            "Yes.\n\n-----Original Message-----\nFrom: Anna\nSent: Thursday\nSubject: hi\n\nhello",
            "Yes.",
            "-----",
        ),
        (
            "Yes.\n\n________________________________\nFrom: Anna Lee <anna@loudou.example>\n"
            "Sent: Thursday, November 19, 2026 10:02 AM\nTo: John\nSubject: Quote\n\nhello",
            "Yes.",
            "____",
        ),
        ("Yes.\n\nFrom: Anna Lee\nSent: Thursday\nTo: John\n\nhello", "Yes.", "From: Anna Lee"),
        (
            "好的，周四见。\n\n在 2026年11月20日 星期五 10:00，Anna Lee <anna@loudou.example> 写道：\n> 你好",
            "好的，周四见。",
            "在 2026",
        ),
        (
            "好的。\n\n在 2026年11月20日 10:00，Anna Lee <anna@loudou.example>\n写道：\n> 你好",
            "好的。",
            "在 2026",
        ),
        (
            "好的。\n\n------------------ 原始邮件 ------------------\n"
            "发件人: Anna\n发送时间: 2026年11月20日",
            "好的。",
            "---",
        ),
        (
            "收到。\n\n发件人：Anna Lee\n发送时间：2026年11月20日 10:00\n收件人：张喆\n主题：报价",
            "收到。",
            "发件人",
        ),
        (
            "Ja, gerne.\n\nAm 19.11.2026 um 10:02 schrieb Anna Lee <anna@loudou.example>:\n> Hallo",
            "Ja, gerne.",
            "Am 19",
        ),
        ("Great, thanks!\n\n> Can we meet?\n> Anna", "Great, thanks!", "> Can"),
    ],
)
def test_split_quote_recognises_client_markers(text: str, reply: str, quote_start: str) -> None:
    new, quoted = split_quote(text)

    assert new == reply
    assert quoted is not None and quoted.startswith(quote_start)


def test_split_quote_keeps_inline_answers_between_quoted_lines() -> None:
    new, quoted = split_quote("> Price for 20 units?\nAbout 40k.\n> Delivery?\nQ1.")

    assert new == "About 40k.\nQ1."
    assert quoted == "> Price for 20 units?\n> Delivery?"


@pytest.mark.parametrize(
    "text",
    [
        "On Monday we could meet.\nWould that work?",
        "Fine.\n\nOn reflection, I wrote:\nthe numbers were off.",
        "他在信中写道：\n这个价格可以接受。",
    ],
)
def test_split_quote_leaves_plain_text_alone(text: str) -> None:
    assert split_quote(text) == (text, None)


@pytest.mark.parametrize(
    ("text", "reply", "signature"),
    [
        (
            "Please call me.\n\n-- \nJohn Smith\nAcme Robotics Ltd",
            "Please call me.",
            "John Smith\nAcme Robotics Ltd",
        ),
        ("Please call me.\n\nRegards,\nJohn", "Please call me.", "Regards,\nJohn"),
        ("请报价。\n\n谢谢\n张喆", "请报价。", "谢谢\n张喆"),
        ("See you then.\n\nSent from my iPhone", "See you then.", "Sent from my iPhone"),
        (
            "Thanks for the quick reply.\nCan you do Friday?",
            "Thanks for the quick reply.\nCan you do Friday?",
            None,
        ),
        ("Looks good.\n\nThanks!", "Looks good.\n\nThanks!", None),
        ("Can we talk tomorrow?\n\nThanks, John", "Can we talk tomorrow?", "Thanks, John"),
        ("Ok.\n\nThanks, that helps", "Ok.\n\nThanks, that helps", None),
        ("好的，明天见。\n\n谢谢，张喆", "好的，明天见。", "谢谢，张喆"),
    ],
)
def test_split_signature(text: str, reply: str, signature: str | None) -> None:
    assert split_signature(text) == (reply, signature)


def test_html_to_text_blocks_entities_and_blockquotes() -> None:
    html = "<p>Hi&nbsp;there,<br>line two</p><script>x()</script><blockquote><p>old</p></blockquote>"
    assert html_to_text(html) == "Hi there,\nline two\n\n> old"


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_truncated_or_mangled_mime_never_raises_anything_but_parse_error(name: str) -> None:
    raw = _eml(name)
    variants = [raw[:cut] for cut in range(0, len(raw), max(1, len(raw) // 40))]
    variants += [raw.replace(b"=\n", b"=\r"), raw.replace(b"charset", b"charzet"), raw.replace(b"<", b"")]
    for variant in variants:
        try:
            email = parse_mime(variant, default_region="US")
        except EmailParseError:
            continue
        assert isinstance(email.reply_text, str)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_crlf_and_lf_line_endings_parse_alike(name: str) -> None:
    lf = parse_mime(_eml(name), default_region="US")
    crlf = parse_mime(_eml(name).replace(b"\n", b"\r\n"), default_region="US")

    assert (crlf.text, crlf.reply_text, crlf.signature, crlf.quoted_text, crlf.phone, crlf.company) == (
        lf.text,
        lf.reply_text,
        lf.signature,
        lf.quoted_text,
        lf.phone,
        lf.company,
    )

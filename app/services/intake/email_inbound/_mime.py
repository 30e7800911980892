"""Shared assembly of InboundEmail from header/body pieces, and parsing of raw MIME (RFC 5322) messages."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from app.services.intake.email_inbound._model import EmailAttachment, EmailParseError, InboundEmail
from app.services.intake.email_inbound._text import (
    _tidy,
    bound_text,
    extract_company,
    extract_phone,
    html_to_text,
    split_quote,
    split_signature,
)

# Headers intake needs: threading, dedupe, reply routing, spam/authentication verdicts, automation flags.
KEPT_HEADERS = frozenset(
    {
        "message-id",
        "in-reply-to",
        "references",
        "date",
        "reply-to",
        "return-path",
        "delivered-to",
        "x-spam-score",
        "x-spam-status",
        "x-spam-flag",
        "received-spf",
        "authentication-results",
        "dkim",
        "x-mailgun-spf",
        "x-mailgun-dkim-check-result",
        "x-mailgun-sscore",
        "x-mailgun-sflag",
        "auto-submitted",
        "precedence",
        "list-id",
        "x-autoreply",
        "x-autorespond",
        "x-auto-response-suppress",
    }
)

# Declared charsets that real mail routinely exceeds: decode with the superset instead.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "chinese": "gb18030",
    "big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "utf-8",  # undeclared 8-bit text is nearly always UTF-8 today
    "ascii": "utf-8",
}
_ID = re.compile(r"<([^<>\s]+)>")
MAX_HTML_CHARS = 500_000  # HTML beyond this is not turned into text (the raw body is kept)
MAX_REFERENCES = 20  # threading looks at the newest References only
MAX_MULTIPARTS = 100
MAX_ATTACHMENTS = 100  # attachments listed per mail; a count field cannot make more


def decode_words(value: str | None) -> str | None:
    """A header value with RFC 2047 encoded words decoded and folding undone."""
    if value is None:
        return None
    value = re.sub(r"\r?\n[ \t]+", " ", value)
    if re.search("[\udc80-\udcff]", value):
        # Raw 8-bit header bytes arrive surrogate-escaped; they are UTF-8 in practice.
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" in value:
        # An undecodable word keeps the encoded form rather than losing the header.
        with contextlib.suppress(LookupError, UnicodeDecodeError, ValueError):
            value = str(make_header(decode_header(value)))
    return value.strip()


def addresses(value: str | None) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs of an address header; unparsable entries dropped."""
    value = decode_words(value)
    if not value:
        return []
    return [(name.strip(), addr.strip().lower()) for name, addr in getaddresses([value]) if "@" in addr]


def message_ids(value: str | None) -> list[str]:
    """Message ids in a Message-ID / In-Reply-To / References value, without angle brackets, in order."""
    if not value:
        return []
    found = _ID.findall(value)
    return found or [part for part in re.split(r"[\s,]+", value.strip()) if part]


def first_id(value: str | None) -> str | None:
    """The first message id in a header value, or None."""
    ids = message_ids(value)
    return ids[0] if ids else None


def parse_date(value: str | None) -> datetime | None:
    """An RFC 5322 date as aware UTC (naive dates are taken as UTC); None when unparsable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def kept_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The headers that matter, lower-case names; the first occurrence wins (the newest Received-SPF)."""
    kept: dict[str, str] = {}
    for name, value in pairs:
        key = name.strip().lower()
        if key in KEPT_HEADERS and key not in kept and value is not None:
            kept[key] = decode_words(str(value)) or ""
    return kept


def _mailbox_hash(recipients: Sequence[str]) -> str | None:
    for recipient in recipients:
        local = recipient.split("@", 1)[0]
        if "+" in local:
            return local.split("+", 1)[1] or None
    return None


def _is_automated(headers: dict[str, str], from_email: str | None, content_type: str | None) -> bool:
    """Auto-replies, bounces and bulk/list mail (RFC 3834 and the usual vendor headers)."""
    auto_submitted = headers.get("auto-submitted", "no").strip().lower()
    precedence = headers.get("precedence", "").strip().lower()
    local = (from_email or "").split("@", 1)[0]
    return (
        auto_submitted not in ("", "no")
        or precedence in ("bulk", "junk", "list", "auto_reply")
        or "list-id" in headers
        or "x-autoreply" in headers
        or "x-autorespond" in headers
        or headers.get("return-path", "").strip() == "<>"
        or (content_type or "").lower().startswith("multipart/report")
        or local in ("mailer-daemon", "postmaster")
    )


def build_email(
    *,
    provider: str,
    from_header: str | None,
    from_pair: tuple[str | None, str | None] | None = None,
    to: Sequence[str],
    cc: Sequence[str] = (),
    subject: str | None,
    text: str | None,
    html: str | None,
    headers: dict[str, str],
    attachments: Sequence[EmailAttachment] = (),
    envelope_to: Sequence[str] = (),
    mailbox_hash: str | None = None,
    stripped_reply: str | None = None,
    stripped_signature: str | None = None,
    content_type: str | None = None,
    provider_id: str | None = None,
    default_region: str | None,
) -> InboundEmail:
    """Assemble the normalised e-mail: split quote and signature, pull phone and company, read threading."""
    sender = addresses(from_header)
    from_name = (sender[0][0] or None) if sender else None
    from_email = sender[0][1] if sender else None
    if from_pair is not None:  # a provider's own parsed sender (Postmark FromFull) beats re-parsing
        from_name = (from_pair[0] or "").strip() or from_name
        from_email = (from_pair[1] or "").strip().lower() or from_email
    if text and text.strip():
        body = _tidy(bound_text(text))
    else:
        body = bound_text(html_to_text(html[:MAX_HTML_CHARS])) if html else ""
    own_reply, quoted = split_quote(body)
    if stripped_reply is not None and stripped_reply.strip():
        own_reply = _tidy(stripped_reply)  # the provider's own stripping comes first (integrations §2.2)
    reply_text: str
    signature: str | None
    if stripped_signature and stripped_signature.strip():
        reply_text, signature = own_reply, _tidy(stripped_signature)
    else:
        reply_text, signature = split_signature(own_reply)
    company, company_source = extract_company(signature, from_name=from_name, from_email=from_email)
    in_reply_to = message_ids(headers.get("in-reply-to"))
    message_id = message_ids(headers.get("message-id"))
    recipients = [addr for addr in envelope_to if addr]
    return InboundEmail(
        provider=provider,
        from_name=from_name,
        from_email=from_email,
        to=list(to),
        subject=decode_words(subject) or None,
        text=body,
        reply_text=reply_text,
        quoted_text=quoted,
        signature=signature,
        phone=extract_phone([signature, reply_text], default_region=default_region),
        company=company,
        message_id=message_id[0] if message_id else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=message_ids(headers.get("references"))[-MAX_REFERENCES:],
        date=parse_date(headers.get("date")),
        headers=headers,
        attachments=list(attachments[:MAX_ATTACHMENTS]),
        cc=list(cc),
        envelope_to=recipients,
        mailbox_hash=mailbox_hash or _mailbox_hash([*recipients, *to]),
        html=html or None,
        company_source=company_source,
        is_automated=_is_automated(headers, from_email, content_type),
        provider_id=provider_id,
    )


# --- raw MIME ---------------------------------------------------------------------------------


def decode_part(part: Message) -> str:
    """A text part's content as str, per its declared charset, tolerant of wrong declarations."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload() or "")
    declared = (part.get_content_charset() or "us-ascii").lower()
    charset = _CHARSET_ALIASES.get(declared, declared)
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _header(msg: Message, name: str) -> str | None:
    """A header's decoded value, read raw so a malformed header degrades instead of raising."""
    raw = next((value for key, value in msg.raw_items() if key.lower() == name), None)
    return decode_words(raw)


def _attachments(msg: Message, skip: Sequence[Message]) -> list[EmailAttachment]:
    found: list[EmailAttachment] = []
    for part in msg.walk():
        if len(found) >= MAX_ATTACHMENTS:
            break
        if part.is_multipart() or any(part is s for s in skip):
            continue
        filename = decode_words(part.get_filename())
        if (
            part.get_content_disposition() == "attachment"
            or filename
            or part.get_content_maintype() not in ("text", "message")
        ):
            payload = part.get_payload(decode=True)
            found.append(
                EmailAttachment(
                    filename=filename,
                    content_type=part.get_content_type(),
                    size=len(payload) if isinstance(payload, bytes) else 0,
                    content_id=first_id(part.get("content-id")),
                )
            )
    return found


def message_from_bytes(raw: bytes) -> EmailMessage:
    """Parse bytes as an RFC 5322 message; EmailParseError when there is no message header at all."""
    if not raw or not raw.strip():
        raise EmailParseError("empty message")
    if raw.lower().count(b"boundary=") > MAX_MULTIPARTS:
        # The stdlib parser recurses once per nested multipart; real mail has a handful.
        raise EmailParseError(f"more than {MAX_MULTIPARTS} multipart containers")
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    if not isinstance(msg, EmailMessage):  # pragma: no cover - policy.default always builds EmailMessage
        raise EmailParseError("not an e-mail message")
    present = {key.lower() for key, _ in msg.raw_items()}
    if not present & {"from", "to", "subject", "message-id", "date", "sender"}:
        raise EmailParseError("no From, To, Subject, Message-ID or Date header: not an RFC 5322 message")
    return msg


def email_from_message(
    msg: EmailMessage,
    *,
    provider: str,
    envelope_to: Sequence[str] = (),
    extra_headers: dict[str, str] | None = None,
    default_region: str | None,
) -> InboundEmail:
    """The normalised e-mail of a parsed MIME message."""
    try:
        body_part = msg.get_body(preferencelist=("plain", "html"))
        html_part = msg.get_body(preferencelist=("html",))
    except (KeyError, ValueError, LookupError):
        body_part = html_part = None
    text: str | None = None
    if body_part is not None and body_part.get_content_subtype() != "html":
        text = decode_part(body_part)
    html = decode_part(html_part) if html_part is not None else None
    headers = kept_headers((k, v) for k, v in msg.raw_items())
    headers.update(extra_headers or {})
    return build_email(
        provider=provider,
        from_header=_header(msg, "from") or _header(msg, "sender"),
        to=[addr for _, addr in addresses(_header(msg, "to"))],
        cc=[addr for _, addr in addresses(_header(msg, "cc"))],
        subject=_header(msg, "subject"),
        text=text,
        html=html,
        headers=headers,
        attachments=_attachments(msg, [p for p in (body_part, html_part) if p is not None]),
        envelope_to=envelope_to,
        content_type=msg.get_content_type(),
        default_region=default_region,
    )


def parse_mime(raw: bytes, *, default_region: str | None = None) -> InboundEmail:
    """Parse a raw RFC 5322 (message/rfc822) e-mail."""
    msg = message_from_bytes(raw)
    delivered = [addr for _, addr in addresses(_header(msg, "delivered-to"))]
    return email_from_message(msg, provider="mime", envelope_to=delivered, default_region=default_region)

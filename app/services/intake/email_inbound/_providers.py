"""Provider payloads (SendGrid Inbound Parse, Mailgun routes, Postmark inbound) to InboundEmail."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from email import policy
from email.parser import Parser
from typing import Any

from app.services.intake.email_inbound._mime import (
    MAX_ATTACHMENTS,
    addresses,
    build_email,
    decode_words,
    email_from_message,
    first_id,
    kept_headers,
    message_from_bytes,
)
from app.services.intake.email_inbound._model import EmailAttachment, EmailParseError, InboundEmail


def _json(value: str | None) -> Any:
    """A JSON-encoded form field, or None when absent or broken (a broken extra never rejects a mail)."""
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _raw_bytes(value: str) -> bytes:
    # The endpoint hands the MIME over as text; surrogateescape keeps bytes it could not decode.
    return value.encode("utf-8", "surrogateescape")


def _count(value: object) -> int:
    """An attachment count field, capped: a posted "9999999999" must not build that many objects."""
    text = str(value or "0").strip()
    return min(int(text), MAX_ATTACHMENTS) if text.isdigit() and len(text) <= 9 else 0


def _int(value: object) -> int:
    """A size field of any type as a non-negative int (0 when it is not a plain number)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    text = str(value).strip() if isinstance(value, str) else ""
    return int(text) if text.isdigit() and len(text) <= 18 else 0


def _str(value: object) -> str | None:
    """A field that should be text: None when absent or of another type (a hostile Postmark post)."""
    return value if isinstance(value, str) else None


def _addrs(value: str | None) -> list[str]:
    return [addr for _, addr in addresses(value)]


# --- SendGrid -------------------------------------------------------------------------------


def _sendgrid_extras(form: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """SMTP recipients from `envelope`, and the spam/SPF/DKIM verdicts SendGrid posts as fields."""
    envelope = _json(form.get("envelope"))
    to = envelope.get("to") if isinstance(envelope, dict) else None
    recipients = [str(a).strip().lower() for a in (to if isinstance(to, list) else [to] if to else [])]
    verdicts = {"x-spam-score": "spam_score", "spf": "SPF", "dkim": "dkim"}
    extra = {key: form[field] for key, field in verdicts.items() if form.get(field)}
    return recipients, extra


def _sendgrid_attachments(form: Mapping[str, str]) -> list[EmailAttachment]:
    info = _json(form.get("attachment-info"))
    if not isinstance(info, dict):
        n = _count(form.get("attachments"))
        return [EmailAttachment(None, "application/octet-stream", 0) for _ in range(n)]
    found = []
    keys = list(info)[:MAX_ATTACHMENTS]
    for key in sorted(keys, key=lambda k: int(re.sub(r"\D", "", k)[:9] or 0)):
        item = info[key] if isinstance(info[key], dict) else {}
        found.append(
            EmailAttachment(
                filename=item.get("filename") or item.get("name"),
                content_type=item.get("type") or "application/octet-stream",
                size=0,  # attachment-info carries no size; the endpoint has the file part
                content_id=item.get("content-id"),
            )
        )
    return found


def parse_sendgrid(
    form: Mapping[str, str],
    *,
    default_region: str | None = None,
    attachments: Sequence[EmailAttachment] | None = None,
) -> InboundEmail:
    """Parse a SendGrid Inbound Parse post, raw mode (`email` holds the MIME) or parsed-fields mode."""
    recipients, extra = _sendgrid_extras(form)
    if form.get("email"):
        msg = message_from_bytes(_raw_bytes(form["email"]))
        return email_from_message(
            msg,
            provider="sendgrid",
            envelope_to=recipients,
            extra_headers=extra,
            default_region=default_region,
        )
    if not form.get("from"):
        raise EmailParseError(
            "neither `email` (raw mode) nor `from` (parsed mode): not a SendGrid Inbound Parse post"
        )
    header_block = Parser(policy=policy.compat32).parsestr(form.get("headers", "") + "\n\n", headersonly=True)
    headers = kept_headers(header_block.items())
    headers.update(extra)
    return build_email(
        provider="sendgrid",
        from_header=form["from"],
        to=_addrs(form.get("to")),
        cc=_addrs(form.get("cc")),
        subject=form.get("subject"),
        text=form.get("text"),
        html=form.get("html"),
        headers=headers,
        attachments=_sendgrid_attachments(form) if attachments is None else attachments,
        envelope_to=recipients,
        default_region=default_region,
    )


# --- Mailgun --------------------------------------------------------------------------------


def _mailgun_headers(form: Mapping[str, str]) -> list[tuple[str, str]]:
    """`message-headers` pairs in order; else the individual header fields Mailgun also posts."""
    pairs = _json(form.get("message-headers"))
    if isinstance(pairs, list):
        return [(str(p[0]), str(p[1])) for p in pairs if isinstance(p, list | tuple) and len(p) == 2]
    return [(key, value) for key, value in form.items() if key[:1].isupper()]


def _mailgun_attachments(form: Mapping[str, str]) -> list[EmailAttachment]:
    n = _count(form.get("attachment-count"))
    cid_map = _json(form.get("content-id-map"))
    cids = {v: k for k, v in cid_map.items()} if isinstance(cid_map, dict) else {}
    return [
        EmailAttachment(None, "application/octet-stream", 0, first_id(cids.get(f"attachment-{i}")))
        for i in range(1, n + 1)
    ]


def parse_mailgun(
    form: Mapping[str, str],
    *,
    default_region: str | None = None,
    attachments: Sequence[EmailAttachment] | None = None,
) -> InboundEmail:
    """Parse a Mailgun route forward() post: parsed fields, or raw mode (`body-mime`)."""
    recipients = _addrs(form.get("recipient"))
    if form.get("body-mime"):
        msg = message_from_bytes(_raw_bytes(form["body-mime"]))
        return email_from_message(
            msg, provider="mailgun", envelope_to=recipients, default_region=default_region
        )
    if not (form.get("from") or form.get("sender")):
        raise EmailParseError("no `from`, `sender` or `body-mime` field: not a Mailgun route post")
    pairs = _mailgun_headers(form)
    header = {name.lower(): value for name, value in reversed(pairs)}  # first occurrence wins
    return build_email(
        provider="mailgun",
        from_header=form.get("from") or form.get("sender"),
        to=_addrs(header.get("to") or form.get("To")) or recipients,
        cc=_addrs(header.get("cc") or form.get("Cc")),
        subject=form.get("subject") or header.get("subject"),
        text=form.get("body-plain"),
        html=form.get("body-html"),
        headers=kept_headers(pairs),
        attachments=_mailgun_attachments(form) if attachments is None else attachments,
        envelope_to=recipients,
        stripped_reply=form.get("stripped-text"),
        stripped_signature=form.get("stripped-signature"),
        content_type=decode_words(header.get("content-type")),
        default_region=default_region,
    )


# --- Postmark -------------------------------------------------------------------------------


def _full(entries: Any) -> list[str]:
    """Addresses of a Postmark *Full list ([{Email, Name, MailboxHash}])."""
    if not isinstance(entries, list):
        return []
    return [str(e["Email"]).strip().lower() for e in entries if isinstance(e, dict) and e.get("Email")]


def parse_postmark(payload: Mapping[str, Any], *, default_region: str | None = None) -> InboundEmail:
    """Parse a Postmark inbound webhook JSON body; a field of the wrong type counts as absent."""
    if not isinstance(payload, Mapping):
        raise EmailParseError("not a JSON object: not a Postmark inbound payload")
    raw_from = payload.get("FromFull")
    from_full: dict[str, Any] = raw_from if isinstance(raw_from, dict) else {}
    if not (_str(payload.get("From")) or _str(from_full.get("Email"))):
        raise EmailParseError("no `From` or `FromFull`: not a Postmark inbound payload")
    raw_headers = payload.get("Headers")
    pairs = [
        (str(h.get("Name", "")), str(h.get("Value", "")))
        for h in (raw_headers[:500] if isinstance(raw_headers, list) else [])
        if isinstance(h, dict)
    ]
    headers = kept_headers(pairs)
    if "date" not in headers and _str(payload.get("Date")):
        headers["date"] = str(payload["Date"])
    raw_attachments = payload.get("Attachments")
    attachments = [
        EmailAttachment(
            filename=_str(a.get("Name")),
            content_type=_str(a.get("ContentType")) or "application/octet-stream",
            size=_int(a.get("ContentLength")),
            content_id=first_id(_str(a.get("ContentID"))),
        )
        for a in (raw_attachments[:MAX_ATTACHMENTS] if isinstance(raw_attachments, list) else [])
        if isinstance(a, dict)
    ]
    original = _str(payload.get("OriginalRecipient"))
    return build_email(
        provider="postmark",
        from_header=_str(payload.get("From")),
        from_pair=(_str(from_full.get("Name")), _str(from_full.get("Email"))) if from_full else None,
        to=_full(payload.get("ToFull")) or _addrs(_str(payload.get("To"))),
        cc=_full(payload.get("CcFull")) or _addrs(_str(payload.get("Cc"))),
        subject=_str(payload.get("Subject")),
        text=_str(payload.get("TextBody")),
        html=_str(payload.get("HtmlBody")),
        headers=headers,
        attachments=attachments,
        envelope_to=[original.strip().lower()] if original else [],
        mailbox_hash=_str(payload.get("MailboxHash")) or None,
        stripped_reply=_str(payload.get("StrippedTextReply")),
        provider_id=_str(payload.get("MessageID")) or None,
        default_region=default_region,
    )

"""The normalised shape every inbound-email provider is parsed into, and the errors the parsers raise."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class EmailAttachment:
    """Metadata of one attachment; the content itself stays with the endpoint (or is never read)."""

    filename: str | None
    content_type: str
    size: int  # bytes; 0 when the provider does not tell (SendGrid parsed mode, Mailgun without files)
    content_id: str | None = None


@dataclass(frozen=True)
class InboundEmail:
    """One inbound e-mail, whatever provider delivered it."""

    provider: str  # "sendgrid" | "mailgun" | "postmark" | "mime"
    from_name: str | None
    from_email: str | None  # lower-cased address
    to: list[str]
    subject: str | None
    text: str  # the full plain-text body (from HTML, tags stripped, when only HTML exists)
    reply_text: str  # the new text only: quoted reply and signature removed
    quoted_text: str | None  # the quoted part that was removed
    signature: str | None  # the signature block that was removed
    phone: str | None  # E.164, from the signature (else the reply text)
    company: str | None  # see company_source
    message_id: str | None  # RFC 5322 Message-ID without angle brackets
    in_reply_to: str | None  # without angle brackets
    references: list[str]  # ids without angle brackets, in order
    date: datetime | None  # timezone-aware UTC
    headers: dict[str, str]  # lower-case names: the headers that matter for routing, dedupe and spam
    attachments: list[EmailAttachment]
    # Additions beyond the agreed interface:
    cc: list[str]
    envelope_to: list[
        str
    ]  # SMTP recipients: SendGrid envelope, Mailgun recipient, Postmark OriginalRecipient
    mailbox_hash: str | None  # the "+tag" of the recipient (Postmark gives it; others derived from envelope)
    html: str | None  # the HTML body as received, when there was one
    company_source: str | None  # "signature" | "domain": how sure the company guess is
    provider_id: str | None  # the provider's own id (Postmark MessageID), for dedupe next to message_id
    is_automated: bool  # auto-reply, bounce or bulk/list mail (RFC 3834 Auto-Submitted, Precedence, List-Id…)

    def thread_ids(self) -> list[str]:
        """Ids to look up for threading: In-Reply-To first, then References newest first."""
        ids: dict[str, None] = {}
        for ref in [self.in_reply_to, *reversed(self.references)]:
            if ref:
                ids.setdefault(ref)
        return list(ids)


class EmailParseError(ValueError):
    """The payload is not an e-mail in that provider's format (the message says why)."""


class EmailSignatureError(ValueError):
    """A provider signature is wrong, stale, from the future or malformed (the message says which)."""

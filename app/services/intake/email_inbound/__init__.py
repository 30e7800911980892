"""Inbound e-mail from SendGrid, Mailgun, Postmark or raw MIME, parsed into one InboundEmail.

The intake endpoint verifies the provider (verify_mailgun_signature / check_basic_auth), calls the
parser for its source's provider, and routes the result: thread_ids() against stored Message-IDs
first, else a new lead from from_name/from_email/subject/reply_text/phone/company.
"""

from app.services.intake.email_inbound._mime import parse_mime
from app.services.intake.email_inbound._model import (
    EmailAttachment,
    EmailParseError,
    EmailSignatureError,
    InboundEmail,
)
from app.services.intake.email_inbound._providers import parse_mailgun, parse_postmark, parse_sendgrid
from app.services.intake.email_inbound._security import check_basic_auth, verify_mailgun_signature
from app.services.intake.email_inbound._text import html_to_text, split_quote, split_signature

__all__ = [
    "EmailAttachment",
    "EmailParseError",
    "EmailSignatureError",
    "InboundEmail",
    "check_basic_auth",
    "html_to_text",
    "parse_mailgun",
    "parse_mime",
    "parse_postmark",
    "parse_sendgrid",
    "split_quote",
    "split_signature",
    "verify_mailgun_signature",
]

"""Lead input: normalised emails and phones, and mapping of a flat payload onto lead fields.

Pure functions, no database: used by the API, every intake endpoint, replay and CSV import.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from app.errors import FieldError
from app.models.lead import LeadSource

TEXT_FIELDS = ("name", "email", "phone", "company", "title", "country", "industry", "message")

# Case- and separator-insensitive aliases for common keys (Zapier/Make style generic payloads).
ALIASES: dict[str, str] = {
    "email": "email",
    "emailaddress": "email",
    "mail": "email",
    "youremail": "email",
    "phone": "phone",
    "phonenumber": "phone",
    "tel": "phone",
    "telephone": "phone",
    "mobile": "phone",
    "yourphone": "phone",
    "name": "name",
    "fullname": "name",
    "yourname": "name",
    "firstname": "first_name",
    "fname": "first_name",
    "givenname": "first_name",
    "lastname": "last_name",
    "lname": "last_name",
    "surname": "last_name",
    "familyname": "last_name",
    "company": "company",
    "companyname": "company",
    "organization": "company",
    "organisation": "company",
    "title": "title",
    "jobtitle": "title",
    "country": "country",
    "countrycode": "country",
    "industry": "industry",
    "message": "message",
    "comments": "message",
    "comment": "message",
    "yourmessage": "message",
    "tags": "tags",
}
CONTEXT_KEYS = {
    "pageurl": "page_url",
    "pageuri": "page_url",
    "page": "page_url",
    "referrer": "referrer",
    "referer": "referrer",
    "gclid": "gclid",
    "fbclid": "fbclid",
}


def _squash(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


@dataclass
class LeadInput:
    """A lead as it arrived, before normalisation and dedupe."""

    source: LeadSource
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    title: str | None = None
    country: str | None = None
    industry: str | None = None
    message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    source_id: uuid.UUID | None = None
    source_detail: dict[str, Any] = field(default_factory=dict)
    owner_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    # The phone as sent when it is not a valid number (then `phone` is None; see phone_note).
    phone_raw: str | None = None

    def values(self) -> dict[str, Any]:
        """The text fields that are set (and the raw phone, when the phone was not valid)."""
        names = (*TEXT_FIELDS, "phone_raw")
        return {name: getattr(self, name) for name in names if getattr(self, name) not in (None, "")}


# An address every rule of `validate_email` accepts as it is (lower-cased): dot-atoms of letters,
# digits, "_", "+" and "-" before the @; letter-or-digit labels (inner hyphens, never "--", which
# IDNA reserves) and a letters-only top-level label after it. Most form posts are such addresses,
# and the regular expression costs a tenth of `validate_email` (~4 % of a full-form post's CPU).
# Anything else, and anything too long, goes to `validate_email`;
# tests/services/leads/test_normalise.py holds the two to the same answers.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@(?:(?!-)(?!.?.?--)[a-z0-9-]{1,63}(?<!-)\.)+[a-z]{2,63}"
)
_LOCAL_MAX, _ADDRESS_MAX = 64, 254  # RFC 5321's lengths, as `validate_email` checks them


def _plain_email(text: str) -> str | None:
    """`text` lower-cased when it is a plain address `validate_email` accepts unchanged."""
    if not text.isascii():  # lower() makes ASCII of some other letters (the Kelvin sign's "k")
        return None
    address = text.lower()
    if len(address) > _ADDRESS_MAX or not _PLAIN_EMAIL.fullmatch(address):
        return None
    local, _, domain = address.partition("@")
    if len(local) > _LOCAL_MAX:
        return None
    if any(domain == name or domain.endswith("." + name) for name in SPECIAL_USE_DOMAIN_NAMES):
        return None
    return address


def normalise_email(raw: str) -> str:
    """Lower-cased, syntax-checked address (no DNS lookups); ValueError when it is not one."""
    text = raw.strip()
    plain = _plain_email(text)
    if plain is not None:
        return plain
    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


# A value with at least this many digits may be a number we cannot check (kept in phone_raw,
# and enough to call back); anything shorter is not a phone at all (422, as before).
RAW_PHONE_MIN_DIGITS = 5


def normalise_phone(raw: str, regions: list[str | None]) -> str:
    """E.164 of the first reading that `phonenumbers.is_valid_number` accepts, national numbers
    read in each of `regions` in order (an international "+…" number needs none); ValueError
    when no reading is a valid number, so nothing merely *possible* is ever stored."""
    text = raw.strip()
    for region in [*dict.fromkeys(r for r in regions if r), None]:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    tried = ", ".join(dict.fromkeys(r for r in regions if r)) or "no country"
    raise ValueError(f"{text!r} is not a valid phone number (read as a number of: {tried})")


def normalise(data: LeadInput, *, default_regions: list[str | None]) -> list[FieldError]:
    """Normalise in place (trim, email, E.164 phone, country code); return the field errors.

    A phone that is not a valid number moves to `phone_raw` (an error when it has too few digits
    to be a phone at all)."""
    errors: list[FieldError] = []
    for name in TEXT_FIELDS:
        value = getattr(data, name)
        if isinstance(value, str):
            value = value.strip() or None
            setattr(data, name, value)
    if data.country:
        country = data.country.upper()
        if re.fullmatch(r"[A-Z]{2}", country):
            data.country = country
        else:
            data.attributes.setdefault("country_name", data.country)
            data.country = None
    if data.email:
        try:
            data.email = normalise_email(data.email)
        except ValueError as exc:
            errors.append(FieldError(field="email", code="invalid_email", message=str(exc)))
    if data.phone:
        try:
            data.phone, data.phone_raw = normalise_phone(data.phone, [data.country, *default_regions]), None
        except ValueError as exc:
            if sum(ch.isdigit() for ch in data.phone) >= RAW_PHONE_MIN_DIGITS:
                data.phone, data.phone_raw = None, data.phone  # phone_note() says why
            else:
                errors.append(FieldError(field="phone", code="invalid_phone", message=str(exc)))
    if (
        not data.email
        and not data.phone
        and not data.phone_raw
        and not any(e.field in ("email", "phone") for e in errors)
    ):
        errors.append(
            FieldError(field="email", code="missing_contact", message="an email or a phone is required")
        )
    return errors


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        parts = [str(v) for v in value if v not in (None, "")]
        return ", ".join(parts) if parts else None
    return str(value)


def _lookup(payload: dict[str, Any], path: str) -> tuple[bool, Any]:
    if path in payload:
        return True, payload[path]
    node: Any = payload
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def map_payload(
    payload: dict[str, Any],
    *,
    mapping: dict[str, str],
    source: LeadSource,
    honeypot_field: str | None = None,
) -> tuple[LeadInput, bool]:
    """Map a payload onto lead fields: the source's mapping first (dotted paths reach into
    nested JSON), then common aliases; utm_* and page context go to `source_detail`, anything
    else to `attributes`. Returns the input and whether the honeypot was filled."""
    data = LeadInput(source=source)
    used: set[str] = set()
    first_last: dict[str, str] = {}
    spam = False
    if honeypot_field:
        found, value = _lookup(payload, honeypot_field)
        used.add(honeypot_field)
        spam = found and bool(_text(value) and str(_text(value)).strip())

    def assign(target: str, value: Any) -> None:
        if target == "ignore":
            return
        if target.startswith("attributes."):
            data.attributes[target.removeprefix("attributes.")] = value
        elif target == "tags":
            items = value if isinstance(value, list) else str(value).split(",")
            data.tags.extend(t.strip() for t in map(str, items) if t.strip())
        elif target in ("first_name", "last_name"):
            text_value = _text(value)
            if text_value:
                first_last[target] = text_value
        elif getattr(data, target) in (None, ""):
            setattr(data, target, _text(value))

    for source_field, target in mapping.items():
        found, value = _lookup(payload, source_field)
        if found:
            used.add(source_field.split(".")[0] if source_field not in payload else source_field)
            assign(target, value)
    utm: dict[str, Any] = {}
    context: dict[str, Any] = {}
    for key, value in payload.items():
        if key in used:
            continue
        squashed = _squash(key)
        if key.lower().startswith("utm_"):
            utm[key.lower()] = _text(value)
        elif squashed in CONTEXT_KEYS:
            context[CONTEXT_KEYS[squashed]] = _text(value)
        elif squashed in ALIASES and ALIASES[squashed] not in mapping.values():
            assign(ALIASES[squashed], value)
        else:
            data.attributes[key] = value
    if not data.name and first_last:
        data.name = " ".join(v for k, v in sorted(first_last.items()) if v)
    if utm:
        data.source_detail["utm"] = utm
    data.source_detail.update(context)
    return data, spam

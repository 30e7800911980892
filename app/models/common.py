"""Small shared types: codes, timezones, roles."""

from __future__ import annotations

import enum
import zoneinfo
from datetime import date
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, StringConstraints

from app.models.durations import parse_duration


def _valid_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {value!r}") from exc
    return value


def normalise_email(value: str) -> str:
    """Syntax-checked, lower-cased address; no DNS look-ups; `.test`-style domains allowed."""
    try:
        return validate_email(value, check_deliverability=False, test_environment=True).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


def _duration(value: str) -> str:
    parse_duration(value)
    return value.strip().upper()


FIRST_BUSINESS_DATE = date(1900, 1, 1)
LAST_BUSINESS_DATE = date(2999, 12, 31)


def _business_date(value: date) -> date:
    if not FIRST_BUSINESS_DATE <= value <= LAST_BUSINESS_DATE:
        raise ValueError(f"a date between {FIRST_BUSINESS_DATE} and {LAST_BUSINESS_DATE}")
    return value


# A date a business record can carry (date arithmetic around it stays within Python's range).
BusinessDate = Annotated[date, AfterValidator(_business_date)]
DurationText = Annotated[str, StringConstraints(max_length=40), AfterValidator(_duration)]
EmailAddress = Annotated[str, StringConstraints(max_length=320), AfterValidator(normalise_email)]
TimezoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_valid_timezone)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


class Role(enum.StrEnum):
    """What a user may do: admin everything; manager their team; rep their own; viewer read-only."""

    admin = "admin"
    manager = "manager"
    rep = "rep"
    viewer = "viewer"

"""Small shared types: codes, timezones, roles, and the bases of request bodies."""

from __future__ import annotations

import enum
import re
import zoneinfo
from datetime import date, datetime
from types import UnionType
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from sqlmodel import SQLModel

from app.errors import ValidationFailed
from app.models.durations import parse_duration


def _valid_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {value!r}") from exc
    return value


def iso_country(value: str) -> str:
    """An ISO 3166-1 alpha-2 country code (any case in, upper case out); ValueError otherwise."""
    code = value.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (such as CN, US, DE)")
    return code


def iso_currency(value: str) -> str:
    """An ISO 4217 currency code (any case in, upper case out); ValueError otherwise."""
    code = value.strip().upper()
    if len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code (such as CNY, USD, EUR)")
    return code


def iana_timezone(value: str) -> str:
    """An IANA timezone name such as Asia/Shanghai; ValueError otherwise."""
    return _valid_timezone(value.strip())


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


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
_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_text(value: object) -> object:
    """Dates and times come as ISO 8601 text, as the document says (`format: date` / `date-time`);
    pydantic would otherwise read a number as a Unix timestamp."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("an ISO 8601 date or date-time (text), not a number")
    return value


# Query parameters (and body fields) typed date / date-time: ISO 8601 text only.
IsoDate = Annotated[date, BeforeValidator(_iso_text)]
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_text)]
BusinessDate = Annotated[date, BeforeValidator(_iso_text), AfterValidator(_business_date)]
DurationText = Annotated[str, StringConstraints(max_length=40), AfterValidator(_duration)]
EmailAddress = Annotated[str, StringConstraints(max_length=320), AfterValidator(normalise_email)]
TimezoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_valid_timezone)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
# Checked against the ISO lists (pycountry), for the organisation's own settings.
IsoCountryCode = Annotated[
    str, BeforeValidator(_upper), StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(iso_country)
]
IsoCurrencyCode = Annotated[
    str, BeforeValidator(_upper), StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(iso_currency)
]


class Role(enum.StrEnum):
    """What a user may do: admin everything; manager their team; rep their own; viewer read-only."""

    admin = "admin"
    manager = "manager"
    rep = "rep"
    viewer = "viewer"


def _temporal(annotation: Any) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, date)
    return any(_temporal(arg) for arg in get_args(annotation))


def _leaves(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (Optional and Annotated unwrapped, None left out)."""
    if isinstance(annotation, type):
        return set() if annotation is type(None) else {annotation}
    if get_origin(annotation) is Annotated:
        return _leaves(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return set().union(*(_leaves(arg) for arg in get_args(annotation)))
    return {annotation}


def _json_type(field: FieldInfo, value: Any) -> Any:
    """What JSON type a value has, as the document says: pydantic would read `false` as the integer
    0, `1` as true and a number as a Unix timestamp."""
    if _temporal(field.annotation):
        return _iso_text(value)
    leaves = _leaves(field.annotation)
    if leaves == {bool} and value is not None and not isinstance(value, bool):
        raise ValueError("a JSON boolean (true or false)")
    if leaves == {int} and isinstance(value, bool):
        raise ValueError("a JSON integer, not a boolean")
    return value


class Input(SQLModel):
    """Base of every request body: an unknown field is a 422, never silently dropped; dates and
    times are ISO 8601 text, booleans and integers are what JSON calls them (see _json_type)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    @field_validator("*", mode="before")
    @classmethod
    def _json_types(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        return value if field is None else _json_type(field, value)


class Patch(Input):
    """Base of every PATCH body: every field optional, only what is sent changes. `not_null`
    names the fields that may be left out but not sent as null (their columns are NOT NULL)."""

    not_null: ClassVar[tuple[str, ...]] = ()

    def changes(self, *, exclude: set[str] | None = None) -> dict[str, Any]:
        """The fields sent (`model_dump(exclude_unset=True)`); 422 when a `not_null` one is null."""
        changes = self.model_dump(exclude_unset=True, exclude=exclude)
        self.refuse_nulls(changes)
        return changes

    @classmethod
    def refuse_nulls(cls, changes: dict[str, Any]) -> None:
        """422 naming the first `not_null` field that `changes` sets to null."""
        for name in cls.not_null:
            if name in changes and changes[name] is None:
                raise ValidationFailed.on(name, "null", f"{name} may not be null")

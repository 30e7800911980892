"""Small shared types: codes, timezones, roles, and the bases of request bodies."""

from __future__ import annotations

import enum
import zoneinfo
from typing import Annotated, Any, ClassVar

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, ConfigDict, StringConstraints
from sqlmodel import SQLModel

from app.errors import ValidationFailed
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


class Input(SQLModel):
    """Base of every request body: an unknown field is a 422, never silently dropped."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


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

"""Small shared types: codes, timezones, roles."""

from __future__ import annotations

import enum
import zoneinfo
from typing import Annotated

from pydantic import AfterValidator, StringConstraints


def _valid_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {value!r}") from exc
    return value


TimezoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_valid_timezone)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


class Role(enum.StrEnum):
    """What a user may do: admin everything; manager their team; rep their own; viewer read-only."""

    admin = "admin"
    manager = "manager"
    rep = "rep"
    viewer = "viewer"

"""ISO 8601 durations (`PT30M`, `P3D`, `P1DT12H`) for SLAs, cadences and recycling."""

from __future__ import annotations

from datetime import timedelta

from pydantic import TypeAdapter, ValidationError

# Pydantic already parses ISO 8601 durations; no need for another library.
_TIMEDELTA = TypeAdapter(timedelta)


def parse_duration(value: str) -> timedelta:
    """A positive timedelta from an ISO 8601 duration string."""
    if not isinstance(value, str) or not value.strip().upper().startswith("P"):
        raise ValueError(f"{value!r} is not an ISO 8601 duration like PT30M or P3D")
    try:
        parsed = _TIMEDELTA.validate_python(value.strip().upper())
    except ValidationError as exc:
        raise ValueError(f"{value!r} is not an ISO 8601 duration like PT30M or P3D") from exc
    if parsed <= timedelta(0):
        raise ValueError("the duration must be positive")
    return parsed

"""The CSV form of a metrics response: the same rows, one line per row or per item of its nested list."""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any


def flatten(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """CSV lines of JSON rows: scalars kept; a row's one list of objects becomes one line per item
    (its keys joined to the row's), or one line with those columns empty when the list is empty."""
    for row in rows:
        scalars = {k: v for k, v in row.items() if not isinstance(v, list)}
        nested = [(k, v) for k, v in row.items() if isinstance(v, list)]
        if not nested:
            yield scalars
            continue
        _, items = nested[0]
        if not items:
            yield scalars
            continue
        for item in items:
            yield {**scalars, **item}


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (columns in first-seen order; empty for null)."""
    lines = list(flatten(rows))
    columns: list[str] = []
    for line in lines:
        for key in line:
            if key not in columns:
                columns.append(key)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for line in lines:
        writer.writerow({k: _csv_value(line.get(k)) for k in columns})
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)

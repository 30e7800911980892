"""The cycle metric's percentile arithmetic equals PostgreSQL's percentile_cont bit for bit, and its
groups of days are the ones SQL labels."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

from sqlalchemy import text

from app.services.metrics.common import GroupBy
from app.services.metrics.durations import interpolate, ranks, sub_periods, whole_months
from app.state import AppState


def _by_hand(values: list[float], p: float) -> float:
    """percentile_cont written out: rank p·(N-1) in the sorted values, linear between neighbours."""
    s = sorted(values)
    pos = p * (len(s) - 1)
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if hi == lo:
        return s[lo]
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def _sets(rng: random.Random) -> list[list[float]]:
    sets: list[list[float]] = [[7.0], [1.0, 2.0], [5.0, 5.0, 5.0], [0.0, 0.0], [3.5, 1.25, 9.0, 1.25]]
    for n in range(1, 60):
        # whole seconds (many ties), microsecond durations of days, and mixed magnitudes
        sets.append([float(rng.randint(0, 5)) for _ in range(n)])
        sets.append([rng.randint(3600, 40 * 86400) + rng.randint(0, 999_999) / 1e6 for _ in range(n)])
        sets.append([rng.choice([0.000001, 1.5, 86400.25, 1e7 / 3]) * rng.randint(1, 3) for _ in range(n)])
    return sets


async def test_ranks_and_interpolation_equal_percentile_cont(state: AppState) -> None:
    rng = random.Random(11)  # noqa: S311 (reproducible test data)
    sets = _sets(rng)
    async with state.sessions() as session:
        for values in sets:
            pg = (
                await session.execute(
                    text(
                        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x), "
                        "percentile_cont(0.75) WITHIN GROUP (ORDER BY x) "
                        "FROM unnest(CAST(:v AS double precision[])) x"
                    ),
                    {"v": values},
                )
            ).one()
            ordered = sorted(values)
            for p, expected in zip((0.5, 0.75), pg, strict=True):
                first, second, proportion = ranks(len(values), p)
                got = (
                    ordered[first]
                    if first == second
                    else interpolate(ordered[first], ordered[second], proportion)
                )
                assert got == expected, (values, p)
                assert _by_hand(values, p) == expected, (values, p)


async def test_groups_of_days_are_labelled_as_sql_labels_them(state: AppState) -> None:
    start, end = date(2020, 12, 20), date(2023, 1, 10)  # ISO week 53 of 2020, leap day, year ends
    async with state.sessions() as session:
        for group_by, label in (
            (GroupBy.month, "to_char(d, 'YYYY-MM')"),
            (GroupBy.week, "to_char(date_trunc('week', d::timestamp), 'IYYY-\"W\"IW')"),
        ):
            rows = (
                await session.execute(
                    text(
                        f"SELECT {label}, min(d)::date, max(d)::date + 1 "
                        "FROM generate_series(CAST(:s AS date), CAST(:e AS date) - 1, interval '1 day') d "
                        "GROUP BY 1"
                    ),
                    {"s": start, "e": end},
                )
            ).all()
            assert sub_periods(start, end, group_by) == {r[0]: (r[1], r[2]) for r in rows}
    assert sub_periods(start, end, None) == {None: (start, end)}
    assert sub_periods(start, start + timedelta(days=1), GroupBy.week) == {
        "2020-W51": (start, date(2020, 12, 21))
    }


def test_whole_months_of_a_period() -> None:
    assert whole_months(date(2025, 11, 30), date(2026, 12, 1)) == (date(2025, 12, 1), date(2026, 12, 1))
    assert whole_months(date(2026, 1, 1), date(2026, 2, 1)) == (date(2026, 1, 1), date(2026, 2, 1))
    assert whole_months(date(2026, 1, 1), date(2026, 1, 31)) == (date(2026, 1, 31), date(2026, 1, 31))
    assert whole_months(date(2026, 1, 2), date(2026, 3, 1)) == (date(2026, 2, 1), date(2026, 3, 1))
    assert whole_months(date(2026, 12, 15), date(2027, 1, 20)) == (date(2027, 1, 20), date(2027, 1, 20))

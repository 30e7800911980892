"""The published definitions (DESIGN.md §7, version 1): one `Definition` per metric in `REGISTRY`.

Other domains append theirs (collections metrics do) with `register(...)`; `GET
/v1/metrics/definitions` publishes whatever the registry holds, with the common rules.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.services.metrics.common import DEFINITION_VERSION


class Definition(BaseModel):
    """One metric: what it counts, how, in which unit, and what it leaves out."""

    name: str
    endpoint: str
    formula: str = Field(description="In words")
    symbols: str = Field(description="In symbols")
    unit: str
    counts: str
    excludes: str
    group_by: list[str] = Field(default_factory=list)
    filters: list[str] = Field(default_factory=list)
    version: int = DEFINITION_VERSION


class Definitions(BaseModel):
    """GET /v1/metrics/definitions."""

    definition_version: int
    common_rules: list[str]
    metrics: list[Definition]


COMMON_RULES = [
    "from and to are local dates in the organisation's timezone; the period is half-open [from, to). "
    "Default: the year up to and including today (to = tomorrow, from = the same date a year earlier).",
    "A timestamp belongs to the local date it falls on in the organisation's timezone; "
    "'as of D' is the instant at the end of local day D.",
    "Filters: pipeline_id, owner_id (the current owner), team_id (the current owner's team), source (the "
    "deal's source lead's source, or the lead's), currency; each response echoes them with its "
    "definition_version.",
    "Rates are fractions rounded half-up to 4 decimals, null when the denominator is 0.",
    "Durations in days are seconds / 86,400 rounded half-up to 2 decimals; speed to lead is in minutes, 1 "
    "decimal.",
    "Medians and percentiles are continuous (linear interpolation, PostgreSQL percentile_cont).",
    "Money is a decimal string per currency; sums are exact and rounded to the currency's minor unit at the "
    "end. "
    "With convert_to=XXX each amount converts at the organisation's rate on or before the local date of the "
    "deal's "
    "close (open deals: the as-of date, or today); the rates used are listed in rates_used; a missing rate "
    "is a 422 "
    "naming the pair and the date.",
    "Visibility: a rep sees their own numbers, a manager their team's and their own, admins and viewers all.",
    "format=csv (or Accept: text/csv) returns the same rows: one line per row, or per item of a row's "
    "nested list.",
]

DEAL_FILTERS = ["from", "to", "pipeline_id", "owner_id", "team_id", "source", "currency", "convert_to"]
LEAD_FILTERS = ["from", "to", "owner_id", "team_id", "source"]

REGISTRY: list[Definition] = [
    Definition(
        name="funnel",
        endpoint="/v1/metrics/funnel",
        formula=(
            "Cohort of the deals created in the period in one pipeline (default: the default pipeline). "
            "Stages are the "
            "pipeline's open stages in order, then won. A deal reached a stage when its stage history "
            "contains that "
            "stage or any later open stage, or when it is won (a skipped stage counts as reached). "
            "conversion_from_previous "
            "= reached(s) / reached(previous stage); conversion_from_first = reached(s) / reached(first "
            "stage); "
            "drop_off = 1 - conversion_from_previous; lost_here = deals of the cohort now lost whose last "
            "open stage was s. "
            "The same by amount, per currency (Σ current amount of those deals)."
        ),
        symbols=(
            "reached(s) = |{d ∈ C : max_open_stage(d) ≥ s ∨ won(d)}|; reached(won) = |{d ∈ C : won(d)}|; "
            "cfp(s) = reached(s)/reached(s-1); cff(s) = reached(s)/reached(s1); drop_off(s) = 1 - cfp(s); "
            "lost_here(s) = |{d ∈ C : lost(d) ∧ last_open_stage(d) = s}|"
        ),
        unit="deals; fractions; money per currency",
        counts="deals created in [from, to) in the pipeline, matching the filters",
        excludes="deleted deals; stages deleted from the pipeline; deals of other pipelines",
        group_by=["owner", "team", "source", "month", "week"],
        filters=DEAL_FILTERS,
    ),
    Definition(
        name="pipeline",
        endpoint="/v1/metrics/pipeline",
        formula=(
            "Open deals now, or as of the end of local day as_of: deals created before the instant and not "
            "closed before "
            "it, each in the last stage it had entered by then, with the amount, currency and probability "
            "it had then "
            "(field history; the created value before any change). A deal lost before the instant and "
            "reopened after it "
            "counts as closed. count, amount, and weighted_amount = Σ amount × probability / 100 per stage."
        ),
        symbols="weighted_amount(s) = Σ_{d open at T in s} amount_T(d) × probability_T(d) / 100",
        unit="deals; money per currency",
        counts="deals open at the instant (the last stage entered before it is an open stage)",
        excludes="deals closed (won or lost) at the instant; deleted deals",
        group_by=["owner", "team", "source"],
        filters=["as_of", "pipeline_id", "owner_id", "team_id", "source", "currency", "convert_to"],
    ),
    Definition(
        name="pipeline_trend",
        endpoint="/v1/metrics/pipeline/trend",
        formula=(
            "The pipeline as of the last day of each day, week or month of [from, to), read from daily "
            "snapshots "
            "(per pipeline, stage, owner on that day and currency) where taken, else reconstructed as the "
            "pipeline "
            "metric does; both give the same numbers. owner_id and team_id select the owner on that day."
        ),
        symbols="trend(D) = pipeline as of D, for D = last day of each interval",
        unit="deals; money per currency",
        counts="as the pipeline metric",
        excludes="as the pipeline metric; with source the days are reconstructed; no convert_to",
        filters=["from", "to", "interval", "pipeline_id", "owner_id", "team_id", "source", "currency"],
    ),
    Definition(
        name="win_rate",
        endpoint="/v1/metrics/win-rate",
        formula=(
            "won / (won + lost) among deals whose current closed_at falls in the period (a reopened deal "
            "counts again "
            "only when it closes again, at its latest close). Won and lost amounts per currency."
        ),
        symbols="win_rate = |W| / (|W| + |L|), W, L = deals won, lost with closed_at ∈ [from, to)",
        unit="fraction",
        counts="deals closed in the period (current status won or lost)",
        excludes="open deals (including reopened ones)",
        group_by=["owner", "team", "source", "month", "week"],
        filters=DEAL_FILTERS,
    ),
    Definition(
        name="cycle",
        endpoint="/v1/metrics/cycle",
        formula=(
            "Sales cycle: days from created_at to closed_at of the deals won in the period: mean, median, "
            "p75. "
            "Time in stage: for each stage, the stays (entered -> next stage or close) that ended in the "
            "period: "
            "mean and median days; a stay still open does not count."
        ),
        symbols="cycle(d) = (closed_at - created_at) / 86400 s; stay = next.at - entered.at",
        unit="days",
        counts="won deals with closed_at in the period; stays whose end falls in the period",
        excludes="lost and open deals (cycle); open stays (time in stage)",
        group_by=["owner", "team", "source", "month", "week"],
        filters=DEAL_FILTERS,
    ),
    Definition(
        name="velocity",
        endpoint="/v1/metrics/velocity",
        formula=(
            "Per currency, per day: open deals as of the period's last day × win rate × mean won amount / "
            "mean sales "
            "cycle days, every factor computed on that currency's deals over the period, rounded only at "
            "the end."
        ),
        symbols="v = N_open(to - 1) × |W|/(|W|+|L|) × mean(amount | W) / mean(cycle days | W)",
        unit="money per currency per day",
        counts="deals of the currency (currency as of the last day for the open count)",
        excludes="convert_to (velocity is per currency)",
        group_by=["owner", "team", "source"],
        filters=["from", "to", "pipeline_id", "owner_id", "team_id", "source", "currency"],
    ),
    Definition(
        name="forecast",
        endpoint="/v1/metrics/forecast",
        formula=(
            "Open deals now by expected close month (YYYY-MM; 'none' without a date): count, amount, "
            "weighted amount, and "
            "amount by forecast category (a stage setting: pipeline | best_case | commit). Against targets: "
            "the won "
            "amount in the period and the targets whose periods lie within it (start ≥ from, end ≤ to); "
            "attainment = "
            "won / target. Targets are the owner's (owner_id), the team's (team_id: set, else the sum of "
            "its members'), "
            "or the organisation's (set, else the sum of every user's)."
        ),
        symbols="attainment = Σ won amount in [from, to) / Σ targets within [from, to)",
        unit="money per currency; fraction",
        counts="open deals now (rows); won deals in the period (attainment)",
        excludes="closed deals from the rows; targets reaching outside the period",
        filters=DEAL_FILTERS,
    ),
    Definition(
        name="lead_funnel",
        endpoint="/v1/metrics/lead-funnel",
        formula=(
            "Cohort of the leads created in the period: created -> contacted (first_contacted_at set) -> "
            "qualified "
            "(status qualified or converted) -> converted (converted to a deal) -> won (that deal is won). "
            "Counts, "
            "rates against created and against the previous step. Speed to lead = minutes from created to "
            "first "
            "contact among contacted leads: median and p90."
        ),
        symbols="rate_created(x) = |x|/|created|; rate_previous(x) = |x|/|previous step|",
        unit="leads; fractions; minutes",
        counts="leads created in [from, to)",
        excludes="merged duplicates (duplicate_of set) and deleted leads",
        group_by=["source", "intake_source", "owner", "team", "month", "week"],
        filters=LEAD_FILTERS,
    ),
    Definition(
        name="reps",
        endpoint="/v1/metrics/reps",
        formula=(
            "Per current owner: leads created in the period that they own, of which contacted and "
            "converted; deals won "
            "in the period, won amount per currency, win rate (won / (won + lost) of their deals closed in "
            "the period); "
            "target for the period (their targets lying within it) and attainment = won amount / target."
        ),
        symbols="attainment(u) = Σ won amount(u) / Σ targets(u)",
        unit="leads; deals; money per currency; fractions",
        counts="users visible to the caller who own something in the period or are active",
        excludes="merged duplicate and deleted leads",
        filters=DEAL_FILTERS,
    ),
]


def register(definition: Definition) -> None:
    """Publish another metric's definition (other domains' metrics join the same list)."""
    if any(d.name == definition.name for d in REGISTRY):
        raise ValueError(f"metric {definition.name!r} is already defined")
    REGISTRY.append(definition)


def definitions() -> Definitions:
    """Every published definition with the common rules."""
    return Definitions(
        definition_version=DEFINITION_VERSION, common_rules=COMMON_RULES, metrics=list(REGISTRY)
    )

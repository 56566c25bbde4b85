"""`/iwm rates`: the Fed's current stance, the yield curve, and IWM vs SPY after the first cut of each easing cycle.

Sources (FRED's keyless CSV download, through the documents cache; offline or when FRED fails, the bundled
files in services/data/, see SOURCES.md): `DFEDTARL`/`DFEDTARU` (the target range, daily from 2008-12-16),
`DFF` (the effective rate, daily), `DGS2`/`DGS10` (Treasury yields, business days), `FEDFUNDS` (monthly average,
the chart's long line). Returns are total returns from dividend-adjusted closes (`adj_close`) of IWM and SPY,
from the close of the decision day (`services.returns`: the last close on or before a day).

Decision dates. The target range series changes on the day a decision takes effect, which since 2008 is the day
after the FOMC decides (2019-07-31 -> 2019-08-01; the Sunday 2020-03-15 decision -> Monday 2020-03-16): the
decision day is the day before the change. Before the range starts (2008-12-16) the daily data cannot date a
decision, so the first cuts of 2001 (2001-01-03, an intermeeting cut, effective the same day) and 2007
(2007-09-18) come from the bundled list `fomc_first_cuts.csv` (from the Fed's press releases).

First-cut rule: a cut whose previous change of the target was a hike (the turn from tightening to easing).
A cut that resumes easing after a pause with no hike between is not a new cycle; it is listed separately as a
*resumption* (after at least PAUSE_MONTHS without a change) with its own returns, so the choice is visible. This
decides 2019-2020: the 2019-07-31 cut (called a "mid-cycle adjustment") starts the cycle; the 2020-03-03
emergency cut came after a four-month pause without a hike, so it is a resumption, as is 2025-09-17 (after nine
months on hold since 2024-12-18).

Stance: *easing* / *tightening* when the last change of the target (a cut / a hike) was decided within
STANCE_MONTHS of the latest target observation, else *on hold since* that decision.
"""

from __future__ import annotations

from services.rates._analysis import (
    CurveChange,
    CycleWindow,
    Decision,
    EasingCycle,
    Policy,
    RatesReport,
    WindowStats,
    YieldCurve,
    classify_cuts,
    compute_rates,
    cycle_windows,
    easing_cycle,
    known_by,
    listed_first_cuts,
    policy_on,
    target_decisions,
    window_stats,
    yield_curve,
)
from services.rates._answer import rates_answer, stance_text
from services.rates._chart import RatesChart, render_rates
from services.rates._fred import (
    BUNDLED_DAILY,
    BUNDLED_MONTHLY,
    CURVE_BACKGROUND,
    CURVE_MONTHS,
    DAILY,
    FRED_BASE_URL,
    LISTED_FIRST_CUTS,
    MONTHLY,
    PAUSE_MONTHS,
    RESUME_RULE,
    RULE,
    SMALL_N_WARNING,
    STANCE_MONTHS,
    STUDY_START,
    WINDOWS,
    FredSeries,
    fred_series,
    parse_fred_csv,
)

__all__ = [
    "BUNDLED_DAILY",
    "BUNDLED_MONTHLY",
    "CURVE_BACKGROUND",
    "CURVE_MONTHS",
    "DAILY",
    "FRED_BASE_URL",
    "LISTED_FIRST_CUTS",
    "MONTHLY",
    "PAUSE_MONTHS",
    "RESUME_RULE",
    "RULE",
    "SMALL_N_WARNING",
    "STANCE_MONTHS",
    "STUDY_START",
    "WINDOWS",
    "CurveChange",
    "CycleWindow",
    "Decision",
    "EasingCycle",
    "FredSeries",
    "Policy",
    "RatesChart",
    "RatesReport",
    "WindowStats",
    "YieldCurve",
    "classify_cuts",
    "compute_rates",
    "cycle_windows",
    "easing_cycle",
    "fred_series",
    "known_by",
    "listed_first_cuts",
    "parse_fred_csv",
    "policy_on",
    "rates_answer",
    "render_rates",
    "stance_text",
    "target_decisions",
    "window_stats",
    "yield_curve",
]

"""The stance, the first cuts, the cycles and the curve, from the series (see the package docstring)."""

from __future__ import annotations

import io
import itertools
import statistics
from dataclasses import dataclass
from datetime import date

import pandas as pd

from services.errors import InputError
from services.rates._fred import (
    CURVE_MONTHS,
    PAUSE_MONTHS,
    RESUME_RULE,
    RULE,
    SMALL_N_WARNING,
    STANCE_MONTHS,
    WINDOWS,
    FredSeries,
)
from services.returns import total_return


@dataclass(frozen=True)
class Decision:
    day: date  # the FOMC decision day
    effective: date  # the first day at the new target (the day after the decision since 2008)
    before: float  # the target (upper bound of the range from 2008-12-16), %
    after: float
    source: str  # "FRED DFEDTARU" or the press release the bundled list cites
    note: str = ""  # e.g. "intermeeting"
    previous: date | None = None  # the decision day of the change before this one, when known

    @property
    def change_pp(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class Policy:
    """The stance on `as_of`: the target range and effective rate as last observed, the last change."""
    target: tuple[float, float] | None  # (lower, upper) %; None before the range series starts
    target_from: date  # the first day of the range series (2008-12-16)
    target_as_of: date | None
    effective: float | None  # DFF, %
    effective_as_of: date | None
    last_change: Decision | None
    stance: str  # "easing", "tightening", "on hold" or "unknown" (no target range yet)
    monthly: float | None  # the latest complete FEDFUNDS month's average, %
    monthly_as_of: date | None  # its month (first day)


@dataclass(frozen=True)
class CycleWindow:
    months: int
    end: date | None  # the close the window ends on; None when it runs past the data
    iwm_pct: float | None
    spy_pct: float | None

    @property
    def gap_pp(self) -> float | None:
        """IWM minus SPY total return, in percentage points."""
        return None if self.iwm_pct is None or self.spy_pct is None else self.iwm_pct - self.spy_pct


@dataclass(frozen=True)
class EasingCycle:
    cut: Decision  # the first cut (or, for a resumption, the cut that resumed easing)
    start: date  # the close returns are measured from: the decision day's, or the last before it
    windows: tuple[CycleWindow, ...]

    @property
    def complete(self) -> bool:
        """False for the cycle in progress: some windows run past the data."""
        return all(w.end is not None for w in self.windows)


@dataclass(frozen=True)
class WindowStats:
    months: int
    n: int  # cycles with this window complete
    iwm_mean: float | None
    spy_mean: float | None
    gap_mean: float | None
    gap_median: float | None
    iwm_ahead: int  # cycles in which IWM beat SPY over this window


@dataclass(frozen=True)
class CurveChange:
    months: int
    since: date | None  # the day the change is measured from; None before the data
    change_pp: float | None

    @property
    def direction(self) -> str:
        if self.change_pp is None:
            return "n/a"
        return "steepening" if self.change_pp > 0 else "flattening" if self.change_pp < 0 else "unchanged"


@dataclass(frozen=True)
class YieldCurve:
    as_of: date  # the last day with both yields
    dgs2: float
    dgs10: float
    changes: tuple[CurveChange, ...]

    @property
    def spread_pp(self) -> float:
        return self.dgs10 - self.dgs2


@dataclass(frozen=True)
class RatesReport:
    as_of: date  # the last common IWM/SPY close used
    policy: Policy
    curve: YieldCurve | None  # None before the yields start in the data
    cycles: tuple[EasingCycle, ...]
    resumptions: tuple[EasingCycle, ...]  # cuts that resumed easing (RESUME_RULE): shown, not counted
    stats: tuple[WindowStats, ...]
    rule: str
    resume_rule: str
    warning: str  # the small-sample warning
    daily_source: str  # e.g. "FRED DFF/DFEDTARU/DFEDTARL/DGS2/DGS10, fetched 2026-08-21 14:00 UTC"
    monthly_source: str
    market_source: str
    stale: bool
    notes: tuple[str, ...]


def known_by(series: pd.Series, as_of: date | None, monthly: bool = False) -> pd.Series:
    """Observations known on `as_of`: a monthly average counts once its month has ended."""
    if as_of is None:
        return series
    day = pd.Timestamp(as_of)
    if monthly:
        return series[series.index + pd.offsets.MonthEnd(0) <= day]
    return series[series.index <= day]


def target_decisions(upper: pd.Series) -> list[Decision]:
    """Each change of the target range's upper bound, dated by its decision: the day before it took effect."""
    changes = upper.diff()
    moved = changes[changes.abs() > 1e-9]
    decisions: list[Decision] = []
    for day, step in moved.items():
        decisions.append(Decision((day - pd.Timedelta(days=1)).date(), day.date(), float(upper[day] - step),
                                  float(upper[day]), "FRED DFEDTARU",
                                  previous=decisions[-1].day if decisions else None))
    return decisions


def listed_first_cuts(text: str) -> list[Decision]:
    """The bundled first cuts before the target range series (fomc_first_cuts.csv), effective the decision day."""
    rows = pd.read_csv(io.StringIO(text), dtype=str)
    return [Decision(date.fromisoformat(r.decision), date.fromisoformat(r.decision), float(r.target_before),
                     float(r.target_after), r.source, r.note, date.fromisoformat(r.previous_change[:10]))
            for r in rows.itertuples()]


def classify_cuts(decisions: list[Decision]) -> tuple[list[Decision], list[Decision]]:
    """(first cuts, resumptions) among target changes, by the rules in the module docstring. A cut with no change
    before it in the series (its predecessor is unknown) is neither."""
    first, resumed = [], []
    for previous, decision in itertools.pairwise(decisions):
        if decision.change_pp >= 0:
            continue
        if previous.change_pp > 0:
            first.append(decision)
        elif decision.day >= (pd.Timestamp(previous.day) + pd.DateOffset(months=PAUSE_MONTHS)).date():
            resumed.append(decision)
    return first, resumed


def cycle_windows(prices: pd.DataFrame, start: date) -> tuple[CycleWindow, ...]:
    """IWM/SPY total returns from the close on (or last before) `start` over each window; a window that ends
    after the last close is None."""
    windows = []
    for months in WINDOWS:
        end = (pd.Timestamp(start) + pd.DateOffset(months=months)).date()
        iwm, spy = total_return(prices["iwm"], start, end), total_return(prices["spy"], start, end)
        if pd.Timestamp(end) > prices.index[-1] or iwm is None or spy is None:
            windows.append(CycleWindow(months, None, None, None))
        else:
            windows.append(CycleWindow(months, iwm.end, iwm.pct, spy.pct))
    return tuple(windows)


def easing_cycle(prices: pd.DataFrame, cut: Decision) -> EasingCycle | None:
    """The returns after a cut; None when the prices start after it."""
    before = prices.loc[: pd.Timestamp(cut.day)]
    if before.empty:
        return None
    return EasingCycle(cut, before.index[-1].date(), cycle_windows(prices, cut.day))


def window_stats(cycles: tuple[EasingCycle, ...]) -> tuple[WindowStats, ...]:
    stats = []
    for i, months in enumerate(WINDOWS):
        done = [c.windows[i] for c in cycles if c.windows[i].end is not None]
        gaps = [w.gap_pp for w in done if w.gap_pp is not None]
        stats.append(WindowStats(
            months, len(done),
            statistics.fmean([w.iwm_pct for w in done if w.iwm_pct is not None]) if done else None,
            statistics.fmean([w.spy_pct for w in done if w.spy_pct is not None]) if done else None,
            statistics.fmean(gaps) if gaps else None, statistics.median(gaps) if gaps else None,
            sum(1 for g in gaps if g > 0)))
    return tuple(stats)


def policy_on(daily: dict[str, pd.Series], monthly: pd.Series, decisions: list[Decision],
              target_from: date) -> Policy:
    """The stance from the series known on the day (already cut with `known_by`)."""
    low, high, dff = daily["DFEDTARL"], daily["DFEDTARU"], daily["DFF"]
    target = target_as_of = None
    stance, last = "unknown", None
    if not high.empty and not low.empty:
        target, target_as_of = (float(low.iloc[-1]), float(high.iloc[-1])), high.index[-1].date()
        last = decisions[-1] if decisions else None
        recent = (high.index[-1] - pd.DateOffset(months=STANCE_MONTHS)).date()
        if last is None or last.day < recent:
            stance = "on hold"
        else:
            stance = "easing" if last.change_pp < 0 else "tightening"
    return Policy(target, target_from, target_as_of, float(dff.iloc[-1]) if not dff.empty else None,
                  dff.index[-1].date() if not dff.empty else None, last, stance,
                  float(monthly.iloc[-1]) if not monthly.empty else None,
                  monthly.index[-1].date() if not monthly.empty else None)


def yield_curve(dgs2: pd.Series, dgs10: pd.Series) -> YieldCurve | None:
    """The 2s10s spread on the last day with both yields and its change over CURVE_MONTHS."""
    spread = (dgs10 - dgs2).dropna()
    if spread.empty:
        return None
    last = spread.index[-1]
    changes = []
    for months in CURVE_MONTHS:
        then = spread.loc[: last - pd.DateOffset(months=months)]
        changes.append(CurveChange(months, then.index[-1].date(), float(spread.iloc[-1] - then.iloc[-1]))
                       if not then.empty else CurveChange(months, None, None))
    return YieldCurve(last.date(), float(dgs2[last]), float(dgs10[last]), tuple(changes))


def compute_rates(daily: dict[str, FredSeries], fedfunds: FredSeries, listed: list[Decision], prices: pd.DataFrame,
                  market_source: str, as_of: date | None = None, notes: tuple[str, ...] = (),
                  market_stale: bool = False) -> RatesReport:
    """The report from the series known on `as_of`. `prices`: IWM/SPY adj closes on common days, up to as_of."""
    known = {sid: known_by(s.values, as_of) for sid, s in daily.items()}
    monthly = known_by(fedfunds.values, as_of, monthly=True)
    if known["DFF"].empty:
        raise InputError(f"as_of {as_of} is before the daily rate data starts ({daily['DFF'].values.index[0].date()})")
    notes_list = list(notes)
    decisions = target_decisions(known["DFEDTARU"])
    first, resumed = classify_cuts(decisions)
    range_start = daily["DFEDTARU"].values.index[0]
    cuts = [c for c in listed if pd.Timestamp(c.day) < range_start and (as_of is None or c.day <= as_of)] + first
    policy = policy_on(known, monthly, decisions, range_start.date())
    if policy.target is None:
        notes_list.append(f"The target range (FRED DFEDTARL/DFEDTARU) starts {range_start.date()}: no stance "
                          f"from it before then; the effective rate is shown alone.")
    ends = {sid: s.index[-1] for sid, s in known.items() if not s.empty}
    if ends and prices.index[-1] > min(ends.values()) + pd.Timedelta(days=7):
        sid = min(ends, key=lambda k: ends[k])
        notes_list.append(f"Rate data ends {ends[sid].date()} ({sid}): decisions after that are not in it.")
    cycles = tuple(c for c in (easing_cycle(prices, cut) for cut in cuts) if c is not None)
    resumptions = tuple(c for c in (easing_cycle(prices, cut) for cut in resumed) if c is not None)
    docs = [s.document for s in daily.values()]
    return RatesReport(
        as_of=prices.index[-1].date(),
        policy=policy,
        curve=yield_curve(known["DGS2"], known["DGS10"]),
        cycles=cycles,
        resumptions=resumptions,
        stats=window_stats(cycles),
        rule=RULE,
        resume_rule=RESUME_RULE,
        warning=SMALL_N_WARNING.format(n=f"{len(cycles)} cycle" + ("" if len(cycles) == 1 else "s")),
        daily_source=docs[0].describe("FRED " + "/".join(daily)) if len({d.describe("") for d in docs}) == 1
        else "; ".join(s.document.describe(f"FRED {sid}") for sid, s in daily.items()),
        monthly_source=fedfunds.document.describe("FRED FEDFUNDS"),
        market_source=market_source,
        stale=any(d.stale for d in docs) or fedfunds.document.stale or market_stale,
        notes=tuple(notes_list),
    )



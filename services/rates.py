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

import asyncio
import io
import itertools
import statistics
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from services.bundled import bundled_text
from services.charts import BLUE, DOWN, MUTED, TEXT, UP, YELLOW, Renderer, legend, new_figure, style_axes, title, to_png
from services.config import Settings
from services.documents import Document, Documents, looks_like_html
from services.errors import InputError
from services.market import MarketData, stale_prices_note
from services.returns import total_return

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FRED_BASE_URL = Settings.fred_base_url
MONTHLY = "FEDFUNDS"
DAILY = ("DFF", "DFEDTARU", "DFEDTARL", "DGS2", "DGS10")  # fetched in this order, after MONTHLY
BUNDLED_MONTHLY, BUNDLED_DAILY = "FEDFUNDS.monthly.csv.gz", "rates.daily.csv.gz"
LISTED_FIRST_CUTS = "fomc_first_cuts.csv"
WINDOWS = (3, 6, 12, 24)  # months after the first cut
CURVE_MONTHS = (3, 12)  # the 2s10s spread's change over these months
PAUSE_MONTHS = 3  # a cut after at least this long without a change (and no hike) is a resumption
STANCE_MONTHS = 6  # a change decided within this long of the latest observation: easing / tightening
STUDY_START = pd.Timestamp("2000-01-01")
RULE = ("first cut = the FOMC decision day of a cut whose previous target change was a hike; returns from that "
        "day's close")
RESUME_RULE = (f"a cut after ≥{PAUSE_MONTHS} months without a change and no hike between continues the cycle "
               "(listed as a resumption, not counted)")
SMALL_N_WARNING = ("Small sample: {n} since 2000, each with its own cause, too few to establish a pattern; the "
                   "mean, median and count describe these cycles only.")
CURVE_BACKGROUND = ("Background: regional banks (a large part of IWM's financials) fund short and lend long, so a "
                    "steeper curve tends to widen their margins and an inverted one to squeeze them.")


# --- FRED -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FredSeries:
    values: pd.Series  # by date (daily series: day; FEDFUNDS: first of the month), %
    document: Document  # where they came from: live, cached or bundled, and when


def parse_fred_csv(text: str, series_id: str) -> pd.Series:
    """A fredgraph.csv body (`observation_date,SERIES`, or the older `DATE` header) -> float Series by date;
    FRED's "." (no value) and empty cells are dropped. The bundled wide table (`date,DFF,DFEDTARL,...`) parses
    the same way, one column at a time. ValueError when the body is not such a CSV."""
    if looks_like_html(text):
        raise ValueError("HTML page instead of a FRED CSV")
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    header = [h.strip() for h in first.split(",")]
    if len(header) < 2 or header[0] not in ("observation_date", "DATE", "date") or series_id not in header[1:]:
        raise ValueError(f"not a FRED {series_id} CSV (header {first[:60]!r})")
    try:
        raw = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), dtype=str, skipinitialspace=True)
        values = pd.to_numeric(raw[series_id].str.strip().replace(".", None), errors="raise")
        index = pd.DatetimeIndex(pd.to_datetime(raw[header[0]], format="%Y-%m-%d"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed FRED CSV: {exc}") from exc
    series = pd.Series(values.to_numpy(dtype="float64"), index=index, name=series_id).dropna().sort_index()
    if series.empty:
        raise ValueError(f"FRED {series_id} CSV has no values")
    return series[~series.index.duplicated(keep="last")]


async def fred_series(documents: Documents, series_id: str, base_url: str = FRED_BASE_URL,
                      bundled: str | None = None) -> FredSeries:
    """A FRED series via the documents cache (bundled fallback when named). Raises DocumentUnavailable."""
    document = await documents.get(f"{base_url.rstrip('/')}/graph/fredgraph.csv", params={"id": series_id},
                                    bundled=bundled, validate=lambda text: parse_fred_csv(text, series_id),
                                    source="FRED")
    return FredSeries(await asyncio.to_thread(parse_fred_csv, document.text, series_id), document)


# --- analysis -------------------------------------------------------------------------------------------------

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


# --- chart ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RatesChart:
    fed_funds: pd.Series  # FEDFUNDS monthly, %
    target: pd.DataFrame  # DFEDTARL/DFEDTARU daily, columns low, high
    ratio: pd.Series  # IWM/SPY adj-close ratio, daily
    dgs2: pd.Series
    dgs10: pd.Series
    cuts: tuple[date, ...]  # first-cut decision days
    title: str
    subtitle: str


def render_rates(chart: RatesChart) -> bytes:
    import matplotlib.dates as mdates  # on first use, like everything matplotlib (services.charts.blank_figure)

    fig, (ax, curve) = new_figure((2.2, 1.0), hspace=0.10)
    title(fig, chart.title, chart.subtitle)
    ax.step(chart.fed_funds.index, chart.fed_funds.to_numpy(), where="post", color=YELLOW, lw=1.2,
            label="fed funds, monthly average % (right)")
    if not chart.target.empty:
        ax.fill_between(chart.target.index, chart.target["low"].to_numpy(), chart.target["high"].to_numpy(),
                        step="post", color=YELLOW, alpha=0.35, lw=0, label="target range % (right)")
    ax.set_ylabel("fed funds, %", color=MUTED, fontsize=8)
    ax.set_ylim(0, chart.fed_funds.max() * 1.15)  # room for the legend
    other = _twin(ax)
    other.plot(chart.ratio.index, chart.ratio.to_numpy(), color=BLUE, lw=1.0, label="IWM / SPY (left)")
    other.set_ylabel("IWM / SPY total-return ratio", color=MUTED, fontsize=8)
    for i, cut in enumerate(chart.cuts):
        for axes in (ax, curve):
            axes.axvline(pd.Timestamp(cut), color=TEXT, lw=0.8, ls="--", alpha=0.7,
                         label="first cut (decision day)" if i == 0 and axes is ax else None)
        ax.annotate(f"first cut {cut}", (pd.Timestamp(cut), 0), xycoords=("data", "axes fraction"),
                    xytext=(3, 4), textcoords="offset points", color=TEXT, fontsize=8, rotation=90)
    lines, extra = ax.get_legend_handles_labels(), other.get_legend_handles_labels()
    legend(ax, handles=lines[0] + extra[0], labels=lines[1] + extra[1])

    spread = (chart.dgs10 - chart.dgs2).dropna()
    curve.plot(chart.dgs2.index, chart.dgs2.to_numpy(), color=MUTED, lw=0.8, label="2-year %")
    curve.plot(chart.dgs10.index, chart.dgs10.to_numpy(), color=TEXT, lw=0.8, label="10-year %")
    curve.plot(spread.index, spread.to_numpy(), color=BLUE, lw=1.1, label="2s10s spread, pp (10y − 2y)")
    curve.fill_between(spread.index, spread.to_numpy(), 0, where=spread.to_numpy() < 0, color=DOWN, alpha=0.4,
                       lw=0, label="inverted")
    curve.fill_between(spread.index, spread.to_numpy(), 0, where=spread.to_numpy() >= 0, color=UP, alpha=0.2, lw=0)
    curve.axhline(0, color=MUTED, lw=0.6)
    curve.set_ylabel("Treasury yields, %", color=MUTED, fontsize=8)
    curve.yaxis.tick_right()
    curve.yaxis.set_label_position("right")
    curve.set_ylim(min(0.0, spread.min()) - 0.5, max(chart.dgs2.max(), chart.dgs10.max()) * 1.3)
    legend(curve)
    curve.set_xlim(chart.ratio.index[0] - pd.DateOffset(months=3), chart.ratio.index[-1] + pd.DateOffset(months=3))
    curve.xaxis.set_major_locator(mdates.YearLocator(2))
    curve.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    ax.tick_params(labelbottom=False)
    return to_png(fig)


def _twin(ax: Axes) -> Axes:
    """A second y axis on the left, drawn under the main one."""
    other = ax.twinx()
    ax.yaxis.tick_right()  # twinx moved the main axis' ticks to the left
    ax.yaxis.set_label_position("right")
    style_axes(other)
    other.grid(False)
    other.yaxis.tick_left()
    other.yaxis.set_label_position("left")
    other.set_zorder(ax.get_zorder() - 1)
    ax.patch.set_visible(False)
    return other


# --- answer ---------------------------------------------------------------------------------------------------

def stance_text(p: Policy) -> str:
    """e.g. "on hold since 2025-12-10", "easing (last cut 2024-12-18)", "stance unknown"."""
    if p.stance == "unknown":
        return "stance unknown (no target range in the data)"
    if p.last_change is None:
        return f"on hold since at least {p.target_as_of}" if p.stance == "on hold" else p.stance
    if p.stance == "on hold":
        return f"on hold since {p.last_change.day}"
    return f"{p.stance} (last {'cut' if p.last_change.change_pp < 0 else 'hike'} {p.last_change.day})"


async def rates_answer(market: MarketData, documents: Documents, renderer: Renderer, as_of: date | None = None,
                       *, fred_base_url: str = FRED_BASE_URL) -> tuple[RatesReport, bytes]:
    """The `/iwm rates` report and its chart (PNG) as of a day (default: the latest data)."""
    iwm, spy = await asyncio.gather(market.bars("IWM"), market.bars("SPY"))
    iwm.check_as_of(as_of)
    iwm = iwm.until(as_of)
    prices = pd.concat([iwm.frame["adj_close"], spy.frame["adj_close"]], axis=1, keys=["iwm", "spy"],
                       join="inner").dropna()
    if prices.empty:
        raise InputError(f"no common IWM/SPY closes up to {as_of}")
    ratio = prices["iwm"] / prices["spy"]  # relative strength, on the same common closes
    # One at a time: the documents cache is per series, and FRED answers them all on the same path.
    fedfunds = await fred_series(documents, MONTHLY, fred_base_url, BUNDLED_MONTHLY)
    daily = {sid: await fred_series(documents, sid, fred_base_url, BUNDLED_DAILY) for sid in DAILY}
    listed = listed_first_cuts(bundled_text(LISTED_FIRST_CUTS))
    notes: list[str] = []
    if prices.index[-1] < iwm.frame.index[-1]:
        notes.append(f"SPY data ends {prices.index[-1].date()}: returns stop there.")
    if stale := stale_prices_note((iwm, spy)):
        notes.append(stale)
    market_source = iwm.source if iwm.source == spy.source else f"IWM {iwm.source}, SPY {spy.source}"
    report = compute_rates(daily, fedfunds, listed, prices, market_source, as_of, tuple(notes),
                           iwm.stale or spy.stale)
    start = max(STUDY_START, prices.index[0] - pd.DateOffset(months=6))
    target = pd.concat([known_by(daily["DFEDTARL"].values, as_of), known_by(daily["DFEDTARU"].values, as_of)],
                       axis=1, keys=["low", "high"], join="inner")
    p = report.policy
    headline = (f"Fed funds {p.target[0]:.2f}–{p.target[1]:.2f}%" if p.target
                else f"Effective fed funds {p.effective:.2f}%")
    chart = RatesChart(
        fed_funds=known_by(fedfunds.values, as_of, monthly=True).loc[start:],
        target=target.loc[start:],
        ratio=ratio.loc[start:],
        dgs2=known_by(daily["DGS2"].values, as_of).loc[start:],
        dgs10=known_by(daily["DGS10"].values, as_of).loc[start:],
        cuts=tuple(c.cut.day for c in report.cycles),
        title=f"{headline} · {stance_text(p)}",
        subtitle=f"FRED to {p.effective_as_of} · IWM/SPY to {report.as_of}",
    )
    return report, await renderer.render(render_rates, chart)

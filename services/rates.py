"""`/iwm rates`: the fed funds rate (FRED) and how IWM did against SPY after the first cut of each easing cycle.

Sources: FRED's keyless CSV download, `FEDFUNDS` (monthly average of the effective rate) for the cycle study and
`DFF` (daily effective rate) for the current level when the bot is online; offline, the bundled FEDFUNDS file.
Returns are total returns from dividend-adjusted closes (`adj_close`) of IWM and SPY.

First-cut rule (monthly FEDFUNDS, from 2000 on): a month is *easing* when its average is at least 0.25pp below
the highest average of the 6 months before it; the *first cut* of a cycle is an easing month with no easing month
in the 6 months before it (so the Fed had been hiking or holding for at least 6 months). Monthly averages lag a
decision by up to a month: a cut late in a month (2019-07-31) or a 50bp cut mid-month (2024-09-18) only shows in
the following month's average. On the bundled series this finds 2001-01, 2007-09, 2019-08 and 2024-10. March
2020 is not a new cycle: the Fed had paused four months after its October 2019 cut and never hiked, so it
continues the 2019 cycle (and its windows would overlap the 2019 ones almost entirely).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from services.charts import BLUE, MUTED, TEXT, YELLOW, Renderer, legend, new_figure, style_axes, title, to_png
from services.config import Settings
from services.documents import Document, Documents, DocumentUnavailable, looks_like_html
from services.errors import InputError
from services.market import MarketData, stale_prices_note
from services.returns import total_return

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FRED_BASE_URL = Settings.fred_base_url
WINDOWS = (3, 6, 12, 24)  # months after the first cut
CUT_THRESHOLD = 0.25  # pp below the trailing high
TRAILING_MONTHS = 6  # the trailing high's window
QUIET_MONTHS = 6  # months without easing before a first cut
STUDY_START = pd.Timestamp("2000-01-01")
STANCE_MONTHS, STANCE_THRESHOLD = 3, 0.25
LEVEL_TOLERANCE = 0.10  # pp: smaller moves are the effective rate's drift, not a policy change
RULE = (
    f"first cut = first month whose FEDFUNDS average is ≥{CUT_THRESHOLD:.2f}pp below its {TRAILING_MONTHS}-month "
    f"high after ≥{QUIET_MONTHS} months of hikes/holds; returns from the last close before that month"
)


@dataclass(frozen=True)
class CycleWindow:
    months: int
    end: date | None  # the trading day the window ends on; None when it runs past the data
    iwm_pct: float | None
    spy_pct: float | None

    @property
    def gap_pp(self) -> float | None:
        """IWM minus SPY total return, in percentage points."""
        return None if self.iwm_pct is None or self.spy_pct is None else self.iwm_pct - self.spy_pct


@dataclass(frozen=True)
class EasingCycle:
    first_cut_month: date  # first day of the month the rule found
    rate_before: float  # the trailing high the cut is measured from, %
    rate_at_cut: float  # that month's average, %
    start: date  # last common IWM/SPY close before the month: returns are measured from here
    windows: tuple[CycleWindow, ...]

    @property
    def complete(self) -> bool:
        """False for the cycle in progress: some windows run past the data."""
        return all(w.end is not None for w in self.windows)


@dataclass(frozen=True)
class WindowAverage:
    months: int
    cycles: int  # how many cycles have this window
    iwm_pct: float | None
    spy_pct: float | None
    gap_pp: float | None
    iwm_beat: int  # cycles in which IWM beat SPY over this window


@dataclass(frozen=True)
class RatesReport:
    as_of: date  # the last common IWM/SPY close used
    rate: float  # %, the latest observation of `rate_series` up to as_of
    rate_as_of: date  # the day (DFF) or month (FEDFUNDS, first of month) of that observation
    rate_series: str  # "DFF" (daily) or "FEDFUNDS" (monthly average)
    rate_source: str  # e.g. "FRED DFF, fetched 2026-08-21 14:00 UTC"
    level_since: date | None  # first observation at the current level (within 0.10pp); None if never changed
    previous_level: float | None  # the observation before that
    stance: str  # "easing", "holding" or "tightening" from the change over 3 months
    change_3m: float | None  # pp
    monthly_as_of: date  # last FEDFUNDS month used for the study
    monthly_source: str
    cycles: tuple[EasingCycle, ...]
    averages: tuple[WindowAverage, ...]
    rule: str
    market_source: str
    stale: bool
    notes: tuple[str, ...]

    @property
    def last_change_pp(self) -> float | None:
        return None if self.previous_level is None else self.rate - self.previous_level


# --- FRED -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FredSeries:
    values: pd.Series  # by date (DFF: day; FEDFUNDS: first of the month), %
    document: Document  # where they came from: live, cached or bundled, and when

def parse_fred_csv(text: str, series_id: str) -> pd.Series:
    """A fredgraph.csv body -> float Series by date. Accepts the `observation_date` and the older `DATE` header;
    FRED's "." (no value) is dropped. ValueError when the body is not that CSV."""
    if looks_like_html(text):
        raise ValueError("HTML page instead of a FRED CSV")
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    header = [h.strip() for h in first.split(",")]
    if len(header) != 2 or header[0] not in ("observation_date", "DATE") or header[1] != series_id:
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

def known_by(series: pd.Series, as_of: date | None, monthly: bool) -> pd.Series:
    """Observations known on `as_of`: a monthly average counts once its month has ended."""
    if as_of is None:
        return series
    day = pd.Timestamp(as_of)
    if monthly:
        return series[series.index + pd.offsets.MonthEnd(0) <= day]
    return series[series.index <= day]


def first_cuts(monthly: pd.Series) -> list[pd.Timestamp]:
    """The months the rule in the module docstring marks as the first cut of an easing cycle (2000 on)."""
    values = monthly.round(4)
    trailing_high = values.shift(1).rolling(TRAILING_MONTHS, min_periods=TRAILING_MONTHS).max()
    easing = (values <= trailing_high - CUT_THRESHOLD + 1e-9).astype(int)
    recent = easing.shift(1).rolling(QUIET_MONTHS, min_periods=QUIET_MONTHS).sum()
    first = (easing == 1) & (recent == 0) & (values.index >= STUDY_START)
    return list(values.index[first])


@dataclass(frozen=True)
class LastMove:
    since: date  # the first observation at the current level (within LEVEL_TOLERANCE)
    previous: float  # the observation before it, %


@dataclass(frozen=True)
class Stance:
    name: str  # "easing", "holding" or "tightening"; "unknown" with less than STANCE_MONTHS of data
    change: float | None  # pp over STANCE_MONTHS; None when unknown


def current_level(series: pd.Series) -> LastMove | None:
    """When the rate last moved to its current level; None if it never moved."""
    latest = series.iloc[-1]
    away = series[(series - latest).abs() >= LEVEL_TOLERANCE - 1e-9]
    if away.empty:
        return None
    after = series.index[series.index > away.index[-1]]
    return LastMove(after[0].date(), float(away.iloc[-1]))


def stance(series: pd.Series) -> Stance:
    last = series.index[-1]
    then = last - pd.DateOffset(months=STANCE_MONTHS)
    if then < series.index[0]:
        return Stance("unknown", None)
    change = float(series.iloc[-1] - series.asof(then))
    if change <= -STANCE_THRESHOLD + 1e-9:
        return Stance("easing", change)
    if change >= STANCE_THRESHOLD - 1e-9:
        return Stance("tightening", change)
    return Stance("holding", change)


def cycle_windows(prices: pd.DataFrame, start: pd.Timestamp) -> tuple[CycleWindow, ...]:
    """IWM/SPY total returns from `start` (a month's last close) to the last close of the month `months` later;
    a window that ends after the data is None."""
    windows = []
    for months in WINDOWS:
        end = start + pd.offsets.MonthEnd(0) + pd.DateOffset(months=months) + pd.offsets.MonthEnd(0)
        iwm, spy = total_return(prices["iwm"], start, end), total_return(prices["spy"], start, end)
        if end > prices.index[-1] or iwm is None or spy is None:
            windows.append(CycleWindow(months, None, None, None))
            continue
        windows.append(CycleWindow(months, iwm.end, iwm.pct, spy.pct))
    return tuple(windows)


def easing_cycles(monthly: pd.Series, prices: pd.DataFrame) -> tuple[EasingCycle, ...]:
    """Each first cut with the returns after it. `prices`: common-day adj closes, columns iwm and spy."""
    cycles = []
    for month in first_cuts(monthly):
        before = prices.loc[: month - pd.Timedelta(days=1)]
        if before.empty:
            continue
        start = before.index[-1]
        high = monthly.loc[: month - pd.Timedelta(days=1)].iloc[-TRAILING_MONTHS:].max()
        cycles.append(EasingCycle(month.date(), float(high), float(monthly[month]), start.date(),
                                  cycle_windows(prices, start)))
    return tuple(cycles)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def window_averages(cycles: tuple[EasingCycle, ...]) -> tuple[WindowAverage, ...]:
    averages = []
    for i, months in enumerate(WINDOWS):
        done = [c.windows[i] for c in cycles if c.windows[i].end is not None]
        averages.append(WindowAverage(
            months, len(done), _mean([w.iwm_pct for w in done if w.iwm_pct is not None]),
            _mean([w.spy_pct for w in done if w.spy_pct is not None]),
            _mean([w.gap_pp for w in done if w.gap_pp is not None]),
            sum(1 for w in done if (w.gap_pp or 0) > 0),
        ))
    return tuple(averages)


def compute_rates(fedfunds: FredSeries, dff: FredSeries | None, prices: pd.DataFrame, market_source: str,
                  as_of: date | None = None, notes: tuple[str, ...] = (), market_stale: bool = False) -> RatesReport:
    """The report from the series known on `as_of`. `prices`: IWM/SPY adj closes on common days, up to as_of."""
    monthly_doc = fedfunds.document
    monthly = known_by(fedfunds.values, as_of, monthly=True)
    if monthly.empty:
        raise InputError(f"as_of {as_of} is before the first complete FEDFUNDS month "
                         f"({fedfunds.values.index[0]:%Y-%m})")
    notes_list = list(notes)
    current, doc, series_id = monthly, monthly_doc, "FEDFUNDS"
    if dff is not None:
        known = known_by(dff.values, as_of, monthly=False)
        if not known.empty:
            current, doc, series_id = known, dff.document, "DFF"
    if series_id == "FEDFUNDS":
        notes_list.append("Rate is a monthly average: a mid-month decision is split across two months.")
    last_month = monthly.index[-1]
    if prices.index[-1] > last_month + pd.offsets.MonthEnd(0) + pd.DateOffset(months=2):
        notes_list.append(f"FEDFUNDS data ends {last_month:%Y-%m}: cuts after that cannot be detected.")
    move = current_level(current)
    how = stance(current)
    cycles = easing_cycles(monthly, prices)
    return RatesReport(
        as_of=prices.index[-1].date(),
        rate=float(current.iloc[-1]),
        rate_as_of=current.index[-1].date(),
        rate_series=series_id,
        rate_source=doc.describe(f"FRED {series_id}"),
        level_since=move.since if move else None,
        previous_level=move.previous if move else None,
        stance=how.name,
        change_3m=how.change,
        monthly_as_of=last_month.date(),
        monthly_source=monthly_doc.describe("FRED FEDFUNDS"),
        cycles=cycles,
        averages=window_averages(cycles),
        rule=RULE,
        market_source=market_source,
        stale=doc.stale or monthly_doc.stale or market_stale,
        notes=tuple(notes_list),
    )


# --- chart ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RatesChart:
    fed_funds: pd.Series  # monthly, %
    ratio: pd.Series  # IWM/SPY adj-close ratio, daily
    cuts: tuple[date, ...]
    title: str
    subtitle: str


def render_rates(chart: RatesChart) -> bytes:
    fig, (ax,) = new_figure()
    title(fig, chart.title, chart.subtitle)
    ax.step(chart.fed_funds.index, chart.fed_funds.to_numpy(), where="post", color=YELLOW, lw=1.4,
            label="fed funds % (right)")
    ax.set_ylabel("fed funds, %", color=MUTED, fontsize=8)
    ax.set_ylim(bottom=0)
    other = _twin(ax)
    other.plot(chart.ratio.index, chart.ratio.to_numpy(), color=BLUE, lw=1.0, label="IWM / SPY (left)")
    other.set_ylabel("IWM / SPY total-return ratio", color=MUTED, fontsize=8)
    for i, cut in enumerate(chart.cuts):
        ax.axvline(pd.Timestamp(cut), color=TEXT, lw=0.8, ls="--", alpha=0.7, label="first cut" if i == 0 else None)
        ax.annotate(f"first cut {cut:%Y-%m}", (pd.Timestamp(cut), 0), xycoords=("data", "axes fraction"),
                    xytext=(3, 4), textcoords="offset points", color=TEXT, fontsize=8, rotation=90)
    lines = ax.get_legend_handles_labels()
    extra = other.get_legend_handles_labels()
    legend(ax, handles=lines[0] + extra[0], labels=lines[1] + extra[1])
    import matplotlib.dates as mdates  # on first use, like everything matplotlib (services.charts.blank_figure)

    ax.xaxis.set_major_locator(mdates.YearLocator(2))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
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

async def rates_answer(market: MarketData, documents: Documents, renderer: Renderer, as_of: date | None = None,
                       *, fred_base_url: str = FRED_BASE_URL) -> tuple[RatesReport, bytes]:
    """The `/iwm rates` report and its chart (PNG) as of a day (default: the latest data)."""
    iwm, spy = await asyncio.gather(market.bars("IWM"), market.bars("SPY"))
    iwm.check_as_of(as_of)
    iwm = iwm.until(as_of)
    prices = pd.concat([iwm.frame["adj_close"], spy.frame["adj_close"]], axis=1, keys=["iwm", "spy"],
                       join="inner").dropna()
    ratio = prices["iwm"] / prices["spy"]  # relative strength, on the same common closes
    if prices.empty:
        raise InputError(f"no common IWM/SPY closes up to {as_of}")
    fedfunds = await fred_series(documents, "FEDFUNDS", fred_base_url, "FEDFUNDS.monthly.csv.gz")
    notes: list[str] = []
    dff: FredSeries | None = None
    if documents.live:
        try:
            dff = await fred_series(documents, "DFF", fred_base_url)
        except DocumentUnavailable as exc:
            notes.append(f"Daily rate (DFF) unavailable: {exc}")
    if prices.index[-1] < iwm.frame.index[-1]:
        notes.append(f"SPY data ends {prices.index[-1].date()}: returns stop there.")
    if stale := stale_prices_note((iwm, spy)):
        notes.append(stale)
    market_source = iwm.source if iwm.source == spy.source else f"IWM {iwm.source}, SPY {spy.source}"
    report = compute_rates(fedfunds, dff, prices, market_source, as_of, tuple(notes), iwm.stale or spy.stale)
    fed = known_by(fedfunds.values, as_of, monthly=True).loc[STUDY_START:]
    chart = RatesChart(
        fed_funds=fed,
        ratio=ratio.loc[fed.index[0]:],
        cuts=tuple(c.first_cut_month for c in report.cycles),
        title=f"Fed funds {report.rate:.2f}% · {report.stance}",
        subtitle=f"FEDFUNDS monthly to {report.monthly_as_of:%Y-%m} · IWM/SPY to {report.as_of} · "
                 f"{fedfunds.document.describe('FRED')}",
    )
    return report, await renderer.render(render_rates, chart)

"""`/iwm compare`: total return of IWM against SPY and QQQ (and the Russell 2000 index, price only) since a date.

Returns use dividend-adjusted closes (`adj_close`), measured from the last close on or before `since`
(`services.returns`). The default `since` is IWM's November 2021 closing high, found in the data.

Alignment (RULE): every return and gap in the headline is measured from one start to one end, the same for all
series. The end is the last date all the series with data share (on or before `as_of`); a series whose data ends
earlier than another's is labelled with its end date (chart legend "^RUT (to 2026-08-21)"), and a series running
past the common end also shows its return to its own last close. The start is the last close on or before `since`;
when `since` is before a series' first close, every series is measured from the latest first close instead, and
the report says so ("IWM starts 2000-05-26: measured from there"): never silently moved. A series with no close
after the start (its data ends before it) is left out with its reason. The chart draws each line to its own
last date.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import reduce
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from services.charts import (
    MUTED,
    PANEL,
    SERIES_COLORS,
    TEXT,
    TEXT_PT,
    Renderer,
    axis_label,
    date_axis,
    header,
    new_figure,
    reference,
    to_png,
)
from services.errors import InputError
from services.market import Bars, MarketData
from services.returns import rebased

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SYMBOLS = {
    "IWM": "IWM (Russell 2000 ETF)",
    "SPY": "SPY (S&P 500 ETF)",
    "QQQ": "QQQ (Nasdaq-100 ETF)",
    "RUT": "^RUT (Russell 2000 index, price only)",
}
PRICE_ONLY = {"RUT"}  # an index level: no dividends, so its return is price-only
INDEXES = {"RUT"}  # shown as ^RUT
DEFAULT_SYMBOLS = ("IWM", "SPY", "QQQ")
BASE = "IWM"


@dataclass(frozen=True)
class SeriesReturn:
    symbol: str
    label: str
    price_only: bool  # True: price return (no dividends), e.g. the RUT index
    start: date | None  # the close returns are measured from; None when the series has no data then
    end: date | None  # the common end date its return is measured to
    total_return_pct: float | None  # from start to end
    source: str
    stale: bool
    note: str = ""  # why there is no return, or why the data is a stale fallback
    data_end: date | None = None  # its own last close up to as_of
    latest_pct: float | None = None  # return to data_end, when that is after the common end
    ends_early: bool = False  # its data ends before another series' does


@dataclass(frozen=True)
class Gap:
    symbol: str  # the base (IWM unless it was not asked for)
    other: str
    as_of: date  # the common end date
    symbol_pct: float
    other_pct: float

    @property
    def gap_pp(self) -> float:
        return self.symbol_pct - self.other_pct


@dataclass(frozen=True)
class CompareReport:
    since: date  # the day asked for (or the default)
    since_note: str  # why this day, e.g. the 2021 closing high
    as_of: date | None  # the day asked for (None: latest)
    base: str
    series: tuple[SeriesReturn, ...]
    gaps: tuple[Gap, ...]
    alignment: str
    stale: bool
    start: date  # the day every return is measured from: `since`, or the latest first close when later
    end: date  # the last date all series with a return share: every return and gap is measured to it
    start_note: str = ""  # why `start` is later than `since` ("IWM starts 2000-05-26: measured from there")

    @property
    def headline(self) -> str:
        """The title: base, the requested start (and the one used, if later), the common end, the gaps."""
        gaps = " · ".join(f"vs {display(g.other)} {g.gap_pp:+.1f}pp" for g in self.gaps)
        moved = f" (from {self.start})" if self.start != self.since else ""
        return f"{self.base} since {self.since}{moved} to {self.end}" + (f": {gaps}" if gaps else "")


def parse_symbols(symbols: str | Sequence[str] | None) -> tuple[str, ...]:
    """"iwm, spy qqq" or a list -> ("IWM", "SPY", "QQQ"); InputError naming the valid ones."""
    if symbols is None:
        return DEFAULT_SYMBOLS
    parts = re.split(r"[\s,;]+", symbols) if isinstance(symbols, str) else list(symbols)
    wanted = tuple(dict.fromkeys(p.strip().upper().lstrip("^") for p in parts if p.strip()))
    unknown = [s for s in wanted if s not in SYMBOLS]
    if unknown or not wanted:
        raise InputError(f"unknown symbol(s) {', '.join(unknown) or '(none given)'}: choose from "
                         f"{', '.join(SYMBOLS)}")
    return wanted


def default_since(iwm: Bars) -> tuple[date, str]:
    """IWM's November 2021 closing high (traded close), from the data."""
    closes = iwm.frame.loc["2021-11", "close"].dropna()
    if closes.empty:
        raise InputError("no IWM data for November 2021: give a `since` date")
    day = closes.idxmax()
    return day.date(), f"IWM's November 2021 closing high ({closes[day]:.2f} on {day.date()})"


def display(symbol: str) -> str:
    """The symbol as members know it: ^RUT for the index."""
    return f"^{symbol}" if symbol in INDEXES else symbol


def common_start(closes: dict[str, pd.Series], since: date) -> tuple[date, str]:
    """(`since`, "") or, when `since` is before a series' first close, (the latest first close, why)."""
    firsts = {s: x.index[0].date() for s, x in closes.items() if len(x)}
    late = {s: d for s, d in firsts.items() if d > since}
    if not late:
        return since, ""
    symbol, day = max(late.items(), key=lambda item: item[1])
    return day, f"{display(symbol)} starts {day}: every series is measured from there"


def compute_compare(bars: dict[str, Bars], since: date, since_note: str, as_of: date | None = None
                    ) -> tuple[CompareReport, dict[str, pd.Series]]:
    """The report and the rebased lines (by symbol, each to its own last date; a symbol without data in the
    window has none). Module docstring: the alignment rule."""
    if as_of is not None and since >= as_of:
        raise InputError(f"since {since} must be before as_of {as_of}")
    closes = {s: b.frame["adj_close"].dropna() for s, b in bars.items()}
    if as_of is not None:
        closes = {s: x.loc[: pd.Timestamp(as_of)] for s, x in closes.items()}
    start, start_note = common_start(closes, since)
    lines = {s: line for s, x in closes.items() if (line := rebased(x, start, as_of)) is not None}
    if not lines:
        raise InputError(f"none of {', '.join(bars)} has data from {since}" + (f" to {as_of}" if as_of else ""))
    shared = reduce(lambda a, b: a.intersection(b), (line.index for line in lines.values()))
    if len(shared) < 2:
        raise InputError(f"{', '.join(map(display, lines))} share no dates from {start}"
                         + (f" to {as_of}" if as_of else ""))
    end = shared[-1]
    latest = max(line.index[-1] for line in lines.values())
    results = []
    for symbol, b in bars.items():
        line = lines.get(symbol)
        if line is None:
            x = b.frame["adj_close"].dropna()
            first, last = x.index[0].date(), x.index[-1].date()
            why = f"data starts {first}" if start < first else f"data ends {last}"
            results.append(SeriesReturn(symbol, SYMBOLS[symbol], symbol in PRICE_ONLY, None, None, None, b.source,
                                        b.stale, f"no data for this window ({why})", data_end=last))
            continue
        data_end = line.index[-1]
        results.append(SeriesReturn(
            symbol, SYMBOLS[symbol], symbol in PRICE_ONLY, line.index[0].date(), end.date(),
            float(line[end] - 100), b.source, b.stale, b.note if b.stale else "", data_end.date(),
            float(line.iloc[-1] - 100) if data_end > end else None, data_end < latest))
    base = BASE if BASE in lines else next(iter(lines))
    gaps = tuple(Gap(base, s, end.date(), float(lines[base][end] - 100), float(line[end] - 100))
                 for s, line in lines.items() if s != base)
    early = [r for r in results if r.ends_early]
    alignment = (f"Every return and gap is measured to **{end.date()}**, the last date all series have"
                 + (" (" + ", ".join(f"{display(r.symbol)} data ends {r.data_end}" for r in early) + ")"
                    if early else "") + "; the chart draws each line to its own last date.")
    report = CompareReport(since, since_note, as_of, base, tuple(results), gaps, alignment,
                           any(b.stale for b in bars.values()), start, end.date(), start_note)
    return report, lines


# --- chart ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChartLine:
    label: str
    line: pd.Series  # rebased to 100
    price_only: bool  # drawn dashed


@dataclass(frozen=True)
class CompareChart:
    lines: tuple[ChartLine, ...]
    title: str
    subtitle: str  # drawn as the y-axis label: the title (with its gaps) needs the whole width
    measured_to: date  # the common end date the gaps are measured on, marked with a vertical line


def draw_compare(chart: CompareChart) -> Figure:
    fig, (ax,) = new_figure()
    index = pd.DatetimeIndex(sorted(set().union(*(c.line.index for c in chart.lines))))
    x = np.arange(len(index))
    reference(ax.axhline(100, color=TEXT, lw=0.6, alpha=0.5))
    if (measured := pd.Timestamp(chart.measured_to)) < index[-1]:
        at = index.get_loc(measured)
        reference(ax.axvline(at, color=MUTED, lw=0.8, ls=":"))
        ax.annotate(f"gaps measured {chart.measured_to}", (at, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 3), textcoords="offset points", ha="right", va="bottom", color=MUTED,
                    fontsize=TEXT_PT)
    ends = []
    for i, c in enumerate(chart.lines):
        color, line = SERIES_COLORS[i % len(SERIES_COLORS)], c.line
        y = line.reindex(index).to_numpy()
        ax.plot(x, y, color=color, lw=1.3, ls="--" if c.price_only else "-", label=c.label)
        ends.append((float(line.iloc[-1]), index.get_loc(line.index[-1]), color, f"{line.iloc[-1]:.0f}"))
    # Each line's end value in the margin right of the data, nudged apart so no two labels meet.
    low, high = ax.get_ylim()
    step = (high - low) * 0.055
    placed: list[float] = []
    for value, _, color, text in sorted(ends):
        y = max(value, placed[-1] + step) if placed else value
        placed.append(y)
        ax.annotate(text, (len(index) - 1, value), xytext=(len(index) * 1.015, y), textcoords="data",
                    color=color, fontsize=TEXT_PT, va="center", annotation_clip=False,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": PANEL, "edgecolor": "none"})
    axis_label(ax, chart.subtitle)
    date_axis(ax, index)
    ax.set_xlim(-1, len(index) * 1.07)  # room for the end labels
    header(fig, chart.title, reserve_in=0.2 if measured < index[-1] else 0.0)
    return fig


def render_compare(chart: CompareChart) -> bytes:
    return to_png(draw_compare(chart))


def series_label(r: SeriesReturn) -> str:
    """The legend label: the series, the kind of return and, for a series ending before another, its end date."""
    label = r.label + ("" if r.price_only else ", total return")
    return label + (f" (to {r.data_end})" if r.ends_early else "")


def compare_chart(report: CompareReport, lines: dict[str, pd.Series]) -> CompareChart:
    by_symbol = {r.symbol: r for r in report.series}
    sources = sorted({r.source + (" (stale)" if r.stale else "") for r in report.series})
    return CompareChart(
        lines=tuple(ChartLine(series_label(by_symbol[s]), line, s in PRICE_ONLY) for s, line in lines.items()),
        title=report.headline,
        subtitle=f"start = 100 · source: {', '.join(sources)}",
        measured_to=report.end,
    )


# --- answer ---------------------------------------------------------------------------------------------------

async def compare_answer(market: MarketData, renderer: Renderer, symbols: str | Sequence[str] | None = None,
                         since: date | None = None, as_of: date | None = None) -> tuple[CompareReport, bytes]:
    """The `/iwm compare` report and its chart (PNG)."""
    wanted = parse_symbols(symbols)
    loaded = await asyncio.gather(*(market.bars(s) for s in dict.fromkeys((BASE, *wanted))))
    by_symbol = {b.symbol: b for b in loaded}
    iwm = by_symbol[BASE]
    iwm.check_as_of(as_of)
    if since is None:
        since, since_note = default_since(iwm)
    else:
        since_note = "the date asked for"
    report, lines = compute_compare({s: by_symbol[s] for s in wanted}, since, since_note, as_of)
    return report, await renderer.render(render_compare, compare_chart(report, lines))

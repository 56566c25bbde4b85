"""`/iwm compare`: total return of IWM against SPY and QQQ (and the Russell 2000 index, price only) since a date.

Returns use dividend-adjusted closes (`adj_close`), measured from the last close on or before `since`
(`services.returns`). The default `since` is IWM's November 2021 closing high, found in the data. Series end on
different days (bundled: QQQ 2025-09-26, SPY 2026-07-31, IWM 2026-08-21, RUT 2022-11-18): each line runs to its
own last day, and each gap (IWM minus the other, in percentage points) is measured on the last day both series
have.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from services.charts import PANEL, SERIES_COLORS, TEXT, Renderer, date_axis, legend, new_figure, title, to_png
from services.errors import InputError
from services.market import Bars, MarketData
from services.returns import rebased

SYMBOLS = {
    "IWM": "IWM (Russell 2000 ETF)",
    "SPY": "SPY (S&P 500 ETF)",
    "QQQ": "QQQ (Nasdaq-100 ETF)",
    "RUT": "Russell 2000 index, price only",
}
PRICE_ONLY = {"RUT"}  # an index level: no dividends, so its return is price-only
DEFAULT_SYMBOLS = ("IWM", "SPY", "QQQ")
BASE = "IWM"
ALIGNMENT = "Each line runs to its own last date; each gap uses the last date both series have."


@dataclass(frozen=True)
class SeriesReturn:
    symbol: str
    label: str
    price_only: bool  # True: price return (no dividends), e.g. the RUT index
    start: date | None  # the close returns are measured from; None when the series has no data then
    end: date | None  # its last close up to as_of
    total_return_pct: float | None
    source: str
    stale: bool
    note: str = ""  # why there is no return, or why the data is a stale fallback


@dataclass(frozen=True)
class Gap:
    symbol: str  # the base (IWM unless it was not asked for)
    other: str
    as_of: date  # last date both have
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


def compute_compare(bars: dict[str, Bars], since: date, since_note: str, as_of: date | None = None
                    ) -> tuple[CompareReport, dict[str, pd.Series]]:
    """The report and the rebased lines (by symbol; a symbol without data in the window has none)."""
    if as_of is not None and since >= as_of:
        raise InputError(f"since {since} must be before as_of {as_of}")
    lines: dict[str, pd.Series] = {}
    results = []
    for symbol, b in bars.items():
        line = rebased(b.frame["adj_close"].dropna(), since, as_of)
        if line is None:
            first, last = b.frame.index[0].date(), b.frame.index[-1].date()
            why = f"data starts {first}" if since < first else f"data ends {last}"
            results.append(SeriesReturn(symbol, SYMBOLS[symbol], symbol in PRICE_ONLY, None, None, None, b.source,
                                        b.stale, f"no data for this window ({why})"))
            continue
        lines[symbol] = line
        results.append(SeriesReturn(symbol, SYMBOLS[symbol], symbol in PRICE_ONLY, line.index[0].date(),
                                    line.index[-1].date(), float(line.iloc[-1] - 100), b.source, b.stale,
                                    b.note if b.stale else ""))
    if not lines:
        raise InputError(f"none of {', '.join(bars)} has data from {since}" + (f" to {as_of}" if as_of else ""))
    base = BASE if BASE in lines else next(iter(lines))
    gaps = []
    for symbol, line in lines.items():
        if symbol == base:
            continue
        common = lines[base].index.intersection(line.index)
        if len(common) < 2:
            continue
        day = common[-1]
        gaps.append(Gap(base, symbol, day.date(), float(lines[base][day] - 100), float(line[day] - 100)))
    report = CompareReport(since, since_note, as_of, base, tuple(results), tuple(gaps), ALIGNMENT,
                           any(b.stale for b in bars.values()))
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
    subtitle: str


def render_compare(chart: CompareChart) -> bytes:
    fig, (ax,) = new_figure()
    title(fig, chart.title, chart.subtitle)
    index = pd.DatetimeIndex(sorted(set().union(*(c.line.index for c in chart.lines))))
    x = np.arange(len(index))
    ax.axhline(100, color=TEXT, lw=0.6, alpha=0.5)
    for i, c in enumerate(chart.lines):
        color, line = SERIES_COLORS[i % len(SERIES_COLORS)], c.line
        y = line.reindex(index).to_numpy()
        ax.plot(x, y, color=color, lw=1.3, ls="--" if c.price_only else "-", label=c.label)
        end = index.get_loc(line.index[-1])
        ax.annotate(f"{line.iloc[-1]:.0f} ({line.index[-1]:%Y-%m-%d})", (end, line.iloc[-1]), xytext=(4, 0),
                    textcoords="offset points", color=color, fontsize=8, va="center",
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": PANEL, "edgecolor": "none", "alpha": 0.85})
    ax.set_ylabel("start = 100", color=TEXT, fontsize=8)
    legend(ax)
    date_axis(ax, index)
    ax.set_xlim(-1, len(index) * 1.1)  # room for the end labels
    return to_png(fig)


def compare_chart(report: CompareReport, lines: dict[str, pd.Series]) -> CompareChart:
    labels = {r.symbol: r.label + ("" if r.price_only else ", total return") for r in report.series}
    gaps = " · ".join(f"vs {g.other} {g.gap_pp:+.1f}pp" for g in report.gaps[:2])
    sources = sorted({r.source + (" (stale)" if r.stale else "") for r in report.series})
    return CompareChart(
        lines=tuple(ChartLine(labels[s], line, s in PRICE_ONLY) for s, line in lines.items()),
        title=f"{report.base} since {report.since}" + (f": {gaps}" if gaps else ""),
        subtitle=f"start = 100 · each line to its own last date · source: {', '.join(sources)}",
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

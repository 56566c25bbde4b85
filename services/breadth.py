"""`/iwm breadth`: the Russell 2000's market breadth from its members (`services.members`), charted under IWM.

Divergence rule (DIVERGENCE_SESSIONS, PRICE_MOVE_PCT): over the last 20 sessions, IWM's close rising by at least
1% while the A/D line falls (more declines than advances) is a negative divergence; IWM falling by at least 1%
while the A/D line rises is a positive one; anything else is no divergence.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from services.charts import (
    BLUE,
    DOWN,
    MUTED,
    PURPLE,
    TEXT,
    TEXT_PT,
    UP,
    YELLOW,
    Renderer,
    axis_label,
    date_axis,
    few_ticks,
    header,
    new_figure,
    reference,
    to_png,
)
from services.errors import InputError
from services.market import MarketData
from services.members import WINDOWS, BreadthReport, MemberOrigin, load_member_data, member_breadth, member_data
from services.storage import Database

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PERIODS = {"3mo": 3, "6mo": 6, "1y": 12, "2y": 24, "max": None}  # chart window, months back from as_of
DIVERGENCE_SESSIONS = 20
PRICE_MOVE_PCT = 1.0
RULE = (f"Divergence: over the last {DIVERGENCE_SESSIONS} sessions IWM up ≥{PRICE_MOVE_PCT:g}% while the A/D line "
        f"fell (negative), or IWM down ≥{PRICE_MOVE_PCT:g}% while it rose (positive).")


@dataclass(frozen=True)
class BreadthAnswer:
    report: BreadthReport
    period: str
    iwm_close: float | None  # IWM's close on report.as_of (None: no bar that day)
    iwm_change_pct: float | None  # over DIVERGENCE_SESSIONS
    ad_change: int | None  # A/D line change over DIVERGENCE_SESSIONS
    divergence: str  # a plain sentence
    price_source: str
    origin: MemberOrigin | None = None  # where the member closes come from (stale, with their age, after a failure)


@dataclass(frozen=True, eq=False)
class BreadthChart:
    dates: pd.DatetimeIndex
    price: np.ndarray  # IWM close, NaN where none
    pct_above: dict[int, np.ndarray]
    ad_line: np.ndarray
    new_highs: np.ndarray
    new_lows: np.ndarray
    title: str
    subtitle: str


def divergence(close: pd.Series, ad_line: np.ndarray) -> tuple[float | None, int | None, str]:
    """(IWM % change, A/D change, the sentence) over the last DIVERGENCE_SESSIONS of `close` and `ad_line` (aligned,
    the same sessions)."""
    n = DIVERGENCE_SESSIONS
    if len(ad_line) <= n or close.iloc[[-1, -1 - n]].isna().any():
        return None, None, f"No divergence check: needs {n + 1} sessions with an IWM close."
    move = float(close.iloc[-1] / close.iloc[-1 - n] - 1) * 100
    ad = int(ad_line[-1] - ad_line[-1 - n])
    said = f"IWM {move:+.1f}% and the A/D line {ad:+,} over the last {n} sessions"
    if move >= PRICE_MOVE_PCT and ad < 0:
        return move, ad, f"⚠️ Negative divergence: {said}: the rise is carried by fewer members."
    if move <= -PRICE_MOVE_PCT and ad > 0:
        return move, ad, f"Positive divergence: {said}: most members held up while the index fell."
    return move, ad, f"No divergence: {said}."


def draw_breadth(chart: BreadthChart) -> Figure:
    fig, (price, above, ad, highs) = new_figure((1.3, 1.0, 0.8, 0.8), hspace=0.16, right=0.88)
    x = np.arange(len(chart.dates))
    price.plot(x, chart.price, color=TEXT, lw=1.4, label="IWM close")
    axis_label(price, "IWM $")
    priced = np.flatnonzero(~np.isnan(chart.price))
    ends_early = len(priced) > 0 and priced[-1] < len(x) - 1
    if ends_early:  # the price panel ends before the breadth panels: say where
        price.set_title(f"IWM close to {chart.dates[priced[-1]]:%Y-%m-%d}, breadth to {chart.dates[-1]:%Y-%m-%d}",
                        loc="left", color=YELLOW, fontsize=TEXT_PT, pad=3)
    colors = {WINDOWS[0]: YELLOW, WINDOWS[1]: BLUE}
    for n, values in chart.pct_above.items():
        above.plot(x, values, color=colors.get(n, MUTED), lw=1.3, label=f"% above {n}-day avg")
    reference(above.axhline(50, color=MUTED, lw=0.8, ls="--"))
    above.set_ylim(0, 100)
    above.set_yticks([25, 50, 75])  # none on the edges, where the next panel's ticks are
    axis_label(above, "%")
    ad.plot(x, chart.ad_line, color=PURPLE, lw=1.3, label="A/D line (cumulative)")
    axis_label(ad, "A/D")
    # a day's count as a full-width bar: one stepped polygon per series draws the same bars as `bar` at a fraction
    # of the cost (hundreds of patches were most of this chart's render time), filled by `fill_between`, whose
    # limits are numpy's (`stairs` draws the same but walks each edge as a Bezier curve in Python: 40 ms)
    edges = np.append(x - 0.5, x[-1] + 0.5) if len(x) else x
    steps = np.repeat(edges, 2)[1:-1]
    highs.fill_between(steps, np.repeat(chart.new_highs, 2), color=UP, lw=0, label="new 52-week highs")
    highs.fill_between(steps, -np.repeat(chart.new_lows, 2), color=DOWN, lw=0, label="new 52-week lows (down)")
    reference(highs.axhline(0, color=MUTED, lw=0.6))
    axis_label(highs, "highs/lows")
    for ax in (price, ad, highs):
        few_ticks(ax.yaxis, 3)
    for ax in (price, above, ad):
        ax.tick_params(labelbottom=False)
    date_axis(highs, chart.dates)
    header(fig, chart.title, chart.subtitle, reserve_in=0.2 if ends_early else 0.0)
    return fig


def render_breadth(chart: BreadthChart) -> bytes:
    return to_png(draw_breadth(chart))


def breadth_chart(a: BreadthAnswer, close: pd.Series) -> BreadthChart:
    s = a.report.series
    dates = pd.DatetimeIndex(s.dates)
    months = PERIODS[a.period]
    first = 0 if months is None else int(dates.searchsorted(dates[-1] - pd.DateOffset(months=months)))
    cut = slice(first, None)
    r = a.report
    return BreadthChart(
        dates=dates[cut], price=close.to_numpy(dtype=float)[cut],
        pct_above={n: x[cut] for n, x in s.pct_above.items()}, ad_line=s.ad_line[cut],
        new_highs=s.new_highs[cut], new_lows=s.new_lows[cut],
        title=f"Russell 2000 breadth · {a.period} to {r.as_of}",
        subtitle=f"{r.members:,} IWM members (today's list) · closes only",
    )


async def check_breadth_input(period: str, as_of: date | None, database: Database | None = None) -> None:
    """InputError for an unknown period or an as_of outside the member closes (the live ones too, with a
    `database`); quick (the member data is loaded once per process), so a command can refuse before it defers."""
    if period not in PERIODS:
        raise InputError(f"period {period!r}: choose one of {', '.join(PERIODS)}")
    if database is None:
        (await asyncio.to_thread(load_member_data)).session(as_of)
    else:
        (await member_data(database, as_of))[0].session(as_of)


async def breadth_answer(market: MarketData, renderer: Renderer, period: str = "1y",
                         as_of: date | None = None, database: Database | None = None) -> tuple[BreadthAnswer, bytes]:
    """The `/iwm breadth` answer and its chart (PNG); InputError for an unknown period or an as_of outside the
    member closes. `database` (live providers only): IWM's members from its newest archived holdings file, the
    closes extended by the live ones (services.members.member_data)."""
    await check_breadth_input(period, as_of, database)
    data, origin = await member_data(database, as_of)
    # the breadth series (a tenth of a second or two, the first time) off the event loop, beside IWM's bars
    report, bars = await asyncio.gather(asyncio.to_thread(member_breadth, data, "IWM", as_of), market.bars("IWM"))
    sessions = pd.DatetimeIndex(report.series.dates)
    close = bars.frame["close"].reindex(sessions)
    move, ad, sentence = divergence(close, report.series.ad_line)
    last = close.iloc[-1]
    answer = BreadthAnswer(report, period, None if np.isnan(last) else float(last), move, ad, sentence, bars.source,
                           origin)
    return answer, await renderer.render(render_breadth, breadth_chart(answer, close))

"""Chart rendering: matplotlib's object API on an Agg canvas (no pyplot, so it is safe in worker threads).

Every render function is synchronous and returns PNG bytes; callers run it in the render executor so the event
loop never blocks. One dark theme, 16:9, sized for Discord's embed preview.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd

from services.config import Zones

if TYPE_CHECKING:  # matplotlib itself is imported on first use: see blank_figure
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.path import Path

BG = "#2b2d31"  # Discord's dark embed background
PANEL = "#313338"
GRID = "#3f4147"
TEXT = "#dbdee1"
MUTED = "#949ba4"
UP = "#23a55a"
DOWN = "#f23f43"
BLUE = "#5865f2"
YELLOW = "#f0b232"
PURPLE = "#c27cf0"
SERIES_COLORS = [BLUE, YELLOW, UP, PURPLE, DOWN, "#00a8fc", "#eb459e"]
WIDTH_IN, HEIGHT_IN, DPI = 12.8, 7.2, 100
T = TypeVar("T")


def blank_figure() -> Figure:
    """A themed 16:9 figure on an Agg canvas. matplotlib is imported here, on first use: the bot's main process
    never draws (charts render in worker processes), so it need not pay for matplotlib at start-up."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, facecolor=BG)
    FigureCanvasAgg(fig)
    return fig


def new_figure(rows: Sequence[float] = (1.0,), sharex: bool = True,
               hspace: float = 0.06) -> tuple[Figure, list[Axes]]:
    """A themed 16:9 figure with stacked panels of the given height ratios, `hspace` apart."""
    fig = blank_figure()
    grid = fig.add_gridspec(len(rows), 1, height_ratios=list(rows), hspace=hspace,
                            left=0.06, right=0.93, top=0.92, bottom=0.07)
    axes: list[Axes] = []
    for i in range(len(rows)):
        ax = fig.add_subplot(grid[i], sharex=axes[0] if sharex and axes else None)
        style_axes(ax)
        axes.append(ax)
    return fig, axes


def style_axes(ax: Axes) -> None:
    ax.set_facecolor(PANEL)
    ax.tick_params(colors=MUTED, labelsize=9)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.yaxis.tick_right()
    ax.yaxis.set_label_position("right")
    for spine in ax.spines.values():
        spine.set_visible(False)


def title(fig: Figure, text: str, subtitle: str = "") -> None:
    fig.text(0.06, 0.955, text, color=TEXT, fontsize=15, fontweight="bold", va="center")
    if subtitle:
        fig.text(0.93, 0.955, subtitle, color=MUTED, fontsize=9, va="center", ha="right")


def legend(ax: Axes, **kwargs: object) -> None:
    leg = ax.legend(loc="upper left", fontsize=8, frameon=False, labelcolor=TEXT, ncols=4, **kwargs)
    leg.set_zorder(10)


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # zlib level 3: a third of the default's encode time for a few percent more bytes.
    fig.savefig(buf, format="png", facecolor=fig.get_facecolor(), pil_kwargs={"compress_level": 3})
    return buf.getvalue()


def date_axis(ax: Axes, index: pd.DatetimeIndex) -> None:
    """Label an integer x axis (one slot per trading day, no weekend gaps) with dates."""
    n = len(index)
    ticks = np.linspace(0, n - 1, num=min(8, n), dtype=int)
    span_days = (index[-1] - index[0]).days if n > 1 else 0
    fmt = "%b %d" if span_days < 200 else "%b %Y"
    ax.set_xticks(ticks, [index[i].strftime(fmt) for i in ticks])
    ax.set_xlim(-1, n)


def _compound(segments: np.ndarray, closed: bool) -> Path:
    """Many polygons or line segments (n, k, 2) as one Path: one artist instead of n."""
    from matplotlib.path import Path

    n, k, _ = segments.shape
    codes = np.full((n, k + closed), Path.LINETO, dtype=Path.code_type)
    codes[:, 0] = Path.MOVETO
    if closed:
        codes[:, -1] = Path.CLOSEPOLY
        segments = np.concatenate([segments, segments[:, :1]], axis=1)
    return Path(segments.reshape(-1, 2), codes.ravel())


def candles(ax: Axes, frame: pd.DataFrame) -> None:
    """OHLC candles drawn as four compound paths (up/down bodies and wicks), not one artist per bar."""
    from matplotlib.patches import PathPatch

    x = np.arange(len(frame), dtype=float)
    o, h, low, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    width = 0.35 if len(frame) < 400 else 0.45
    bottom, top = np.minimum(o, c), np.maximum(o, c)
    top = np.where(top - bottom < 1e-9, bottom + (h - low) * 0.01 + 1e-6, top)
    for mask, colour in ((c >= o, UP), (c < o, DOWN)):
        if not mask.any():
            continue
        xm, b, t = x[mask], bottom[mask], top[mask]
        bodies = np.stack([np.column_stack(p) for p in ((xm - width, b), (xm - width, t), (xm + width, t),
                                                          (xm + width, b))], axis=1)
        wicks = np.stack([np.column_stack((xm, low[mask])), np.column_stack((xm, h[mask]))], axis=1)
        ax.add_artist(PathPatch(_compound(wicks, closed=False), edgecolor=colour, fill=False, linewidth=0.8))
        ax.add_artist(PathPatch(_compound(bodies, closed=True), facecolor=colour, edgecolor=colour, linewidth=0.3))
    ax.update_datalim(np.column_stack([np.r_[x, x], np.r_[low, h]]))
    ax.autoscale_view()


@dataclass(frozen=True)
class LevelsChart:
    """What the levels chart needs, already cut to the chart window (so the render is pure drawing)."""

    frame: pd.DataFrame  # IWM bars in the window: open, high, low, close, volume
    sma50: pd.Series
    sma200: pd.Series
    rs: pd.Series  # IWM/SPY ratio in the window (may be empty)
    zones: Zones
    ath_close: float
    title: str
    subtitle: str
    highlight: float | None = None  # a level to mark (an alert's crossed level); None draws nothing extra
    rs_note: str = ""  # said on the RS panel when the ratio ends before the last bar, e.g. "IWM/SPY to 2026-08-21 ..."


def render_levels(chart: LevelsChart) -> bytes:
    from matplotlib.ticker import MaxNLocator

    frame = chart.frame
    # Panels are aligned by hand rather than with sharex, and carry few ticks: tick objects and their labels
    # were the largest cost of a render after the candles themselves.
    fig, (ax, low) = new_figure((3.2, 1.0), sharex=False)
    title(fig, chart.title, chart.subtitle)
    z = chart.zones
    ax.axhspan(z.resistance_low, z.resistance_high, color=DOWN, alpha=0.16, lw=0, label="resistance zone")
    ax.axhspan(z.entry_low, z.entry_high, color=UP, alpha=0.13, lw=0, label="entry zone")
    ax.axhline(z.support, color=YELLOW, lw=1.0, ls="--", label="support")
    ax.axhline(chart.ath_close, color=PURPLE, lw=0.9, ls=":", label=f"closing high {chart.ath_close:.2f}")
    if {"open", "high", "low"} <= set(frame.columns) and frame[["open", "high", "low"]].notna().all().all():
        candles(ax, frame)
    else:
        ax.plot(np.arange(len(frame)), frame["close"].to_numpy(), color=TEXT, lw=1.2, label="close")
    x = np.arange(len(frame))
    ax.plot(x, chart.sma50.reindex(frame.index).to_numpy(), color=BLUE, lw=1.1, label="50-day avg")
    ax.plot(x, chart.sma200.reindex(frame.index).to_numpy(), color=YELLOW, lw=1.1, label="200-day avg")
    lo, hi = float(frame["low"].min()), float(frame["high"].max())
    if chart.highlight is not None:
        ax.axhline(chart.highlight, color=TEXT, lw=1.6, label=f"level {chart.highlight:.2f}")
        lo, hi = min(lo, chart.highlight), max(hi, chart.highlight)
    pad = (hi - lo) * 0.06
    ax.set_ylim(min(lo, z.support if z.support > lo * 0.85 else lo) - pad,
                max(hi, z.resistance_high if z.resistance_high < hi * 1.15 else hi) + pad)
    legend(ax)
    ax.set_xticks([])
    ax.set_xlim(-1, len(frame))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=7))
    low.yaxis.set_major_locator(MaxNLocator(nbins=3))
    rs = chart.rs.reindex(frame.index)
    if rs.notna().sum() > 1:
        low.plot(x, rs.to_numpy(), color=BLUE, lw=1.1)
        low.set_ylabel("IWM / SPY", color=MUTED, fontsize=8)
        if chart.rs_note:
            low.text(0.005, 0.92, chart.rs_note, transform=low.transAxes, color=YELLOW, fontsize=8, va="top")
    else:
        low.vlines(x, 0, frame["volume"].fillna(0).to_numpy() / 1e6, color=MUTED, linewidth=2)
        low.set_ylabel("volume (M)", color=MUTED, fontsize=8)
    date_axis(low, pd.DatetimeIndex(frame.index))
    return to_png(fig)


# Imported once by the forkserver, so every render worker forked from it starts warm.
WORKER_PRELOAD = ["matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.dates", "matplotlib.patches",
                  "services.charts"]


def _ready() -> bool:
    return True


class Renderer:
    """Runs render functions (module-level, taking a picklable spec) off the event loop, `workers` at a time.

    The bot renders in worker processes: matplotlib holds the GIL for long stretches, so render threads stalled
    the event loop for 100-180 ms while 20 charts rendered (bench: event_loop). Workers are forked from a
    forkserver that has already imported this module, so starting one is cheap. A one-shot console answer
    uses a thread instead, which starts instantly.
    """

    def __init__(self, workers: int = 2, *, processes: bool = False) -> None:
        self._executor: Executor
        if processes:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(WORKER_PRELOAD)
            self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        else:
            self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
        self.workers = workers

    async def render(self, fn: Callable[[T], bytes], spec: T) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, spec)

    async def warm_up(self) -> None:
        """Start the workers now rather than on the first member's command."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _ready) for _ in range(self.workers)))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

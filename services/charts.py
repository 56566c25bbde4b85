"""Chart rendering: matplotlib's object API on an Agg canvas (no pyplot, so it is safe in worker threads).

Every render function is synchronous and returns PNG bytes; callers run it through the Renderer
(services.renderer) so the event loop never blocks. One dark theme, 16:9, sized for Discord's embed preview.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd

from services.config import Zones
from services.renderer import Renderer as Renderer  # the render pool, where every chart is drawn

if TYPE_CHECKING:  # matplotlib itself is imported on first use: see blank_figure
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend
    from matplotlib.path import Path
    from matplotlib.text import Text

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
CYAN = "#00a8fc"
PINK = "#eb459e"
ORANGE = "#f47b20"
TEAL = "#1abc9c"
SERIES_COLORS = [BLUE, YELLOW, UP, PURPLE, DOWN, CYAN, PINK]
# 1280x720 px from an 8-inch-wide figure, so a point of text keeps its share of the width: Discord shows a chart
# about 520 px wide inline, where TEXT_PT is 9 px (its em; tests/test_chart_layout.py checks every text).
WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 160
TITLE_PT, TEXT_PT = 13.0, 10.0
LEFT, RIGHT, BOTTOM = 0.02, 0.915, 0.075  # panel edges (figure fraction); y ticks are on the right
GAP_IN = 0.06  # between header rows, and from the header to the panels
T = TypeVar("T")


def blank_figure() -> Figure:
    """A themed 16:9 figure on an Agg canvas. matplotlib is imported here, on first use: the bot's main process
    never draws (charts render in worker processes), so it need not pay for matplotlib at start-up."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, facecolor=BG)
    FigureCanvasAgg(fig)
    return fig


def new_figure(rows: Sequence[float] = (1.0,), sharex: bool = True, hspace: float = 0.06,
               right: float = RIGHT) -> tuple[Figure, list[Axes]]:
    """A themed 16:9 figure with stacked panels of the given height ratios, `hspace` apart; `header` later moves
    their top below the title, subtitle and legend."""
    fig = blank_figure()
    grid = fig.add_gridspec(len(rows), 1, height_ratios=list(rows), hspace=hspace,
                            left=LEFT, right=right, top=0.8, bottom=BOTTOM)
    axes: list[Axes] = []
    for i in range(len(rows)):
        ax = fig.add_subplot(grid[i], sharex=axes[0] if sharex and axes else None)
        style_axes(ax)
        axes.append(ax)
    return fig, axes


def style_axes(ax: Axes) -> None:
    ax.set_facecolor(PANEL)
    ax.tick_params(colors=MUTED, labelsize=TEXT_PT)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.yaxis.tick_right()
    ax.yaxis.set_label_position("right")
    for spine in ax.spines.values():
        spine.set_visible(False)


def few_ticks(axis: Axis, n: int) -> None:
    """At most `n` + 1 round ticks on `axis`."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=n))


def axis_label(ax: Axes, text: str) -> None:
    ax.set_ylabel(text, color=MUTED, fontsize=TEXT_PT)


def header(fig: Figure, title: str, subtitle: str = "", handles: Sequence[Artist] | None = None,
           reserve_in: float = 0.0) -> None:
    """The title, the subtitle under it and one legend for every panel under that, all above the panels (never on
    the data); then the panels' top moves just below them, `reserve_in` inches lower (room for labels drawn
    above a panel). `handles`: the legend's entries; default every labelled artist of every panel, in order."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    height = fig.get_window_extent().height
    gap = GAP_IN / HEIGHT_IN

    def below(artist: Artist) -> float:
        return float(artist.get_window_extent(renderer).y0 / height) - gap

    def fitted(artist: Text) -> Text:
        """Too wide for the figure: broken into lines at the " · " separators."""
        words = artist.get_text().split(" · ")
        lines = [words[0]]
        for word in words[1:]:
            artist.set_text(" · ".join([lines[-1], word]))
            if artist.get_window_extent(renderer).x1 > fig.get_window_extent().width * (1 - LEFT):
                lines.append(word)
            else:
                lines[-1] = artist.get_text()
        artist.set_text(" ·\n".join(lines))
        return artist

    y = below(fitted(fig.text(LEFT, 1 - 0.07 / HEIGHT_IN, title, color=TEXT, fontsize=TITLE_PT,
                              fontweight="bold", va="top")))
    if subtitle:
        y = below(fitted(fig.text(LEFT, y, subtitle, color=MUTED, fontsize=TEXT_PT, va="top")))
    if handles is None:
        found: dict[str, Artist] = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                found.setdefault(label, handle)
        handles = list(found.values())
    if handles:
        def legend(ncols: int) -> Legend:
            return fig.legend(handles=list(handles), loc="upper left", bbox_to_anchor=(LEFT, y), frameon=False,
                              fontsize=TEXT_PT, labelcolor=TEXT, ncols=ncols, borderaxespad=0, borderpad=0,
                              handlelength=LEGEND_HANDLE, handletextpad=LEGEND_PAD, columnspacing=LEGEND_SPACING)

        leg = legend(len(handles))
        ncols = legend_columns(leg, renderer, (RIGHT - LEFT) * fig.get_window_extent().width)
        if ncols < len(handles):
            leg.remove()
            leg = legend(ncols)
        y = below(leg)
    panel_edges(fig, top=y - reserve_in / HEIGHT_IN)


LEGEND_HANDLE, LEGEND_PAD, LEGEND_SPACING = 1.5, 0.5, 1.2  # in font sizes: a handle, handle to text, columns


def legend_columns(leg: Legend, renderer: RendererBase, room: float) -> int:
    """The most columns (fewest rows) in which `leg`'s entries fit `room` px, worked out from one row's text
    widths as matplotlib lays out columns (np.array_split of the entries, each column as wide as its widest):
    building and measuring a legend for each try was a fifth of a levels chart's render."""
    em = TEXT_PT * DPI / 72  # px, as Agg converts points on every chart (all are drawn at DPI)
    widths = np.array([text.get_window_extent(renderer).width + (LEGEND_HANDLE + LEGEND_PAD) * em
                       for text in leg.get_texts()])
    for ncols in range(len(widths), 1, -1):
        columns = [c for c in np.array_split(widths, ncols) if len(c)]
        if sum(c.max() for c in columns) + LEGEND_SPACING * em * (len(columns) - 1) <= room:
            return ncols
    return 1


def panel_edges(fig: Figure, **edges: float) -> None:
    """Moves every panel's grid edges (`left`, `right`, `top`, `bottom`, figure fraction) and the panels with it
    (GridSpec.update alone moves only pyplot's figures)."""
    grids = {id(g): g for g in (ax.get_gridspec() for ax in fig.axes) if g is not None}
    for grid in grids.values():
        grid.update(**edges)
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if spec is not None:
            ax.set_position(spec.get_position(fig))


def draw_empty(title: str, subtitle: str, message: str) -> Figure:
    """A chart with nothing to draw yet says so, instead of drawing empty axes."""
    fig = blank_figure()
    header(fig, title, subtitle)
    fig.text(0.5, 0.45, message, color=MUTED, fontsize=TITLE_PT, ha="center", va="center")
    return fig


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # zlib level 1: a tenth of a levels chart's render less than level 3 (itself a third of the default's encode
    # time), for 3% more bytes (133 -> 137 kB, far under Discord's upload limit).
    fig.savefig(buf, format="png", facecolor=fig.get_facecolor(), pil_kwargs={"compress_level": 1})
    return buf.getvalue()


# Tick steps, finest first: (unit, every k units). Ticks fall on the first slot of each unit whose number is a
# multiple of k, so steps are even (every 3 months: Jan, Apr, Jul, Oct).
TICK_STEPS = (("D", 1), ("D", 2), ("D", 3), ("W", 1), ("W", 2), ("M", 1), ("M", 2), ("M", 3), ("M", 6),
              ("Y", 1), ("Y", 2), ("Y", 5), ("Y", 10))


def _unit_numbers(index: pd.DatetimeIndex, unit: str) -> np.ndarray:
    days = (index.normalize() - pd.Timestamp("1970-01-05")).days.to_numpy()  # 1970-01-05 was a Monday
    if unit == "D":
        return days
    if unit == "W":
        return days // 7
    if unit == "M":
        return (index.year * 12 + index.month - 1).to_numpy()
    return index.year.to_numpy()


def date_ticks(index: pd.DatetimeIndex, max_ticks: int = 7) -> tuple[list[int], list[str]]:
    """Tick slots and labels for an axis with one slot per date of `index` (sorted): the finest even step with at
    most `max_ticks` ticks. Labels are "6 Jul" (days, weeks), "Jul" (months) or "2026" (years); a label carries
    the year on the first tick and wherever the year changes, so no day number reads as a year."""
    if len(index) == 0:
        return [], []
    for unit, k in TICK_STEPS:
        numbers = _unit_numbers(index, unit)
        starts = np.flatnonzero(np.r_[True, numbers[1:] != numbers[:-1]])
        if unit != "D" and len(starts) > 1:
            starts = starts[1:]  # the first slot starts a unit only by chance of the window: label it by data
        ticks = [int(i) for i in starts if numbers[i] % k == 0]
        if len(ticks) <= max_ticks:
            break
    labels, year = [], None
    for i in ticks:
        day = index[i]
        text = f"{day:%Y}" if unit == "Y" else f"{day:%b}" if unit == "M" else f"{day.day} {day:%b}"
        if unit != "Y" and day.year != year:
            text += f" {day:%Y}"
        labels.append(text)
        year = day.year
    return ticks, labels


def date_axis(ax: Axes, index: pd.DatetimeIndex, right_margin: float = 0.0) -> None:
    """Label an integer x axis (one slot per date, e.g. trading days without weekend gaps) with dates;
    `right_margin`: empty slots after the last one, as a share of them."""
    ticks, labels = date_ticks(index)
    ax.set_xticks(ticks, labels)
    n = len(index)
    ax.set_xlim(-1, n + max(0.0, n * right_margin))


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


def reference(artist: T) -> T:
    """Marks a reference drawn across the data (a level, a zone, a zero line): not data, so a label may sit on
    it (tests/test_chart_layout.py checks that no text covers anything else drawn in a panel)."""
    artist.set_gid("reference")  # type: ignore[attr-defined]
    return artist


def edge_labels(ax: Axes, items: Sequence[tuple[str, str]], top: bool) -> None:
    """Labelled arrows for what lies beyond the panel's top (or bottom) edge: one row of (text, colour) at the
    left of that edge, inside the strip `draw_levels` keeps clear of the data."""
    from matplotlib.offsetbox import AnchoredOffsetbox, HPacker, TextArea

    arrow = "▲" if top else "▼"
    parts: list[Artist] = [TextArea(f"{arrow} {text}", textprops={"color": colour, "fontsize": TEXT_PT})
                           for text, colour in items]
    box = AnchoredOffsetbox("upper left" if top else "lower left", child=HPacker(children=parts, sep=12, pad=0),
                            frameon=False, pad=0.15, borderpad=0.2)
    ax.add_artist(box)


@dataclass(frozen=True)
class LevelsChart:
    """What the levels chart needs, already cut to the chart window (so the render is pure drawing)."""

    frame: pd.DataFrame  # IWM bars in the window: open, high, low, close, volume (one row per candle)
    sma50: pd.Series
    sma200: pd.Series
    rs: pd.Series  # IWM/SPY ratio in the window (may be empty)
    zones: Zones
    ath_close: float
    title: str
    subtitle: str
    highlight: float | None = None  # a level to mark (an alert's crossed level); None draws nothing extra
    rs_note: str = ""  # said on the RS panel when the ratio ends before the last bar, e.g. "IWM/SPY to 2026-08-21 ..."


# A level further from the candles than this share of their range is not drawn (it would squash them) but
# labelled at the edge it lies beyond.
LEVEL_REACH = 0.25


def _levels(chart: LevelsChart) -> list[tuple[str, float, float, str]]:
    """(name, low, high, colour) of each level: zones span low..high, lines have low == high."""
    z = chart.zones
    levels = [(f"resistance {z.resistance_low:.2f}–{z.resistance_high:.2f}", z.resistance_low, z.resistance_high,
               ORANGE),
              (f"entry {z.entry_low:.2f}–{z.entry_high:.2f}", z.entry_low, z.entry_high, TEAL),
              (f"support {z.support:.2f}", z.support, z.support, YELLOW),
              (f"closing high {chart.ath_close:.2f}", chart.ath_close, chart.ath_close, PURPLE)]
    if chart.highlight is not None:
        levels.append((f"alert level {chart.highlight:.2f}", chart.highlight, chart.highlight, TEXT))
    return levels


def draw_levels(chart: LevelsChart) -> Figure:
    frame = chart.frame
    # Panels are aligned by hand rather than with sharex, and carry few ticks: tick objects and their labels
    # were the largest cost of a render after the candles themselves.
    fig, (ax, low) = new_figure((3.0, 1.0), sharex=False, hspace=0.14, right=0.9)
    x = np.arange(len(frame))
    sma50, sma200 = (s.reindex(frame.index).to_numpy(dtype=float) for s in (chart.sma50, chart.sma200))
    if {"open", "high", "low"} <= set(frame.columns) and frame[["open", "high", "low"]].notna().all().all():
        candles(ax, frame)
        lo, hi = float(frame["low"].min()), float(frame["high"].max())
    else:
        ax.plot(x, frame["close"].to_numpy(), color=TEXT, lw=1.2, label="close")
        lo, hi = float(frame["close"].min()), float(frame["close"].max())
    ax.plot(x, sma50, color=CYAN, lw=1.1, label="50-day avg")
    ax.plot(x, sma200, color=PINK, lw=1.1, label="200-day avg")
    drawn = np.concatenate([sma50, sma200])
    drawn = drawn[~np.isnan(drawn)]
    if len(drawn):
        lo, hi = min(lo, float(drawn.min())), max(hi, float(drawn.max()))
    if chart.highlight is not None:
        lo, hi = min(lo, chart.highlight), max(hi, chart.highlight)
    reach_lo, reach_hi = lo - (hi - lo) * LEVEL_REACH, hi + (hi - lo) * LEVEL_REACH
    above: list[tuple[str, str]] = []
    under: list[tuple[str, str]] = []
    shown = []
    for name, a, b, colour in _levels(chart):
        if b < reach_lo:
            under.append((name, colour))
        elif a > reach_hi:
            above.append((name, colour))
        else:
            shown.append((name, a, b, colour))
    for _, a, b, _ in shown:
        lo, hi = min(lo, a), max(hi, b)
    n = len(frame)
    margin = 0.03  # the last candle (an alert's event) sits clear of the right edge
    # On an alert's chart the levels stop short of the event's candle, which stands clear of every line and label.
    end = 1.0 if chart.highlight is None else (n - 1.6 + 1) / (n * (1 + margin) + 1)
    for name, a, b, colour in shown:
        if a < b:
            reference(ax.axhspan(a, b, xmax=end, color=colour, alpha=0.16, lw=0, label=name))
        elif colour == TEXT:
            reference(ax.axhline(a, xmax=end, color=colour, lw=1.6, label=name))
        else:
            reference(ax.axhline(a, xmax=end, color=colour, lw=1.0, ls="--" if colour == YELLOW else ":", label=name))
    # Head room for the edge labels: the data never reaches a strip that carries one.
    span = hi - lo or abs(hi) * 0.01 or 1.0
    strip_top, strip_bottom = (0.1 if above else 0.04), (0.1 if under else 0.04)
    scale = span / (1 - strip_top - strip_bottom)
    ax.set_ylim(lo - strip_bottom * scale, hi + strip_top * scale)
    for items, top in ((above, True), (under, False)):
        if items:
            edge_labels(ax, items, top)
    ax.set_xticks([])
    ax.set_xlim(-1, n * (1 + margin))
    few_ticks(ax.yaxis, 6)
    few_ticks(low.yaxis, 3)
    rs = chart.rs.reindex(frame.index)
    if rs.notna().sum() > 1:
        low.plot(x, rs.to_numpy(), color=BLUE, lw=1.1)
        axis_label(low, "IWM/SPY")
        note = chart.rs_note or "IWM/SPY relative strength (total return)"
        # y given: matplotlib need not measure the panel's tick labels to place the title (no ticks on top)
        low.set_title(note, loc="left", color=YELLOW if chart.rs_note else MUTED, fontsize=TEXT_PT, pad=3, y=1.0)
    else:
        low.vlines(x, 0, frame["volume"].fillna(0).to_numpy() / 1e6, color=MUTED, linewidth=2)
        axis_label(low, "volume (M)")
    date_axis(low, pd.DatetimeIndex(frame.index), margin)
    header(fig, chart.title, chart.subtitle)
    return fig


def render_levels(chart: LevelsChart) -> bytes:
    return to_png(draw_levels(chart))

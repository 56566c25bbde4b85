"""The /iwm rates chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from services.charts import (
    BLUE,
    CYAN,
    DOWN,
    MUTED,
    ORANGE,
    PINK,
    PURPLE,
    TEXT,
    TEXT_PT,
    UP,
    YELLOW,
    axis_label,
    few_ticks,
    header,
    new_figure,
    panel_edges,
    reference,
    style_axes,
    to_png,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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


def draw_rates(chart: RatesChart) -> Figure:
    import matplotlib.dates as mdates  # on first use, like everything matplotlib (services.charts.blank_figure)

    fig, (ax, curve) = new_figure((2.0, 1.0), hspace=0.2, right=0.9)
    panel_edges(fig, left=0.09)  # the ratio's ticks on the left
    fed_end, ratio_end = chart.fed_funds.index[-1], chart.ratio.index[-1]
    ax.step(chart.fed_funds.index, chart.fed_funds.to_numpy(), where="post", color=YELLOW, lw=1.2,
            label=f"fed funds % (right), to {fed_end:%Y-%m}")
    if not chart.target.empty:
        ax.fill_between(chart.target.index, chart.target["low"].to_numpy(), chart.target["high"].to_numpy(),
                        step="post", color=ORANGE, alpha=0.35, lw=0, label="target range")
    axis_label(ax, "fed funds %")
    ax.set_ylim(0, chart.fed_funds.max() * 1.05)
    few_ticks(ax.yaxis, 4)
    other = _twin(ax)
    other.plot(chart.ratio.index, chart.ratio.to_numpy(), color=BLUE, lw=1.0,
               label=f"IWM/SPY (left), to {ratio_end:%Y-%m-%d}")
    axis_label(other, "IWM/SPY total return")
    few_ticks(other.yaxis, 4)
    for i, cut in enumerate(chart.cuts):
        for axes in (ax, curve):
            reference(axes.axvline(pd.Timestamp(cut), color=TEXT, lw=0.8, ls="--", alpha=0.7,
                                   label="first cut (decision day)" if i == 0 and axes is ax else None))
        # Above the panel, off the data.
        ax.annotate(f"{cut:%Y-%m}", (pd.Timestamp(cut), 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", color=TEXT,
                    fontsize=TEXT_PT)
    spread = (chart.dgs10 - chart.dgs2).dropna()
    curve.plot(chart.dgs2.index, chart.dgs2.to_numpy(), color=PINK, lw=0.8, label="2-year %")
    curve.plot(chart.dgs10.index, chart.dgs10.to_numpy(), color=CYAN, lw=0.8, label="10-year %")
    curve.plot(spread.index, spread.to_numpy(), color=PURPLE, lw=1.1, label="2s10s spread")
    curve.fill_between(spread.index, spread.to_numpy(), 0, where=spread.to_numpy() < 0, color=DOWN, alpha=0.4,
                       lw=0, label="inverted")
    curve.fill_between(spread.index, spread.to_numpy(), 0, where=spread.to_numpy() >= 0, color=UP, alpha=0.2, lw=0)
    reference(curve.axhline(0, color=MUTED, lw=0.6))
    axis_label(curve, "yields %")
    curve.yaxis.tick_right()
    curve.yaxis.set_label_position("right")
    curve.set_ylim(min(0.0, spread.min()) - 0.3, max(chart.dgs2.max(), chart.dgs10.max()) * 1.05)
    few_ticks(curve.yaxis, 3)
    curve.set_title(f"Treasury yields, to {chart.dgs10.dropna().index[-1]:%Y-%m-%d}", loc="left", color=MUTED,
                    fontsize=TEXT_PT, pad=3)
    curve.set_xlim(chart.ratio.index[0] - pd.DateOffset(months=3), chart.ratio.index[-1] + pd.DateOffset(months=3))
    curve.xaxis.set_major_locator(mdates.YearLocator(4))
    curve.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    ax.tick_params(labelbottom=False)
    lines, extra = ax.get_legend_handles_labels(), other.get_legend_handles_labels()
    header(fig, chart.title, chart.subtitle, handles=[*lines[0], *extra[0], *curve.get_legend_handles_labels()[0]],
           reserve_in=0.2)
    return fig


def render_rates(chart: RatesChart) -> bytes:
    return to_png(draw_rates(chart))


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



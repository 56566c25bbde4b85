"""The /iwm rates chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from services.charts import BLUE, DOWN, MUTED, TEXT, UP, YELLOW, legend, new_figure, style_axes, title, to_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes


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



"""`/iwm sentiment`: a guild's poll results against AAII's survey (its long-run averages and the same weeks), and
its chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from services.charts import (
    BLUE,
    BOTTOM,
    CYAN,
    DOWN,
    LEFT,
    MUTED,
    PINK,
    PURPLE,
    TEXT,
    TEXT_PT,
    UP,
    YELLOW,
    Renderer,
    axis_label,
    date_axis,
    draw_empty,
    header,
    new_figure,
    panel_edges,
    reference,
    to_png,
)
from services.errors import InputError, is_whole
from services.sentiment._aaii import AaiiSurvey, AaiiWeek, bundled_survey, monday, weeks_beside
from services.sentiment._polls import MIN_VOTES, Percentages, PollResult
from services.sentiment._store import one_row, poll_result
from services.sql import Connection
from services.storage import Database
from services.timefmt import iso_utc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_WEEKS = 520


@dataclass(frozen=True)
class SentimentReport:
    guild_id: int
    weeks: int
    since: datetime
    latest: PollResult | None  # the newest closed poll
    current: PollResult | None  # the newest open poll, live tally from the log
    history: tuple[PollResult, ...]  # closed polls created in the window, oldest first
    average: Percentages | None  # mean of the window's polls with enough votes (AAII averages weekly results)
    polls_counted: int  # polls in `average`
    survey: AaiiSurvey
    min_votes: int = MIN_VOTES

    @property
    def aaii(self) -> Percentages:
        """AAII's long-run averages, computed from the survey."""
        return self.survey.averages

    @property
    def aaii_latest(self) -> AaiiWeek:
        return self.survey.latest

    @property
    def aaii_source(self) -> str:
        """The survey's source and span, for footers: every AAII figure is dated by it."""
        return f"{self.survey.source}, {self.survey.span}"

    @property
    def aaii_weeks(self) -> tuple[AaiiWeek | None, ...]:
        """AAII's reading in the week of each poll in `history` (None where the survey has none)."""
        return weeks_beside(self.survey, [r.poll.created_at for r in self.history])

    @property
    def aaii_note(self) -> str | None:
        """Says so when the survey ends before the latest poll's week (those polls have no AAII week beside them)."""
        last = self.survey.latest.day
        polls = self.history or ((self.latest,) if self.latest else ())
        later = [r.poll.created_at for r in polls if monday(r.poll.created_at) > last]
        if not later:
            return None
        n = len(later)
        return f"AAII's survey ends {last}: no AAII week beside {n} poll{'s' * (n > 1)} from {min(later):%Y-%m-%d} on"

    @property
    def vs_aaii(self) -> Percentages | None:
        """The latest result minus the AAII averages, in percentage points (None without enough votes)."""
        pct = self.latest.percentages if self.latest else None
        if pct is None:
            return None
        return Percentages(pct.bullish - self.aaii.bullish, pct.neutral - self.aaii.neutral,
                           pct.bearish - self.aaii.bearish)

    @property
    def latest_text(self) -> str:
        """One line on the latest result, or why there are no percentages."""
        if self.latest is None:
            return "no closed poll yet"
        pct = self.latest.percentages
        if pct is None:
            return f"not enough votes ({self.latest.tally.total}; at least {self.min_votes} needed)"
        return (f"bullish {pct.bullish:.1f}%, neutral {pct.neutral:.1f}%, bearish {pct.bearish:.1f}%, "
                f"spread {pct.spread:+.1f} (AAII average {self.aaii.spread:+.1f}) from {self.latest.tally.total} "
                "votes")


@dataclass(frozen=True)
class SentimentChart:
    days: tuple[datetime, ...]  # poll creation times, oldest first
    spreads: tuple[float | None, ...]  # None: not enough votes
    bullish: tuple[float | None, ...]
    bearish: tuple[float | None, ...]
    aaii_spreads: tuple[float | None, ...]  # AAII's reading in each poll's week; None: the survey has none
    aaii_bullish: tuple[float | None, ...]
    aaii_bearish: tuple[float | None, ...]
    aaii_average: Percentages  # long-run
    title: str
    subtitle: str
    source: str  # AAII's source and span, under the chart
    note: str | None  # e.g. the survey ends before the polls


def _array(values: tuple[float | None, ...]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def draw_sentiment(chart: SentimentChart) -> Figure:
    if not chart.days:
        return draw_empty(chart.title, chart.subtitle, "No closed polls in this window yet")
    fig, (ax, low) = new_figure((2.0, 1.0), hspace=0.08)
    panel_edges(fig, bottom=BOTTOM + 0.075)  # two lines of source under the dates
    fig.text(LEFT, 0.01, chart.source, color=MUTED, fontsize=TEXT_PT, va="bottom", wrap=True)
    avg = chart.aaii_average
    x = np.arange(len(chart.days))
    spread, aaii = _array(chart.spreads), _array(chart.aaii_spreads)
    ok, seen = ~np.isnan(spread), ~np.isnan(aaii)
    reference(ax.axhline(0, color=MUTED, lw=0.8))
    reference(ax.axhline(avg.spread, color=YELLOW, lw=1.0, ls="--", label=f"AAII long-run average {avg.spread:+.1f}"))
    ax.bar(x[ok], spread[ok], color=BLUE, width=0.7, alpha=0.85, label="server: bull-bear spread")
    if ok.sum() > 1:
        ax.plot(x[ok], spread[ok], color=TEXT, lw=0.9, marker="o", ms=3)
    if seen.any():
        ax.plot(x, aaii, color=PURPLE, lw=1.4, marker="D", ms=4, label="AAII: spread, same week", zorder=6)
    if (~ok).any():
        ax.scatter(x[~ok], np.zeros((~ok).sum()), marker="x", color=MUTED, s=30, label=f"fewer than {MIN_VOTES} votes",
                   zorder=5)
    extremes = [abs(v) for v in (*spread[ok], *aaii[seen])]
    top = max(20.0, max(extremes, default=0.0) * 1.1, abs(avg.spread) * 1.3)
    ax.set_ylim(-top, top)
    axis_label(ax, "spread (points)")
    if chart.note:  # above the panel, off the data
        ax.set_title(chart.note, loc="left", color=YELLOW, fontsize=TEXT_PT, pad=3)
    ax.tick_params(labelbottom=False)
    low.plot(x, _array(chart.bullish), color=UP, lw=1.2, marker="o", ms=3, label="server bullish %")
    low.plot(x, _array(chart.bearish), color=DOWN, lw=1.2, marker="o", ms=3, label="server bearish %")
    reference(low.axhline(avg.bullish, color=CYAN, lw=0.8, ls=":"))
    reference(low.axhline(avg.bearish, color=PINK, lw=0.8, ls=":"))
    if seen.any():
        low.plot(x, _array(chart.aaii_bullish), color=CYAN, lw=1.0, ls="--", marker="D", ms=3,
                 label=f"AAII bullish % (dotted: long-run {avg.bullish:.1f})")
        low.plot(x, _array(chart.aaii_bearish), color=PINK, lw=1.0, ls="--", marker="D", ms=3,
                 label=f"AAII bearish % (dotted: long-run {avg.bearish:.1f})")
    low.set_ylim(0, 100)
    low.set_yticks([0, 50, 100])
    axis_label(low, "share %")
    date_axis(low, pd.DatetimeIndex([d.replace(tzinfo=None) for d in chart.days]))
    header(fig, chart.title, chart.subtitle, reserve_in=0.2 if chart.note else 0.0)
    return fig


def render_sentiment(chart: SentimentChart) -> bytes:
    return to_png(draw_sentiment(chart))


def compute_sentiment(d: Connection, guild_id: int, weeks: int, now: datetime,
                      survey: AaiiSurvey) -> SentimentReport:
    """The report for one guild (runs on the database thread)."""
    since = now - timedelta(weeks=weeks)
    closed = [poll_result(d, r) for r in d.query(
        "SELECT * FROM sentiment_polls WHERE guild_id = ? AND status = 'closed' AND created_at >= ? "
        "ORDER BY created_at, message_id", [guild_id, iso_utc(since)])]
    latest_row = one_row(d, "SELECT * FROM sentiment_polls WHERE guild_id = ? AND status = 'closed' "
                         "ORDER BY created_at DESC, message_id DESC LIMIT 1", [guild_id])
    open_row = one_row(d, "SELECT * FROM sentiment_polls WHERE guild_id = ? AND status = 'open' "
                       "ORDER BY created_at DESC, message_id DESC LIMIT 1", [guild_id])
    counted = [p for p in (r.percentages for r in closed) if p is not None]
    average = None
    if counted:
        average = Percentages(*(float(np.mean([getattr(p, k) for p in counted]))
                                for k in ("bullish", "neutral", "bearish")))
    return SentimentReport(
        guild_id=guild_id, weeks=weeks, since=since,
        latest=poll_result(d, latest_row) if latest_row else None,
        current=poll_result(d, open_row) if open_row else None,
        history=tuple(closed), average=average, polls_counted=len(counted), survey=survey,
    )


def validate_weeks(weeks: int) -> int:
    if not is_whole(weeks, 1, MAX_WEEKS):
        raise InputError(f"weeks {weeks!r}: choose 1 to {MAX_WEEKS}")
    return weeks


async def sentiment_answer(
    db: Database, renderer: Renderer, guild_id: int, weeks: int = 52, now: datetime | None = None, *,
    survey: AaiiSurvey | None = None,
) -> tuple[SentimentReport, bytes]:
    """The `/iwm sentiment` report for this guild's polls and its chart (PNG). `survey`: AAII's survey to compare
    with (services.sentiment.aaii_survey); default the bundled one."""
    weeks = validate_weeks(weeks)
    now = now or datetime.now(UTC)
    survey = survey or bundled_survey()
    report = await db.run(lambda d: compute_sentiment(d, guild_id, weeks, now, survey))
    pcts = [r.percentages for r in report.history]
    aaii = [w.shares if w else None for w in report.aaii_weeks]
    latest = report.latest.percentages if report.latest else None
    week = report.aaii_latest
    chart = SentimentChart(
        days=tuple(r.poll.created_at for r in report.history),
        spreads=tuple(p.spread if p else None for p in pcts),
        bullish=tuple(p.bullish if p else None for p in pcts),
        bearish=tuple(p.bearish if p else None for p in pcts),
        aaii_spreads=tuple(p.spread if p else None for p in aaii),
        aaii_bullish=tuple(p.bullish if p else None for p in aaii),
        aaii_bearish=tuple(p.bearish if p else None for p in aaii),
        aaii_average=report.aaii,
        title=f"Community sentiment · spread {latest.spread:+.1f}" if latest else "Community sentiment",
        subtitle=f"per poll, last {weeks} weeks · polls need {MIN_VOTES}+ votes · AAII latest week (reported "
                 f"{week.day}): spread {week.shares.spread:+.1f}",
        source=f"AAII: {report.aaii_source}; long-run averages over those weeks; AAII week = the one reported "
               "in the poll's Monday-Sunday week",
        note=report.aaii_note,
    )
    return report, await renderer.render(render_sentiment, chart)

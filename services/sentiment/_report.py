"""`/iwm sentiment`: a guild's poll results against the AAII long-run averages, and its chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import sqlite_utils

from services.charts import (
    DOWN,
    MUTED,
    TEXT,
    UP,
    YELLOW,
    Renderer,
    date_axis,
    legend,
    new_figure,
    title,
    to_png,
)
from services.errors import InputError, is_whole
from services.sentiment._polls import (
    AAII_AVERAGES,
    AAII_BEARISH,
    AAII_BULLISH,
    AAII_SOURCE,
    AAII_SPREAD,
    MIN_VOTES,
    Percentages,
    PollResult,
)
from services.sentiment._store import create_tables, one_row, poll_result
from services.storage import Database
from services.timefmt import iso_utc

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
    min_votes: int = MIN_VOTES
    aaii: Percentages = AAII_AVERAGES
    aaii_source: str = AAII_SOURCE

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
    aaii_spread: float
    title: str
    subtitle: str


def render_sentiment(chart: SentimentChart) -> bytes:
    fig, (ax, low) = new_figure((2.2, 1.0))
    title(fig, chart.title, chart.subtitle)
    if not chart.days:
        ax.text(0.5, 0.5, "no closed polls in this window", color=MUTED, fontsize=14, ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
        low.set_visible(False)
        return to_png(fig)
    x = np.arange(len(chart.days))
    spread = np.array([np.nan if s is None else s for s in chart.spreads], dtype=float)
    ok = ~np.isnan(spread)
    ax.axhline(0, color=MUTED, lw=0.8)
    ax.axhline(chart.aaii_spread, color=YELLOW, lw=1.1, ls="--", label=f"AAII average {chart.aaii_spread:+.1f}")
    ax.bar(x[ok], spread[ok], color=np.where(spread[ok] >= 0, UP, DOWN), width=0.7, alpha=0.85,
           label="bull-bear spread")
    if ok.sum() > 1:
        ax.plot(x[ok], spread[ok], color=TEXT, lw=0.9, marker="o", ms=3)
    if (~ok).any():
        ax.scatter(x[~ok], np.zeros((~ok).sum()), marker="x", color=MUTED, s=30, label=f"fewer than {MIN_VOTES} votes",
                   zorder=5)
    top = max(20.0, float(np.nanmax(np.abs(spread))) * 1.15 if ok.any() else 0.0, abs(chart.aaii_spread) * 1.5)
    ax.set_ylim(-top, top)
    ax.set_ylabel("spread (points)", color=MUTED, fontsize=8)
    legend(ax)
    ax.tick_params(labelbottom=False)
    bull = np.array([np.nan if v is None else v for v in chart.bullish], dtype=float)
    bear = np.array([np.nan if v is None else v for v in chart.bearish], dtype=float)
    low.plot(x, bull, color=UP, lw=1.2, marker="o", ms=3, label="bullish %")
    low.plot(x, bear, color=DOWN, lw=1.2, marker="o", ms=3, label="bearish %")
    low.axhline(AAII_BULLISH, color=UP, lw=0.8, ls=":")
    low.axhline(AAII_BEARISH, color=DOWN, lw=0.8, ls=":", label="AAII averages")
    low.set_ylim(0, 100)
    legend(low)
    low.set_ylabel("share of votes %", color=MUTED, fontsize=8)
    date_axis(low, pd.DatetimeIndex([d.replace(tzinfo=None) for d in chart.days]))
    return to_png(fig)


def compute_sentiment(d: sqlite_utils.Database, guild_id: int, weeks: int, now: datetime) -> SentimentReport:
    """The report for one guild (runs on the database thread)."""
    since = now - timedelta(weeks=weeks)
    create_tables(d)
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
        history=tuple(closed), average=average, polls_counted=len(counted),
    )


def validate_weeks(weeks: int) -> int:
    if not is_whole(weeks, 1, MAX_WEEKS):
        raise InputError(f"weeks {weeks!r}: choose 1 to {MAX_WEEKS}")
    return weeks


async def sentiment_answer(
    db: Database, renderer: Renderer, guild_id: int, weeks: int = 52, now: datetime | None = None
) -> tuple[SentimentReport, bytes]:
    """The `/iwm sentiment` report for this guild's polls and its chart (PNG)."""
    weeks = validate_weeks(weeks)
    now = now or datetime.now(UTC)
    report = await db.run(lambda d: compute_sentiment(d, guild_id, weeks, now))
    pcts = [r.percentages for r in report.history]
    latest = report.latest.percentages if report.latest else None
    chart = SentimentChart(
        days=tuple(r.poll.created_at for r in report.history),
        spreads=tuple(p.spread if p else None for p in pcts),
        bullish=tuple(p.bullish if p else None for p in pcts),
        bearish=tuple(p.bearish if p else None for p in pcts),
        aaii_spread=AAII_SPREAD,
        title=f"Community sentiment · spread {latest.spread:+.1f}" if latest else "Community sentiment",
        subtitle=f"bull-bear spread per poll, last {weeks} weeks · polls need {MIN_VOTES}+ votes · "
                 f"AAII average {AAII_SPREAD:+.1f}",
    )
    return report, await renderer.render(render_sentiment, chart)

"""`/iwm community`: a guild's activity and tone per UTC day against the IWM close, and its chart."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from services.charts import (
    BLUE,
    DOWN,
    MUTED,
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
    reference,
    to_png,
)
from services.community._pace import Pace
from services.community._text import tone
from services.errors import InputError, is_whole
from services.market import MarketData, ProviderError
from services.sql import Connection
from services.storage import Database
from services.timefmt import iso_utc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MAX_REPORT_DAYS = 365
TOP = 10


def validate_days(days: int, maximum: int) -> int:
    if not is_whole(days, 1, maximum):
        raise InputError(f"days {days!r}: choose 1 to {maximum}")
    return days


def _day_start(day: date) -> str:
    return iso_utc(datetime.combine(day, time(), tzinfo=UTC))


@dataclass(frozen=True)
class DayActivity:
    day: date
    messages: int
    members: int  # distinct authors
    bullish: int  # tone words
    bearish: int

    @property
    def tone(self) -> float | None:
        return tone(self.bullish, self.bearish)


@dataclass(frozen=True)
class TopReaction:
    emoji_name: str
    emoji_id: int | None
    count: int

    @property
    def display(self) -> str:
        """As Discord renders it in text (an animated custom emoji needs `<a:...>`, which the log does not know)."""
        return self.emoji_name if self.emoji_id is None else f"<:{self.emoji_name}:{self.emoji_id}>"


@dataclass(frozen=True)
class CommunityReport:
    guild_id: int
    days: int
    start: date  # first UTC day of the window
    end: date  # last UTC day (today, partial)
    daily: tuple[DayActivity, ...]  # every day of the window, quiet days included
    messages: int  # not deleted
    members: int  # distinct authors in the window
    top_cashtags: tuple[tuple[str, int], ...]  # (ticker, messages mentioning it)
    top_reactions: tuple[TopReaction, ...]  # reactions added in the window and still on
    bullish: int
    bearish: int
    market_as_of: date | None  # last IWM bar available
    market_days: int  # days of the window with an IWM close
    market_note: str  # why prices are missing from (part of) the window, or ""

    @property
    def tone(self) -> float | None:
        return tone(self.bullish, self.bearish)


@dataclass(frozen=True)
class CommunityChart:
    days: tuple[date, ...]
    messages: tuple[int, ...]
    members: tuple[int, ...]
    tone: tuple[float | None, ...]
    close: tuple[float | None, ...]  # IWM close on that day (None: no bar)
    title: str
    subtitle: str
    price_note: str


def draw_community(chart: CommunityChart) -> Figure:
    if not any(chart.messages):
        return draw_empty(chart.title, chart.subtitle, f"No messages logged in these {len(chart.days)} days yet")
    fig, (price, activity, mood) = new_figure((1.4, 1.2, 0.8), hspace=0.16)
    x = np.arange(len(chart.days))
    close = np.array([np.nan if c is None else c for c in chart.close], dtype=float)
    ok = ~np.isnan(close)
    if ok.any():
        price.plot(x[ok], close[ok], color=TEXT, lw=1.3, marker="o" if ok.sum() < 40 else None, ms=3,
                   label="IWM close")
    if chart.price_note:  # why (part of) the panel has no price: its title, above the panel
        price.set_title(chart.price_note, loc="left", color=YELLOW, fontsize=TEXT_PT, pad=3)
    axis_label(price, "IWM $")
    price.tick_params(labelbottom=False)
    activity.bar(x, chart.messages, color=BLUE, width=0.8, label="messages")
    activity.plot(x, chart.members, color=YELLOW, lw=1.2, marker="o" if len(x) < 40 else None, ms=3,
                  label="active members")
    activity.set_ylim(0, max([*chart.messages, *chart.members, 1]) * 1.1)
    axis_label(activity, "per day")
    activity.tick_params(labelbottom=False)
    tones = np.array([np.nan if t is None else t for t in chart.tone], dtype=float)
    has = ~np.isnan(tones)
    reference(mood.axhline(0, color=MUTED, lw=0.8))
    mood.bar(x[has], tones[has], color=np.where(tones[has] >= 0, UP, DOWN), width=0.8)
    mood.set_ylim(-1.05, 1.05)
    axis_label(mood, "tone")
    date_axis(mood, pd.DatetimeIndex([pd.Timestamp(d) for d in chart.days]))
    header(fig, chart.title, chart.subtitle, reserve_in=0.2 if chart.price_note else 0.0)
    return fig


def render_community(chart: CommunityChart) -> bytes:
    return to_png(draw_community(chart))


@dataclass(frozen=True)
class Activity:
    """What a guild's log holds for a window of UTC days."""

    daily: tuple[DayActivity, ...]  # every day of the window, quiet days included
    messages: int  # not deleted
    members: int  # distinct authors
    top_cashtags: tuple[tuple[str, int], ...]  # (ticker, messages mentioning it)
    top_reactions: tuple[TopReaction, ...]  # reactions added in the window and still on


@dataclass
class _Tally:
    """What the turns of `compute_activity` add up."""

    daily: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # day -> messages, members, bull, bear
    messages: int = 0
    authors: set[int] = field(default_factory=set)
    cashtags: Counter[str] = field(default_factory=Counter)
    reactions: dict[str, tuple[str, int | None, int]] = field(default_factory=dict)  # key -> name, id, count


def _tally_days(d: Connection, days: int, *, tally: _Tally, guild_id: int, first: date, end: date,
                channels: Collection[int] | None = None) -> int:
    """Add up to `days` UTC days from `first` (to `end` at most) to the tally, in `channels` only unless None, in
    one turn on the database thread; returns how many days it added."""
    days = min(days, (end - first).days + 1)
    window: list[object] = [guild_id, _day_start(first), _day_start(first + timedelta(days=days))]
    where = ""
    if channels is not None:
        chosen, ids = d.in_ids("channel_id", sorted(channels))
        where = f" AND {chosen}"
        window.append(ids)
    live = f"FROM community_messages WHERE guild_id = ? AND created_at >= ? AND created_at < ?{where} AND deleted = 0"
    for day, *counts in d.execute(
            f"SELECT substr(created_at, 1, 10), count(*), count(DISTINCT author_id), sum(bull), sum(bear) {live} "
            "GROUP BY 1", window):
        tally.daily[day] = tuple(int(v or 0) for v in counts)  # type: ignore[assignment]
        tally.messages += int(counts[0])
    tally.authors.update(row[0] for row in d.execute(f"SELECT DISTINCT author_id {live}", window))
    tally.cashtags.update(dict(d.execute(
        f"SELECT j.value, count(*) FROM community_messages m, {d.json_values('m.cashtags', 'j')} WHERE m.guild_id = ? "
        f"AND m.created_at >= ? AND m.created_at < ?{where.replace('channel_id', 'm.channel_id')} AND m.deleted = 0 "
        "GROUP BY j.value", window).fetchall()))
    for key, name, emoji_id, n in d.execute(
            "SELECT emoji_key, max(emoji_name), max(emoji_id), count(*) FROM community_reactions WHERE guild_id = ? "
            f"AND added_at >= ? AND added_at < ?{where} AND removed_at IS NULL GROUP BY emoji_key", window):
        name_before, id_before, n_before = tally.reactions.get(key, (name, emoji_id, 0))
        tally.reactions[key] = (max(name_before, name), _larger(id_before, emoji_id), n_before + n)
    return days


def _larger(a: int | None, b: int | None) -> int | None:
    """SQL's max() of two values: NULL only when both are."""
    return b if a is None else a if b is None else max(a, b)


async def compute_activity(db: Database, guild_id: int, start: date, end: date,
                           channels: Collection[int] | None = None) -> Activity:
    """The window's counts for one guild, `start` to `end` included, in `channels` only unless None: a few days
    per turn on the database thread (`Pace`), so a year of a million-message log never holds it for long."""
    tally, pace, first = _Tally(), Pace((end - start).days + 1, first=2, least=1), start
    while first <= end:
        turn = partial(_tally_days, tally=tally, guild_id=guild_id, first=first, end=end, channels=channels)
        first += timedelta(days=await db.run(pace(turn)))
    calendar = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    tags = sorted(tally.cashtags.items(), key=lambda item: (-item[1], item[0]))[:TOP]
    reactions = sorted(tally.reactions.values(), key=lambda r: (-r[2], r[0]))[:TOP]
    return Activity(
        daily=tuple(DayActivity(day, *tally.daily.get(day.isoformat(), (0, 0, 0, 0))) for day in calendar),
        messages=tally.messages, members=len(tally.authors), top_cashtags=tuple(tags),
        top_reactions=tuple(TopReaction(name, emoji_id, n) for name, emoji_id, n in reactions),
    )


def market_note(as_of: date | None, has_prices: bool, end: date) -> str:
    """Why (part of) the window has no IWM price, or "" (weekends and today's unfinished session are normal)."""
    if as_of is None:
        return "no IWM prices available"
    if not has_prices:
        return f"no IWM prices in this window: the market data ends {as_of}"
    missing = int(np.busday_count(as_of + timedelta(days=1), end)) if as_of < end else 0
    if missing:
        return f"IWM prices end {as_of}: the chart shows the overlap, the last {missing} weekdays have no price"
    return ""


async def community_answer(
    db: Database, market: MarketData, renderer: Renderer, guild_id: int, days: int = 30,
    now: datetime | None = None, channels: Collection[int] | None = None,
) -> tuple[CommunityReport, bytes]:
    """The `/iwm community` report (this guild only) and its chart: activity and tone per UTC day against the
    IWM close. When the log runs past the market data, the chart shows the overlap and the report says so."""
    days = validate_days(days, MAX_REPORT_DAYS)
    end = (now or datetime.now(UTC)).astimezone(UTC).date()
    start = end - timedelta(days=days - 1)
    activity = await compute_activity(db, guild_id, start, end, channels)
    daily = activity.daily
    calendar = [x.day for x in daily]

    closes: dict[date, float] = {}
    as_of: date | None = None
    note_extra = ""
    try:
        bars = await market.bars("IWM")
        as_of = bars.as_of
        window = bars.frame["close"].dropna().loc[pd.Timestamp(start):pd.Timestamp(end)]
        closes = {stamp.date(): float(value) for stamp, value in zip(window.index, window.to_numpy(), strict=True)}
        if bars.stale:
            note_extra = f" (IWM data is a stale {bars.source} copy)"
    except ProviderError as exc:
        log.warning("community report without prices: %s", exc)
    note = market_note(as_of, bool(closes), end) + note_extra

    bull = sum(x.bullish for x in daily)
    bear = sum(x.bearish for x in daily)
    report = CommunityReport(
        guild_id=guild_id, days=days, start=start, end=end, daily=daily,
        messages=activity.messages, members=activity.members, top_cashtags=activity.top_cashtags,
        top_reactions=activity.top_reactions,
        bullish=bull, bearish=bear, market_as_of=as_of, market_days=len(closes), market_note=note.strip(),
    )
    overall = report.tone
    chart = CommunityChart(
        days=tuple(calendar),
        messages=tuple(x.messages for x in daily),
        members=tuple(x.members for x in daily),
        tone=tuple(x.tone for x in daily),
        close=tuple(closes.get(day) for day in calendar),
        title=f"Community · {report.messages} messages from {report.members} members",
        subtitle=f"last {days} days to {end} (UTC) · tone {'n/a' if overall is None else f'{overall:+.2f}'} "
                 "from a small word list",
        price_note=report.market_note,
    )
    return report, await renderer.render(render_community, chart)

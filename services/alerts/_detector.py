"""The detector: level events on IWM's daily closes, and the replay that shows what the watcher would post.

Events (all on traded closes, one per kind per trading day at most):

- `breakout`: a close above the resistance zone top, the previous close at or below it.
- `breakdown`: a close below support, the previous close at or above it (the first bar of a history crosses
  nothing: it has no previous close on the other side).
- `entry_zone`: a close inside the entry zone (bounds included) while the previous close was above it.
- `new_high`: a close above the highest close of all the history before that day, the first after at least
  `NEW_HIGH_QUIET_SESSIONS` sessions without one (a run of record closes is one alert, not one a day).
- `streak`: a month closes up (month-end adjusted closes, `services.levels.monthly_returns`) and makes at least
  3 up months in a row; it fires on the month's last session, once per such month (3, 4, 5, ...).
- `testing` (intraday): the price crosses the resistance zone top from below, or support from above, against
  the previous close; at most once per level per day.
- `breadth` (from the members, `services.members`): the share of IWM's members closing above their 200-day
  average crosses 50%, up or down (`breadth_crossings`); posted for the newest member close only, when that is
  the last completed session (the member closes arrive after the close, with the daily refresh).

Hysteresis (re-arming), so price hovering at a level does not repeat an alert:

- after a `breakout`, no new one until a close below the resistance zone *low* (inside the zone is not enough);
- after a `breakdown`, no new one until a close back above the entry zone low (price chops around support);
- `entry_zone` needs the previous close above the entry high, so it re-arms on any close above the entry high:
  at most one alert per descent into the zone;
- `new_high` re-arms after `NEW_HIGH_QUIET_SESSIONS` sessions without a record close;
- `breadth` alternates up and down. After a crossing up, the next crossing down counts once the share has been
  at 55% (50% + BREADTH_REARM) or more since; before that only a fall to 45% or less counts (on that day). The
  same the other way round. A share hovering at 50% is one alert, not one a day.

`detect` is the one detector; `advance` walks it over the bars after the stored state, and both the watcher
and `replay` go through `advance`, so a replay shows exactly what the watcher would have posted.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from services import market_calendar
from services.config import Zones
from services.errors import InputError
from services.levels import monthly_returns, up_streak
from services.market import MarketData

DAILY_KINDS = ("breakout", "breakdown", "entry_zone", "new_high", "streak")
EVENT_KINDS = (*DAILY_KINDS, "testing", "breadth")
STREAK_MIN = 3
# A record close alerts only after this many sessions without one: about a trading month (NYSE: ~252 sessions a
# year, 21 a month). Record closes within a month of each other are one advance (36 record closes from
# 2024-01-01 to 2026-08-21 on the bundled IWM history, 4 after a quiet month: 2025-09-18, 2025-12-04, 2026-04-16,
# 2026-08-04); a month without one is a pause, so the next record is news.
NEW_HIGH_QUIET_SESSIONS = 20
BREADTH_WINDOW, BREADTH_LEVEL, BREADTH_REARM = 200, 50.0, 5.0  # % of members above their 200-day average


@dataclass(frozen=True)
class Event:
    kind: str
    day: date
    close: float  # the session's close (for `testing`: the intraday price)
    level: float | None  # the level crossed (for `new_high`: the previous closing high; None for `streak`)
    detail: str  # one plain sentence, e.g. "closed above the resistance zone top 245.00"
    prev_close: float | None = None
    streak: int | None = None  # `streak`: up months in a row
    tag: str = ""  # `testing`: which level ("resistance" or "support"), part of the key

    @property
    def key(self) -> str:
        """Unique per kind, trading day (and level for `testing`): the dedupe key of the outbox and the footer."""
        return f"{self.day.isoformat()} {self.kind}" + (f" {self.tag}" if self.tag else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "day": self.day.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(**{**data, "day": date.fromisoformat(data["day"])})


@dataclass(frozen=True)
class DetectorState:
    """Everything the detector remembers between days; small and JSON-serialisable (stored per guild)."""

    levels: tuple[float, ...]  # the Zones it was built for; other levels mean the state must be rebuilt
    last_day: date | None = None
    prev_close: float | None = None
    ath_close: float | None = None
    ath_day: date | None = None
    breakout_armed: bool = True
    breakdown_armed: bool = True
    since_high: int = 0  # sessions after the `ath_day` close so far

    @classmethod
    def fresh(cls, zones: Zones) -> DetectorState:
        return cls(levels=zones.values())

    def matches(self, zones: Zones) -> bool:
        return self.levels == zones.values()

    def to_json(self) -> str:
        data = asdict(self)
        for name in ("last_day", "ath_day"):
            data[name] = data[name].isoformat() if data[name] else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> DetectorState:
        data = json.loads(text)
        if "since_high" not in data:  # stored before the count existed: other "levels", so it is rebuilt from history
            data["levels"] = []
        for name in ("last_day", "ath_day"):
            data[name] = date.fromisoformat(data[name]) if data[name] else None
        data["levels"] = tuple(data["levels"])
        return cls(**data)


def detect(
    day: date,
    close: float,
    zones: Zones,
    state: DetectorState,
    month_returns: pd.Series | None = None,
) -> tuple[list[Event], DetectorState]:
    """The events of one session's close, and the state for the next one. Pure.

    `month_returns` (from `monthly_returns`, up to `day`) is given only when `day` is the month's last
    session; without it no `streak` is looked for. A day at or before `state.last_day` yields nothing, so
    running the same day twice is harmless.
    """
    if state.last_day is not None and day <= state.last_day:
        return [], state
    z, prev = zones, state.prev_close
    events: list[Event] = []
    breakout_armed, breakdown_armed = state.breakout_armed, state.breakdown_armed

    if close > z.resistance_high and breakout_armed and prev is not None and prev <= z.resistance_high:
        events.append(Event("breakout", day, close, z.resistance_high,
                            f"closed above the resistance zone top {z.resistance_high:.2f}", prev))
        breakout_armed = False
    elif close < z.resistance_low:
        breakout_armed = True

    if close < z.support and breakdown_armed and prev is not None and prev >= z.support:
        events.append(Event("breakdown", day, close, z.support, f"closed below support {z.support:.2f}", prev))
        breakdown_armed = False
    elif close > z.entry_low:  # like breakout: re-arm only once price has left the zone around the level
        breakdown_armed = True

    if prev is not None and prev > z.entry_high and z.entry_low <= close <= z.entry_high:
        events.append(Event("entry_zone", day, close, z.entry_high,
                            f"closed in the entry zone {z.entry_low:g}–{z.entry_high:g} from above", prev))

    ath_close, ath_day, since_high = state.ath_close, state.ath_day, state.since_high
    if ath_close is None or close > ath_close:
        if ath_close is not None and ath_day is not None and since_high >= NEW_HIGH_QUIET_SESSIONS:
            events.append(Event("new_high", day, close, ath_close,
                                f"made a new closing high, above {ath_close:.2f} ({ath_day}), the first in "
                                f"{since_high} sessions", prev))
        ath_close, ath_day, since_high = close, day, 0
    else:
        since_high += 1

    if month_returns is not None and len(month_returns):
        month = pd.Period(day, freq="M")
        streak = up_streak(month_returns)
        if month_returns.index[-1] == month and streak >= STREAK_MIN:
            gain = float(month_returns.iloc[-1])
            events.append(Event("streak", day, close, None,
                                f"has risen {streak} months in a row ({month.strftime('%b %Y')} {gain:+.2f}%)",
                                prev, streak=streak))

    return events, replace(state, last_day=day, prev_close=close, ath_close=ath_close, ath_day=ath_day,
                           breakout_armed=breakout_armed, breakdown_armed=breakdown_armed, since_high=since_high)


def _bars(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.dropna(subset=["close"])


def initial_state(frame: pd.DataFrame, zones: Zones, before: date) -> DetectorState:
    """The detector's state after every bar strictly before `before`, its events discarded (no streak lookups:
    a streak leaves no state)."""
    state = DetectorState.fresh(zones)
    bars = _bars(frame).loc[: pd.Timestamp(before) - pd.Timedelta(days=1)]
    for stamp, close in zip(bars.index, bars["close"].to_numpy(dtype=float), strict=True):
        _, state = detect(stamp.date(), close, zones, state)
    return state


def advance(
    frame: pd.DataFrame,
    zones: Zones,
    state: DetectorState | None,
    through: date,
    closes_month: Callable[[date], bool] = market_calendar.closes_month,
) -> tuple[list[Event], DetectorState]:
    """Run `detect` over each bar after `state.last_day` up to and including `through` (a completed session:
    never pass today's bar before the close). With no state, or a state built for other levels, the state
    is first rebuilt from the history before `through`.

    Whether a bar closes its month comes from the next bar when the frame has one, otherwise from
    `closes_month` (the exchange calendar).
    """
    bars = _bars(frame)
    if state is None or not state.matches(zones):
        state = initial_state(bars, zones, through)
    start = pd.Timestamp(state.last_day) + pd.Timedelta(days=1) if state.last_day else bars.index[0]
    positions = range(bars.index.searchsorted(start), bars.index.searchsorted(pd.Timestamp(through), side="right"))
    closes = bars["close"].to_numpy(dtype=float)
    months = monthly_returns(bars["adj_close"])  # a month's return is final once its last bar is in
    events: list[Event] = []
    for i in positions:
        stamp = bars.index[i]
        if i + 1 < len(bars):
            month_end = bars.index[i + 1].to_period("M") != stamp.to_period("M")
        else:
            month_end = closes_month(stamp.date())
        returns = months.loc[: stamp.to_period("M")] if month_end else None
        found, state = detect(stamp.date(), float(closes[i]), zones, state, returns)
        events.extend(found)
    return events, state


def replay(frame: pd.DataFrame, zones: Zones, start: date, end: date) -> list[Event]:
    """The events the watcher would have posted from `start` to `end`, given all the history before `start`."""
    events, _ = advance(frame, zones, initial_state(frame, zones, start), end)
    return events


def intraday_notices(
    day: date, price: float, prev_close: float, zones: Zones, seen: Collection[str] = ()
) -> list[Event]:
    """Intraday: which level the latest price is testing, i.e. crossing against the previous close (the
    resistance zone top from below, or support from above). Keys already in `seen` are left out; the outbox
    key (which includes the day) makes it at most once per level per day per channel anyway."""
    notices: list[Event] = []
    if prev_close <= zones.resistance_high < price:
        notices.append(Event("testing", day, price, zones.resistance_high,
                             f"is trading above the resistance zone top {zones.resistance_high:.2f}",
                             prev_close, tag="resistance"))
    if prev_close >= zones.support > price:
        notices.append(Event("testing", day, price, zones.support,
                             f"is trading below support {zones.support:.2f}", prev_close, tag="support"))
    return [n for n in notices if n.key not in seen]


@dataclass(frozen=True)
class BreadthCrossing:
    day: date
    direction: str  # "up" or "down"
    pct: float  # % of members above their 200-day average that session
    prev_pct: float  # the session before


def breadth_crossings(days: Sequence[date], pct: Sequence[float]) -> list[BreadthCrossing]:
    """Each session the share above the 200-day average (`pct`, NaN where no member has 200 closes) crosses
    BREADTH_LEVEL, with the re-arming in the module docstring. Pure."""
    found: list[BreadthCrossing] = []
    prev: float | None = None
    last, confirmed = "", True  # the last crossing's direction; whether the share has since moved REARM past 50%
    high, low = BREADTH_LEVEL + BREADTH_REARM, BREADTH_LEVEL - BREADTH_REARM
    for day, value in zip(days, pct, strict=True):
        if math.isnan(value):
            continue
        if prev is not None and last != "up" and value >= BREADTH_LEVEL and (
                (prev < BREADTH_LEVEL and confirmed) or (last == "down" and value >= high)):
            found.append(BreadthCrossing(day, "up", value, prev))
            last, confirmed = "up", False
        elif prev is not None and last != "down" and value < BREADTH_LEVEL and (
                (prev >= BREADTH_LEVEL and confirmed) or (last == "up" and value <= low)):
            found.append(BreadthCrossing(day, "down", value, prev))
            last, confirmed = "down", False
        confirmed = confirmed or (last == "up" and value >= high) or (last == "down" and value <= low)
        prev = value
    return found


def breadth_event(days: Sequence[date], pct: Sequence[float], frame: pd.DataFrame, through: date) -> Event | None:
    """The `breadth` event of session `through` (the last completed one), when the member closes reach it and
    it crossed; IWM's close that day from `frame` (NaN when it has no bar)."""
    if not len(days) or days[-1] != through:
        return None
    crossing = next((c for c in breadth_crossings(days, pct) if c.day == through), None)
    if crossing is None:
        return None
    stamp = pd.Timestamp(through)
    close = float(frame["close"].get(stamp, math.nan))
    side = "above" if crossing.direction == "up" else "below"
    return Event("breadth", through, close, None,
                 f"members crossed {side} {BREADTH_LEVEL:g}%: {crossing.pct:.0f}% of them closed above their "
                 f"{BREADTH_WINDOW}-day average ({crossing.prev_pct:.0f}% the session before)",
                 tag=crossing.direction)


def format_event(event: Event) -> str:
    level = f"level {event.level:7.2f}" if event.level is not None else " " * 13
    return f"{event.day}  {event.kind:<10}  close {event.close:7.2f}  {level}  {event.detail}"


def format_replay(events: Sequence[Event], start: date, end: date, zones: Zones, source: str) -> str:
    counts = ", ".join(f"{kind} {n}" for kind in EVENT_KINDS if (n := sum(e.kind == kind for e in events)))
    head = (f"IWM alert replay {start}..{end} · levels {zones.to_text()} · source {source} · "
            f"{len(events)} events" + (f" ({counts})" if counts else ""))
    return "\n".join([head, *(format_event(e) for e in events)])


async def run_replay(market: MarketData, start: date, end: date, zones: Zones) -> str:
    """`python bot.py replay`: the alerts over [start, end] on the configured data, one line per event."""
    if start > end:
        raise InputError(f"--from {start} is after --to {end}")
    bars = await market.bars("IWM")
    first, last = bars.frame.index[0].date(), bars.as_of
    if end < first or start > last:
        raise InputError(f"no IWM bars between {start} and {end}: the data runs {first}..{last} ({bars.source})")
    if market.live:  # a live frame may end with today's unfinished bar
        last = min(last, market_calendar.last_completed_session(datetime.now(UTC)))
    start, end = max(start, first), min(end, last)
    events = await asyncio.to_thread(replay, bars.frame, zones, start, end)
    return format_replay(events, start, end, zones, bars.source + (" (stale)" if bars.stale else ""))


"""Levels that keep up: support and resistance derived from IWM's own swing highs and lows.

Pure functions on a daily bar frame (see `services.market`: tz-naive DatetimeIndex, float columns open, high, low,
close, adj_close, volume). Levels use traded prices (`high`, `low`, `close`), like the rest of `/iwm levels`, and
only the bars up to `as_of`, so an answer for a past day is the answer the bot would have given that day.

- A swing high (low) is a session whose high (low) is the highest (lowest) of the `window` sessions on each side.
- Swing levels: the pivots of the last `lookback` sessions, clustered when their prices lie within `tolerance`.
- Touches and holds: how often price came back to a level later, and how often it turned there.
- Record highs: the all-time and the 2021 highs (intraday and closing), as levels too.
- `derived_zones`: one rule (`RULE`) that turns the levels into support, an entry zone and a resistance zone.
- `derived_levels`: both as of a day from the market data, as `/iwm levels` shows them and `/iwm setlevels
  preset:derived` adopts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from statistics import median
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from services.config import ConfigError, Zones
from services.errors import InputError
from services.market import MarketData

WINDOW = 10  # sessions on each side of a pivot: two trading weeks
LOOKBACK = 504  # sessions of pivots: two years of NYSE sessions (252 a year)
TOLERANCE = 0.015  # prices within 1.5% are one level; a touch comes within 1.5% of it
HOLD = 5  # a touch held when the next five closes (one trading week) stayed on the level's side
PER_SIDE = 3  # levels listed on each side of the close
MIN_STRENGTH = 2  # a strong level: pivots + holds >= 2 (two turns, or one turn that a later test confirmed)

Kind = Literal["support", "resistance"]
PivotKind = Literal["high", "low"]

RULE = (
    "Resistance is the nearest level above the close where IWM turned at least twice or set its 2021 or all-time "
    f"high (within {TOLERANCE:.1%} of the all-time closing high: the band from it to the all-time intraday high), "
    "the entry zone the nearest such level below the close, and support the next one below the entry zone; each "
    f"zone is its level ±{TOLERANCE:.1%}, narrowed where the entry and resistance zones would overlap."
)


@dataclass(frozen=True)
class Pivot:
    day: date
    price: float  # the day's high for a swing high, its low for a swing low
    kind: PivotKind


@dataclass(frozen=True)
class SwingLevel:
    """A price where IWM turned. `kind` is relative to the as-of close: support below it, resistance at or above.

    `touches`: later sessions whose low (support) or high (resistance) came within the tolerance of the price,
    each at least `hold` + 1 sessions after the previous one (or after the level's first pivot), so a few days
    spent at the level count as one reaction. `held`: touches after which each of the next `hold` closes stayed
    on the level's side of its band (support: at or above price × (1 − tolerance); resistance: at or below
    price × (1 + tolerance)); a touch of the last `hold` sessions is not judged yet and does not count as held.
    Touches and holds are judged from the side the level is on as of `as_of`.
    """

    price: float
    kind: Kind
    pivot_dates: tuple[date, ...]
    touches: int
    held: int
    last_touch: date | None
    label: str = ""  # a record high's name ("all-time high", "2021 closing high"); empty for a swing level

    @property
    def strength(self) -> int:
        """Turns at the level: its pivots plus the touches it held."""
        return len(self.pivot_dates) + self.held

    def describe(self) -> str:
        """One line, e.g. "242.56 resistance · 4 touches, held 3 · pivots 2021-11-08, 2024-11-25"."""
        touches = f"{self.touches} touch{'es' if self.touches != 1 else ''}, held {self.held}"
        if self.label:
            return f"{self.price:.2f} {self.kind} · {self.label} {self.pivot_dates[0]} · {touches}"
        shown = ", ".join(d.isoformat() for d in self.pivot_dates[-3:])
        earlier = len(self.pivot_dates) - 3
        more = f" (+{earlier} earlier)" if earlier > 0 else ""
        return f"{self.price:.2f} {self.kind} · {touches} · pivots {shown}{more}"


@dataclass(frozen=True)
class DerivedZones:
    """Zones derived by `RULE`; always support < entry_low <= entry_high < resistance_low <= resistance_high."""

    as_of: date
    support: float
    entry_low: float
    entry_high: float
    resistance_low: float
    resistance_high: float
    method: str  # RULE's outcome for this day: which level became which zone

    @property
    def values(self) -> tuple[float, float, float, float, float]:
        return self.support, self.entry_low, self.entry_high, self.resistance_low, self.resistance_high

    def as_zones(self) -> Zones:
        """The zones as a server's levels, in cents (exact where rounding would make two of them meet)."""
        try:
            return Zones(*(round(value, 2) for value in self.values))
        except ConfigError:
            return Zones(*self.values)


# --- history and pivots -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sessions:
    """The sessions up to as_of as numpy arrays, made once per call (pandas indexing per level would cost more
    than the levels themselves)."""

    days: pd.Index
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def day(self, i: int) -> date:
        return self.days[i].date()


def _history(frame: pd.DataFrame, as_of: date | None, sessions: int) -> _Sessions:
    """The bars with a high, low and close up to `as_of` (a non-trading day means the session before it; None:
    all of them), or InputError unless there are at least `sessions` of them."""
    values = frame[["high", "low", "close"]].to_numpy(dtype="float64")
    days = frame.index
    priced = ~np.isnan(values).any(axis=1)
    if not priced.all():
        values, days = values[priced], days[priced]
    if len(days) and as_of is not None:
        if as_of > days[-1].date():
            raise InputError(f"as_of {as_of} is after the latest bar ({days[-1].date()})")
        end = int(days.searchsorted(pd.Timestamp(as_of), side="right"))
        values, days = values[:end], days[:end]
    if len(days) < sessions:
        first = f" (the data starts {frame.index[0].date()})" if len(frame) else ""
        raise InputError(
            f"swing levels need {sessions} sessions of history up to {as_of or 'the latest bar'}; "
            f"there are {len(days)}{first}"
        )
    return _Sessions(days, values[:, 0], values[:, 1], values[:, 2])


def _pivot_flags(values: np.ndarray, window: int, highest: bool) -> np.ndarray:
    """Per session, whether it is the first highest (lowest) of the `window` sessions on each side: a flat top
    of equal highs gives one pivot, its first day. The first and last `window` sessions are never flagged."""
    flags = np.zeros(len(values), dtype=bool)
    if len(values) >= 2 * window + 1:
        windows = sliding_window_view(values, 2 * window + 1)
        first = windows.argmax(axis=1) if highest else windows.argmin(axis=1)
        flags[window : len(values) - window] = first == window
    return flags


class _Turn(NamedTuple):
    """A pivot by session number."""

    at: int
    price: float
    kind: PivotKind


def _pivots(bars: _Sessions, window: int, lookback: int) -> list[_Turn]:
    """The pivots among the last `lookback` sessions, by session."""
    start = max(0, len(bars.days) - lookback)
    offset = max(0, start - window)  # the left side of the first pivots may lie before the lookback
    sides: tuple[tuple[np.ndarray, PivotKind, bool], ...] = ((bars.high, "high", True), (bars.low, "low", False))
    found: list[_Turn] = []
    for values, kind, highest in sides:
        flags = _pivot_flags(values[offset:], window, highest)
        found += [_Turn(i, float(values[i]), kind) for i in (np.flatnonzero(flags) + offset).tolist() if i >= start]
    return sorted(found)


def swing_pivots(frame: pd.DataFrame, as_of: date | None = None, *, window: int = WINDOW,
                 lookback: int = LOOKBACK) -> list[Pivot]:
    """Swing highs and lows among the last `lookback` sessions up to `as_of`, by date.

    A swing high is a session whose high is above each of the `window` highs before it and at least each of the
    `window` highs after it (a swing low mirrors it with lows). Only data up to `as_of` is used, so the last
    `window` sessions cannot be confirmed pivots yet: their right side has not traded. InputError when fewer than
    `lookback` sessions lead up to `as_of`.
    """
    bars = _history(frame, as_of, lookback)
    return [Pivot(bars.day(i), price, kind) for i, price, kind in _pivots(bars, window, lookback)]


# --- levels -----------------------------------------------------------------------------------------------

def _cluster(pivots: Sequence[_Turn], tolerance: float) -> list[list[_Turn]]:
    """Pivots by price; a pivot joins the cluster above the previous one while its price is within `tolerance`
    of that cluster's lowest price (so a cluster never spans more than `tolerance`), else it starts a new one."""
    clusters: list[list[_Turn]] = []
    for pivot in sorted(pivots, key=lambda p: (p.price, p.at)):
        if clusters and pivot.price <= clusters[-1][0].price * (1 + tolerance):
            clusters[-1].append(pivot)
        else:
            clusters.append([pivot])
    return clusters


def _level(bars: _Sessions, price: float, pivots: Sequence[int], tolerance: float, hold: int,
           label: str = "") -> SwingLevel:
    """A level at `price` formed at the sessions `pivots`, with its touches and holds counted on the sessions
    after the first of them."""
    n = len(bars.close)
    kind: Kind = "resistance" if price >= bars.close[-1] else "support"
    band = tolerance * price
    reach = bars.high if kind == "resistance" else bars.low
    previous = min(pivots)
    touches = held = 0
    for i in (np.flatnonzero(np.abs(reach[previous + 1 :] - price) <= band) + previous + 1).tolist():
        if i <= previous + hold:
            continue
        touches, previous = touches + 1, i
        after = bars.close[i + 1 : i + 1 + hold]
        if i + hold < n and bool(np.all(after <= price + band) if kind == "resistance"
                                 else np.all(after >= price - band)):
            held += 1
    last = bars.day(previous) if touches else None
    return SwingLevel(price, kind, tuple(bars.day(i) for i in sorted(pivots)), touches, held, last, label)


def _levels(bars: _Sessions, window: int, lookback: int, tolerance: float, hold: int) -> list[SwingLevel]:
    return [
        _level(bars, median(p.price for p in cluster), [p.at for p in cluster], tolerance, hold)
        for cluster in _cluster(_pivots(bars, window, lookback), tolerance)
    ]


def cluster_levels(frame: pd.DataFrame, as_of: date | None = None, *, window: int = WINDOW,
                   lookback: int = LOOKBACK, tolerance: float = TOLERANCE, hold: int = HOLD) -> list[SwingLevel]:
    """Every swing level as of `as_of`, by price: `swing_pivots` clustered within `tolerance` (see `_cluster`),
    each at the median of its pivots' prices (one far pivot does not drag it), with its touches and holds."""
    return _levels(_history(frame, as_of, lookback), window, lookback, tolerance, hold)


def _nearest_strong(levels: Sequence[SwingLevel], per_side: int) -> list[SwingLevel]:
    strong = [level for level in levels if level.strength >= MIN_STRENGTH]
    below = [level for level in strong if level.kind == "support"][-per_side:]
    above = [level for level in strong if level.kind == "resistance"][:per_side]
    return below + above


def swing_levels(frame: pd.DataFrame, as_of: date | None = None, *, window: int = WINDOW,
                 lookback: int = LOOKBACK, tolerance: float = TOLERANCE, hold: int = HOLD,
                 per_side: int = PER_SIDE) -> list[SwingLevel]:
    """The strong swing levels nearest the close (strength >= MIN_STRENGTH), at most `per_side` below and
    `per_side` above it, by price.

    Nearest rather than the most touched: after a long rally the most touched levels lie far below the price, and
    a level 25% away says as little as the fixed levels this replaces.
    """
    return _nearest_strong(cluster_levels(frame, as_of, window=window, lookback=lookback, tolerance=tolerance,
                                          hold=hold), per_side)


def _record_highs(bars: _Sessions, tolerance: float, hold: int) -> list[SwingLevel]:
    found: dict[tuple[float, int], list[str]] = {}
    start, end = (int(bars.days.searchsorted(pd.Timestamp(f"{year}-01-01"))) for year in (2021, 2022))
    for lo, hi, prefix in ((0, len(bars.days), "all-time"), (start, end, "2021")):
        if hi > lo:
            for values, name in ((bars.high, "high"), (bars.close, "closing high")):
                i = lo + int(values[lo:hi].argmax())
                found.setdefault((float(values[i]), i), []).append(f"{prefix} {name}")
    levels = [_level(bars, price, [i], tolerance, hold, " and ".join(names)) for (price, i), names in found.items()]
    return sorted(levels, key=lambda level: level.price)


def record_highs(frame: pd.DataFrame, as_of: date | None = None, *, tolerance: float = TOLERANCE,
                 hold: int = HOLD) -> list[SwingLevel]:
    """The all-time high and closing high up to `as_of`, and those of 2021 (the year so far before its end), as
    levels by price, with touches and holds counted after their day. One level when two are the same day and
    price ("all-time high and 2021 high")."""
    return _record_highs(_history(frame, as_of, 1), tolerance, hold)


# --- derived zones ----------------------------------------------------------------------------------------

def _source(level: SwingLevel) -> str:
    return f"the {level.label} of {level.pivot_dates[0]}" if level.label else f"swing level {level.price:.2f}"


def derived_zones(frame: pd.DataFrame, as_of: date | None = None, *, window: int = WINDOW,
                  lookback: int = LOOKBACK, tolerance: float = TOLERANCE, hold: int = HOLD) -> DerivedZones:
    """Support, entry zone and resistance zone as of `as_of`, by `RULE`.

    Candidates are the strong swing levels (strength >= MIN_STRENGTH) and the record highs. At new lows, where no
    candidate is left below, the lowest low of the lookback stands in, and below that a level one tolerance under
    the entry zone (or under the close). The entry zone's top and the resistance zone's bottom reach at most a
    third of the way between their two levels, so they cannot meet. Since support < entry zone low < entry level
    < close <= resistance level, the zones are always in order.
    """
    bars = _history(frame, as_of, lookback)
    close = float(bars.close[-1])
    ath_close, ath_high = float(bars.close.max()), float(bars.high.max())
    strong = [lv for lv in _levels(bars, window, lookback, tolerance, hold) if lv.strength >= MIN_STRENGTH]
    candidates = sorted(strong + _record_highs(bars, tolerance, hold), key=lambda level: level.price)

    above = [lv for lv in candidates if lv.kind == "resistance" and lv.price < ath_close]
    if not above or close >= ath_close * (1 - tolerance):
        resistance, res_low, res_high = ath_close, ath_close, ath_high
        res_text = f"the all-time closing high {ath_close:.2f} to the intraday high {ath_high:.2f}"
    else:
        resistance = above[0].price
        res_low, res_high = resistance * (1 - tolerance), resistance * (1 + tolerance)
        res_text = _source(above[0])

    below = [lv for lv in reversed(candidates) if lv.kind == "support"]  # nearest first
    start = max(0, len(bars.days) - lookback)
    low_at = start + int(bars.low[start:].argmin())

    def next_below(limit: float) -> tuple[float, str]:
        level = next((lv for lv in below if lv.price < limit), None)
        if level is not None:
            return level.price, _source(level)
        if bars.low[low_at] < limit:
            return float(bars.low[low_at]), f"the lowest low of the last {lookback} sessions, {bars.day(low_at)}"
        return limit * (1 - tolerance), f"{tolerance:.1%} under {limit:.2f}, no level lower"

    entry, entry_text = next_below(close)
    entry_low = entry * (1 - tolerance)
    entry_high = min(entry * (1 + tolerance), entry + (resistance - entry) / 3)
    res_low = max(res_low, resistance - (resistance - entry) / 3)
    support, support_text = next_below(entry_low)
    day = bars.day(len(bars.days) - 1)
    method = (
        f"Resistance {res_low:.2f}–{res_high:.2f}: {res_text}; entry zone {entry_low:.2f}–{entry_high:.2f}: "
        f"{entry_text}; support {support:.2f}: {support_text}. Swing levels: highs and lows of ±{window} sessions "
        f"over the last {lookback} sessions to {day}, clustered within {tolerance:.1%}."
    )
    return DerivedZones(day, support, entry_low, entry_high, res_low, res_high, method)


# --- for the commands -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DerivedLevels:
    """What `/iwm levels` shows beside the server's levels: the strong swing levels nearest the close (by price)
    and the zones `RULE` derives from them, both as of `zones.as_of`."""

    close: float
    levels: tuple[SwingLevel, ...]
    zones: DerivedZones

    @property
    def above(self) -> list[SwingLevel]:
        return [level for level in self.levels if level.kind == "resistance"]

    @property
    def below(self) -> list[SwingLevel]:
        return [level for level in self.levels if level.kind == "support"]


def derived_levels(frame: pd.DataFrame, as_of: date | None = None) -> DerivedLevels:
    """`swing_levels` and `derived_zones` as of `as_of` (default: the latest bar); InputError without
    `LOOKBACK` sessions of history up to that day."""
    zones = derived_zones(frame, as_of)
    close = float(frame["close"].dropna().loc[: pd.Timestamp(zones.as_of)].iloc[-1])
    return DerivedLevels(close, tuple(swing_levels(frame, as_of)), zones)


async def derived_answer(market: MarketData, as_of: date | None = None) -> DerivedLevels:
    """`derived_levels` on IWM's bars from `market` (computed in a thread)."""
    bars = await market.bars("IWM")
    return await asyncio.to_thread(derived_levels, bars.frame, as_of)

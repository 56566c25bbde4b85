"""Price alerts: detect level events on IWM's daily closes, store who wants them, and post each one exactly once.

Events (all on traded closes, one per kind per trading day at most):

- `breakout`: a close above the resistance zone top.
- `breakdown`: a close below support.
- `entry_zone`: a close inside the entry zone (bounds included) while the previous close was above it.
- `new_high`: a close above the highest close of all the history before that day.
- `streak`: a month closes up (month-end adjusted closes, `services.levels.monthly_returns`) and makes at least
  3 up months in a row; it fires on the month's last session, once per such month (3, 4, 5, ...).
- `testing` (intraday): the price crosses the resistance zone top from below, or support from above, against
  the previous close; at most once per level per day.

Hysteresis (re-arming), so price hovering at a level does not repeat an alert:

- after a `breakout`, no new one until a close below the resistance zone *low* (inside the zone is not enough);
- after a `breakdown`, no new one until a close back above the entry zone low (price chops around support);
- `entry_zone` needs the previous close above the entry high, so it re-arms on any close above the entry high:
  at most one alert per descent into the zone;
- `new_high` needs no flag: each close above every earlier close is new by definition.

`detect` is the one detector; `advance` walks it over the bars after the stored state, and both the watcher
and `replay` go through `advance`, so a replay shows exactly what the watcher would have posted.

Delivery guarantee (what `fan_out` and `recover` implement):

    Each (channel, event) pair is posted at most once, and exactly once whenever the channel can be read.
    Before sending, we insert an outbox row whose unique key is (guild, channel, event key): a second attempt,
    a second watcher or a restart finds the row and does not send. After Discord answers we store the message
    id. A crash between the send and that write leaves a row without a message id; on start-up `pending()`
    returns it and `recover()` reconciles: it asks the cog to look for the post in the channel's recent
    messages (every post carries the event key in its footer, and a per-channel nonce that Discord itself
    dedupes for a few minutes). Found: we record its id, nothing is re-sent. Known absent: we send it now.
    Cannot tell (the bot cannot read the channel), or the event is stale: we skip it and record why.
    We chose at-most-once over at-least-once because a duplicated market alert (and its role ping) in a
    community channel is worse than one missing alert, and the reconciliation makes the missing case rare:
    it needs a crash in the milliseconds between Discord's answer and a local SQLite write, plus a channel
    the bot cannot read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Literal

import pandas as pd
import sqlite_utils

from services import market_calendar
from services.charts import LevelsChart
from services.config import ConfigError, Zones
from services.errors import InputError, is_whole
from services.levels import monthly_returns, price_chart, up_streak
from services.market import MarketData
from services.storage import Database

log = logging.getLogger(__name__)

DAILY_KINDS = ("breakout", "breakdown", "entry_zone", "new_high", "streak")
EVENT_KINDS = (*DAILY_KINDS, "testing")
STREAK_MIN = 3
MAX_SUBSCRIPTIONS_PER_GUILD = 10
MAX_ATTEMPTS = 3


# --- events and the detector ------------------------------------------------------------------------------

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

    @classmethod
    def fresh(cls, zones: Zones) -> DetectorState:
        return cls(levels=zone_values(zones))

    def matches(self, zones: Zones) -> bool:
        return self.levels == zone_values(zones)

    def to_json(self) -> str:
        data = asdict(self)
        for name in ("last_day", "ath_day"):
            data[name] = data[name].isoformat() if data[name] else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> DetectorState:
        data = json.loads(text)
        for name in ("last_day", "ath_day"):
            data[name] = date.fromisoformat(data[name]) if data[name] else None
        data["levels"] = tuple(data["levels"])
        return cls(**data)


def zone_values(zones: Zones) -> tuple[float, ...]:
    return (zones.support, zones.entry_low, zones.entry_high, zones.resistance_low, zones.resistance_high)


def levels_line(zones: Zones) -> str:
    """The levels as members read them: `support 200 · entry 205–220 · resistance 240–245`."""
    z = zones
    return (f"support {z.support:g} · entry {z.entry_low:g}–{z.entry_high:g} · "
            f"resistance {z.resistance_low:g}–{z.resistance_high:g}")


def zones_text(zones: Zones) -> str:
    """The `Zones.parse` form: `200,205-220,240-245`."""
    z = zones
    return f"{z.support:g},{z.entry_low:g}-{z.entry_high:g},{z.resistance_low:g}-{z.resistance_high:g}"


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

    if close > z.resistance_high and breakout_armed:
        events.append(Event("breakout", day, close, z.resistance_high,
                            f"closed above the resistance zone top {z.resistance_high:.2f}", prev))
        breakout_armed = False
    elif close < z.resistance_low:
        breakout_armed = True

    if close < z.support and breakdown_armed:
        events.append(Event("breakdown", day, close, z.support, f"closed below support {z.support:.2f}", prev))
        breakdown_armed = False
    elif close > z.entry_low:  # like breakout: re-arm only once price has left the zone around the level
        breakdown_armed = True

    if prev is not None and prev > z.entry_high and z.entry_low <= close <= z.entry_high:
        events.append(Event("entry_zone", day, close, z.entry_high,
                            f"closed in the entry zone {z.entry_low:g}–{z.entry_high:g} from above", prev))

    ath_close, ath_day = state.ath_close, state.ath_day
    if ath_close is None or close > ath_close:
        if ath_close is not None and ath_day is not None:
            events.append(Event("new_high", day, close, ath_close,
                                f"made a new closing high, above {ath_close:.2f} ({ath_day})", prev))
        ath_close, ath_day = close, day

    if month_returns is not None and len(month_returns):
        month = pd.Period(day, freq="M")
        streak = up_streak(month_returns)
        if month_returns.index[-1] == month and streak >= STREAK_MIN:
            gain = float(month_returns.iloc[-1])
            events.append(Event("streak", day, close, None,
                                f"has risen {streak} months in a row ({month.strftime('%b %Y')} {gain:+.2f}%)",
                                prev, streak=streak))

    return events, replace(state, last_day=day, prev_close=close, ath_close=ath_close, ath_day=ath_day,
                           breakout_armed=breakout_armed, breakdown_armed=breakdown_armed)


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


def format_event(event: Event) -> str:
    level = f"level {event.level:7.2f}" if event.level is not None else " " * 13
    return f"{event.day}  {event.kind:<10}  close {event.close:7.2f}  {level}  {event.detail}"


def format_replay(events: Sequence[Event], start: date, end: date, zones: Zones, source: str) -> str:
    counts = ", ".join(f"{kind} {n}" for kind in EVENT_KINDS if (n := sum(e.kind == kind for e in events)))
    head = (f"IWM alert replay {start}..{end} · levels {zones_text(zones)} · source {source} · "
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


# --- the post ---------------------------------------------------------------------------------------------

Colour = Literal["up", "down", "neutral"]


@dataclass(frozen=True)
class AlertPost:
    """A Discord-agnostic alert message; the cog turns it into an embed (footer verbatim: recovery uses it)."""

    title: str
    description: str
    fields: tuple[tuple[str, str], ...]
    colour: Colour
    level: float | None
    footer: str
    key: str


TITLES: dict[str, tuple[str, Colour]] = {
    "breakout": ("IWM broke out above {level:.2f}", "up"),
    "breakdown": ("IWM broke below support {level:.2f}", "down"),
    "entry_zone": ("IWM is back in the entry zone", "neutral"),
    "new_high": ("IWM closed at a record {close:.2f}", "up"),
    "streak": ("IWM: {streak} up months in a row", "up"),
    "testing": ("IWM is testing {tag} at {level:.2f}", "neutral"),
}


def footer_for(key: str) -> str:
    return f"smallcaps alert · {key}"


def footer_text(event: Event) -> str:
    return footer_for(event.key)


def post_nonce(channel_id: int, event_key: str) -> str:
    """A nonce for `channel.send(nonce=...)` (Discord: at most 25 characters), the same for every retry."""
    return hashlib.sha256(f"{channel_id} {event_key}".encode()).hexdigest()[:25]


def build_post(event: Event, zones: Zones) -> AlertPost:
    template, colour = TITLES[event.kind]
    title = template.format(**asdict(event))
    price_name = "Price" if event.kind == "testing" else "Close"
    description = f"On {event.day:%a %d %b %Y}, IWM {event.detail}: {price_name.lower()} {event.close:.2f}."
    fields: list[tuple[str, str]] = [(price_name, f"{event.close:.2f}")]
    if event.prev_close:
        change = event.close / event.prev_close * 100 - 100
        fields.append(("Change", f"{event.close - event.prev_close:+.2f} ({change:+.2f}%)"))
    if event.level is not None:
        fields.append(("Previous high" if event.kind == "new_high" else "Level", f"{event.level:.2f}"))
    fields.append(("Levels", levels_line(zones)))
    return AlertPost(title, description, tuple(fields), colour, event.level, footer_text(event), event.key)


def alert_chart(frame: pd.DataFrame, event: Event, zones: Zones) -> LevelsChart:
    """The chart spec for an alert: the last 6 months to the event's day, its level marked. Render it with
    `Renderer.render(render_levels, spec)`, once per event (not per channel)."""
    bars = _bars(frame).loc[: pd.Timestamp(event.day)]
    return price_chart(bars, event.day, "6mo", zones, float(bars["close"].max()), build_post(event, zones).title,
                       f"daily, 6mo · {event.key}", highlight=event.level)


# --- storage ----------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_subscriptions (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    events TEXT NOT NULL,
    role_id INTEGER,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    created_by INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (guild_id, channel_id)
);
CREATE TABLE IF NOT EXISTS alert_levels (
    guild_id INTEGER PRIMARY KEY,
    support REAL NOT NULL,
    entry_low REAL NOT NULL,
    entry_high REAL NOT NULL,
    resistance_low REAL NOT NULL,
    resistance_high REAL NOT NULL,
    updated_by INTEGER,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_state (
    guild_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    subscription_id INTEGER NOT NULL,
    event_key TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    message_id INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (guild_id, channel_id, event_key)
);
CREATE INDEX IF NOT EXISTS alert_outbox_status ON alert_outbox (status);
"""

Status = Literal["pending", "retry", "sent", "failed", "skipped"]


@dataclass(frozen=True)
class Subscription:
    id: int
    guild_id: int
    channel_id: int
    events: tuple[str, ...]
    role_id: int | None
    enabled: bool
    disabled_reason: str | None
    created_by: int
    created_at: str

    def wants(self, kind: str) -> bool:
        return self.enabled and kind in self.events

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Subscription:
        return cls(row["id"], row["guild_id"], row["channel_id"], tuple(json.loads(row["events"])), row["role_id"],
                   bool(row["enabled"]), row["disabled_reason"], row["created_by"], row["created_at"])


@dataclass(frozen=True)
class OutboxEntry:
    """One intended post. status: pending (sent or not: unknown), retry (Discord refused it: not sent),
    sent (message_id known), failed (will not be sent), skipped (recovery chose not to send)."""

    id: int
    guild_id: int
    channel_id: int
    subscription_id: int
    event: Event
    status: Status
    message_id: int | None
    attempts: int
    error: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> OutboxEntry:
        return cls(row["id"], row["guild_id"], row["channel_id"], row["subscription_id"],
                   Event.from_dict(json.loads(row["event"])), row["status"], row["message_id"], row["attempts"],
                   row["error"])


def _snowflake(value: object, what: str) -> int:
    if not is_whole(value, 1, 2**63 - 1):
        raise InputError(f"{what} {value!r} is not a Discord id")
    return value


def parse_events(text: str | Iterable[str]) -> tuple[str, ...]:
    """`"breakout, new_high"` or `["breakout"]` or `"all"` -> validated kinds in canonical order."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    wanted = {item.strip().lower().replace("-", "_") for item in items if item.strip()}
    if "all" in wanted:
        return EVENT_KINDS
    unknown = sorted(wanted - set(EVENT_KINDS))
    if unknown:
        raise InputError(f"unknown alert event {', '.join(unknown)}: choose from {', '.join(EVENT_KINDS)} or all")
    if not wanted:
        raise InputError(f"choose at least one alert event: {', '.join(EVENT_KINDS)} or all")
    return tuple(kind for kind in EVENT_KINDS if kind in wanted)


class AlertStore:
    """Subscriptions, per-guild levels, detector state and the outbox, in the shared SQLite database.

    Every function taking a `guild_id` reads and writes only that guild's rows. `pending()` without a guild
    is the one bot-wide read (start-up recovery); its rows are never shown to members.
    """

    def __init__(self, database: Database, default_zones: Zones,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.database, self.default_zones, self.clock = database, default_zones, clock

    def _now(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    async def setup(self) -> None:
        """Create the tables if they do not exist (idempotent)."""
        await self.database.run(lambda db: db.conn.executescript(SCHEMA))

    async def _write(self, fn: Callable[[sqlite_utils.Database], Any]) -> Any:
        def tx(db: sqlite_utils.Database) -> Any:
            with db.conn:
                return fn(db)

        return await self.database.run(tx)

    @staticmethod
    def _rows(db: sqlite_utils.Database, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return list(db.query(sql, params))

    # subscriptions

    async def subscribe(self, guild_id: int, channel_id: int, events: str | Iterable[str], *,
                        created_by: int, role_id: int | None = None) -> Subscription:
        """Subscribe a channel (again: replaces its events and role, and re-enables it)."""
        guild_id, channel_id = _snowflake(guild_id, "guild"), _snowflake(channel_id, "channel")
        created_by = _snowflake(created_by, "user")
        if role_id is not None:
            role_id = _snowflake(role_id, "role")
        kinds = json.dumps(list(parse_events(events)))
        now = self._now()

        def write(db: sqlite_utils.Database) -> dict[str, Any]:
            existing = self._rows(db, "select id from alert_subscriptions where guild_id = ? and channel_id = ?",
                                  [guild_id, channel_id])
            if existing:
                db.execute("update alert_subscriptions set events = ?, role_id = ?, enabled = 1, "
                           "disabled_reason = null where id = ?", [kinds, role_id, existing[0]["id"]])
            else:
                count = db.execute("select count(*) from alert_subscriptions where guild_id = ?",
                                   [guild_id]).fetchone()[0]
                if count >= MAX_SUBSCRIPTIONS_PER_GUILD:
                    raise InputError(f"this server already has {count} alert channels (the most allowed): "
                                     "unsubscribe one first")
                db.execute("insert into alert_subscriptions (guild_id, channel_id, events, role_id, enabled, "
                           "created_by, created_at) values (?, ?, ?, ?, 1, ?, ?)",
                           [guild_id, channel_id, kinds, role_id, created_by, now])
            return self._rows(db, "select * from alert_subscriptions where guild_id = ? and channel_id = ?",
                              [guild_id, channel_id])[0]

        return Subscription.from_row(await self._write(write))

    async def unsubscribe(self, guild_id: int, channel_id: int) -> bool:
        """Remove a channel's subscription; False if it had none. The outbox keeps its history."""
        return await self._write(lambda db: db.execute(
            "delete from alert_subscriptions where guild_id = ? and channel_id = ?", [guild_id, channel_id]
        ).rowcount > 0)

    async def subscriptions(self, guild_id: int) -> list[Subscription]:
        """All of a guild's subscriptions, enabled or not, by channel."""
        rows = await self.database.run(lambda db: self._rows(
            db, "select * from alert_subscriptions where guild_id = ? order by channel_id", [guild_id]))
        return [Subscription.from_row(r) for r in rows]

    async def disable(self, guild_id: int, subscription_id: int, reason: str) -> None:
        await self._write(lambda db: db.execute(
            "update alert_subscriptions set enabled = 0, disabled_reason = ? where guild_id = ? and id = ?",
            [reason, guild_id, subscription_id]))

    async def guild_ids(self) -> list[int]:
        """Guilds with at least one enabled subscription (what the watcher loops over)."""
        rows = await self.database.run(lambda db: self._rows(
            db, "select distinct guild_id from alert_subscriptions where enabled = 1 order by guild_id", []))
        return [r["guild_id"] for r in rows]

    # levels and detector state

    async def levels(self, guild_id: int) -> Zones:
        rows = await self.database.run(lambda db: self._rows(
            db, "select * from alert_levels where guild_id = ?", [guild_id]))
        if not rows:
            return self.default_zones
        r = rows[0]
        return Zones(r["support"], r["entry_low"], r["entry_high"], r["resistance_low"], r["resistance_high"])

    async def set_levels(self, guild_id: int, levels: str | Zones, *, updated_by: int | None = None) -> Zones:
        """Set a guild's levels (`"200,205-220,240-245"`); InputError says what is wrong. Resets its detector
        state, which the next check rebuilds from history for the new levels."""
        guild_id = _snowflake(guild_id, "guild")
        if isinstance(levels, str):
            try:
                zones = Zones.parse(levels)
            except ConfigError as exc:
                raise InputError(f"{exc}. Example: {zones_text(self.default_zones)} (support, entry zone low-high, "
                                 "resistance zone low-high)") from None
        else:
            zones = levels
        if not all(math.isfinite(v) for v in zone_values(zones)):
            raise InputError("levels must be finite numbers")
        row = {"guild_id": guild_id, **asdict(zones), "updated_by": updated_by, "updated_at": self._now()}

        def write(db: sqlite_utils.Database) -> None:
            db.execute("insert or replace into alert_levels (guild_id, support, entry_low, entry_high, "
                       "resistance_low, resistance_high, updated_by, updated_at) values (:guild_id, :support, "
                       ":entry_low, :entry_high, :resistance_low, :resistance_high, :updated_by, :updated_at)", row)
            db.execute("delete from alert_state where guild_id = ?", [guild_id])

        await self._write(write)
        return zones

    async def reset_levels(self, guild_id: int) -> Zones:
        """Back to the configured default levels."""
        def write(db: sqlite_utils.Database) -> None:
            db.execute("delete from alert_levels where guild_id = ?", [guild_id])
            db.execute("delete from alert_state where guild_id = ?", [guild_id])

        await self._write(write)
        return self.default_zones

    async def load_state(self, guild_id: int) -> DetectorState | None:
        rows = await self.database.run(lambda db: self._rows(
            db, "select state from alert_state where guild_id = ?", [guild_id]))
        return DetectorState.from_json(rows[0]["state"]) if rows else None

    async def save_state(self, guild_id: int, state: DetectorState) -> None:
        await self._write(lambda db: db.execute(
            "insert or replace into alert_state (guild_id, state, updated_at) values (?, ?, ?)",
            [guild_id, state.to_json(), self._now()]))

    # outbox

    async def claim(self, subscription: Subscription, event: Event) -> int | None:
        """Record the intent to post `event` to the subscription's channel; the new outbox id, or None when
        that channel already has a row for this event (sent, in flight, or settled)."""
        now = self._now()

        def write(db: sqlite_utils.Database) -> int | None:
            cursor = db.execute(
                "insert or ignore into alert_outbox (guild_id, channel_id, subscription_id, event_key, event, "
                "status, created_at, updated_at) values (?, ?, ?, ?, ?, 'pending', ?, ?)",
                [subscription.guild_id, subscription.channel_id, subscription.id, event.key,
                 json.dumps(event.to_dict()), now, now])
            return cursor.lastrowid if cursor.rowcount else None

        return await self._write(write)

    async def record(self, outbox_id: int, status: Status, *, message_id: int | None = None,
                     error: str | None = None, attempted: bool = False) -> None:
        await self._write(lambda db: db.execute(
            "update alert_outbox set status = ?, message_id = coalesce(?, message_id), error = ?, "
            "attempts = attempts + ?, updated_at = ? where id = ?",
            [status, message_id, error, int(attempted), self._now(), outbox_id]))

    async def pending(self, guild_id: int | None = None) -> list[OutboxEntry]:
        """Intents without a message id that may still be sent: status pending (outcome unknown, e.g. a crash
        between send and record) or retry (Discord refused them)."""
        sql = "select * from alert_outbox where message_id is null and status in ('pending', 'retry')"
        params: list[Any] = []
        if guild_id is not None:
            sql, params = sql + " and guild_id = ?", [guild_id]
        rows = await self.database.run(lambda db: self._rows(db, sql + " order by id", params))
        return [OutboxEntry.from_row(r) for r in rows]

    async def outbox(self, guild_id: int) -> list[OutboxEntry]:
        """A guild's outbox rows, oldest first (for status commands and tests)."""
        rows = await self.database.run(lambda db: self._rows(
            db, "select * from alert_outbox where guild_id = ? order by id", [guild_id]))
        return [OutboxEntry.from_row(r) for r in rows]


# --- delivery ---------------------------------------------------------------------------------------------

DeliveryKind = Literal["forbidden", "not_found", "rate_limited", "other"]


class DeliveryError(Exception):
    """Raised by the cog's `send`/`find`. forbidden and not_found are permanent for that channel; rate_limited
    means Discord refused the message (not sent); other means the outcome is unknown (e.g. a timeout)."""

    def __init__(self, kind: DeliveryKind, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind


Send = Callable[[int, int | None, Event], Awaitable[int]]  # (channel_id, role_id, event) -> message_id
Find = Callable[[int, str], Awaitable[int | None]]  # (channel_id, event key) -> message_id if already posted


@dataclass(frozen=True)
class Delivery:
    subscription_id: int
    channel_id: int
    status: Status | Literal["duplicate"]
    message_id: int | None = None
    error: str | None = None


async def _deliver(store: AlertStore, sub: Subscription, event: Event, outbox_id: int, send: Send) -> Delivery:
    """Send one claimed post and record the outcome; never raises except on cancellation."""
    try:
        message_id = await send(sub.channel_id, sub.role_id, event)
    except DeliveryError as exc:
        if exc.kind in ("forbidden", "not_found"):
            reason = f"{exc.kind}: {exc}" if str(exc) != exc.kind else exc.kind
            await store.record(outbox_id, "failed", error=reason, attempted=True)
            await store.disable(sub.guild_id, sub.id, f"{reason} (channel {sub.channel_id}, {event.key})")
            log.warning("alerts: disabled subscription %s in guild %s: %s", sub.id, sub.guild_id, reason)
            return Delivery(sub.id, sub.channel_id, "failed", error=reason)
        status: Status = "retry" if exc.kind == "rate_limited" else "pending"
        await store.record(outbox_id, status, error=f"{exc.kind}: {exc}", attempted=True)
        log.warning("alerts: %s to channel %s not confirmed (%s); left for recovery", event.key, sub.channel_id,
                    exc.kind)
        return Delivery(sub.id, sub.channel_id, status, error=exc.kind)
    except Exception as exc:
        log.exception("alerts: send of %s to channel %s raised", event.key, sub.channel_id)
        await store.record(outbox_id, "pending", error=f"other: {type(exc).__name__}", attempted=True)
        return Delivery(sub.id, sub.channel_id, "pending", error="other")
    await store.record(outbox_id, "sent", message_id=message_id, attempted=True)
    return Delivery(sub.id, sub.channel_id, "sent", message_id)


async def fan_out(subscriptions: Iterable[Subscription], event: Event, send: Send, concurrency: int = 5, *,
                  store: AlertStore) -> list[Delivery]:
    """Post `event` to every enabled subscription that wants it, at most `concurrency` sends at a time.

    Each post is claimed in the outbox first (a channel that already has this event is skipped as
    `duplicate`), then sent, then its message id recorded. forbidden/not_found disable that subscription
    with the reason; no failure stops the other channels.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(sub: Subscription) -> Delivery:
        async with gate:
            outbox_id = await store.claim(sub, event)
            if outbox_id is None:
                return Delivery(sub.id, sub.channel_id, "duplicate")
            return await _deliver(store, sub, event, outbox_id, send)

    wanted = [s for s in subscriptions if s.wants(event.kind)]
    return list(await asyncio.gather(*(one(s) for s in wanted)))


async def recover(store: AlertStore, send: Send, find: Find, *, oldest: date | None = None,
                  max_attempts: int = MAX_ATTEMPTS) -> list[Delivery]:
    """Finish or settle every pending intent, as the module docstring's delivery guarantee says: already in
    the channel -> record its id; known absent -> send now; unknown or older than `oldest` -> skip.

    Run it at start-up before the first check, and (for `retry` rows) at the start of each check: never while
    a `fan_out` is in flight, whose intents are pending too and would look unsent.
    """
    results: list[Delivery] = []
    for entry in await store.pending():
        subs = {s.id: s for s in await store.subscriptions(entry.guild_id)}
        sub = subs.get(entry.subscription_id)
        done = Delivery(entry.subscription_id, entry.channel_id, "skipped")
        if sub is None or not sub.enabled or sub.channel_id != entry.channel_id:
            await store.record(entry.id, "skipped", error="subscription removed or disabled")
            results.append(replace(done, error="subscription removed or disabled"))
            continue
        if oldest is not None and entry.event.day < oldest:
            await store.record(entry.id, "skipped", error=f"stale: {entry.event.day} is before {oldest}")
            results.append(replace(done, error="stale"))
            continue
        why = ""
        try:
            found, looked = await find(entry.channel_id, entry.event.key), True
        except DeliveryError as exc:
            found, looked, why = None, False, exc.kind
        if not looked and entry.status == "pending":  # it may be in the channel: re-sending could duplicate it
            reason = f"could not check the channel ({why}): delivery unknown, not re-sent"
            await store.record(entry.id, "skipped", error=reason)
            results.append(replace(done, error=reason))
            continue
        if found is not None:
            await store.record(entry.id, "sent", message_id=found)
            results.append(Delivery(sub.id, sub.channel_id, "sent", found))
            continue
        if entry.attempts >= max_attempts:
            await store.record(entry.id, "failed", error=f"gave up after {entry.attempts} attempts")
            results.append(replace(done, status="failed", error="attempts"))
            continue
        results.append(await _deliver(store, sub, entry.event, entry.id, send))
    return results


# --- the watcher's steps ----------------------------------------------------------------------------------

async def check_close(store: AlertStore, guild_id: int, frame: pd.DataFrame, through: date, send: Send,
                      concurrency: int = 5) -> list[Delivery]:
    """After a close: detect the guild's events up to `through` (the last completed session), post those of
    `through` (older ones, missed while the bot was down, are stale and only logged), then save the state.

    The state is saved after the posts are claimed, so a crash in between re-detects the same events on the
    next run and the outbox drops them as duplicates, instead of losing them.
    """
    if pd.Timestamp(through) not in frame.index:
        log.info("alerts: no %s bar yet for guild %s; try again later", through, guild_id)
        return []
    zones = await store.levels(guild_id)
    events, state = advance(frame, zones, await store.load_state(guild_id), through)
    subs = await store.subscriptions(guild_id)
    results: list[Delivery] = []
    for event in events:
        if event.day != through:
            log.info("alerts: guild %s: %s is stale, not posted", guild_id, event.key)
            continue
        results.extend(await fan_out(subs, event, send, concurrency, store=store))
    await store.save_state(guild_id, state)
    return results


async def check_intraday(store: AlertStore, guild_id: int, day: date, price: float, prev_close: float,
                         send: Send, concurrency: int = 5) -> list[Delivery]:
    """During a session: post `testing` notices for the guild's levels (the outbox keeps them once a day)."""
    notices = intraday_notices(day, price, prev_close, await store.levels(guild_id))
    if not notices:  # most checks: nothing near a level, no need for the subscriptions
        return []
    subs = await store.subscriptions(guild_id)
    results: list[Delivery] = []
    for notice in notices:
        results.extend(await fan_out(subs, notice, send, concurrency, store=store))
    return results



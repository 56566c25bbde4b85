"""The alert tables: subscriptions, per-guild levels, detector state and the outbox, in the shared database."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from services.alerts._detector import EVENT_KINDS, DetectorState, Event
from services.config import ConfigError, Zones
from services.errors import InputError, is_whole
from services.sql import Connection
from services.storage import Database

MAX_SUBSCRIPTIONS_PER_GUILD = 10
ERASED_MEMBER = 0  # `created_by` of a subscription whose creator asked to be forgotten (Discord ids start at 1)

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
    created_at: datetime  # when the intent was recorded: the post, if any, came after it

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> OutboxEntry:
        return cls(row["id"], row["guild_id"], row["channel_id"], row["subscription_id"],
                   Event.from_dict(json.loads(row["event"])), row["status"], row["message_id"], row["attempts"],
                   row["error"], datetime.fromisoformat(row["created_at"]))


def _snowflake(value: object, what: str) -> int:
    if not is_whole(value, 1, 2**63 - 1):
        raise InputError(f"{what} {value!r} is not a Discord id")
    return int(value)  # type: ignore[call-overload]  # is_whole checked it


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
    """Subscriptions, per-guild levels, detector state and the outbox, in the shared database (either engine).

    Every function taking a `guild_id` reads and writes only that guild's rows. `pending()` without a guild
    is the one bot-wide read (start-up recovery); its rows are never shown to members.
    """

    def __init__(self, database: Database, default_zones: Zones,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.database, self.default_zones, self.clock = database, default_zones, clock

    def _now(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    async def _write(self, fn: Callable[[Connection], Any]) -> Any:
        # synchronous=FULL (Database.durable): an outbox row a power loss rolled back would let the alert go out twice.
        return await self.database.durable(fn)

    @staticmethod
    def _rows(db: Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
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

        def write(db: Connection) -> dict[str, Any]:
            existing = self._rows(db, "select id from alert_subscriptions where guild_id = ? and channel_id = ?",
                                  [guild_id, channel_id])
            if existing:
                db.execute("update alert_subscriptions set events = ?, role_id = ?, enabled = 1, "
                           "disabled_reason = null where id = ?", [kinds, role_id, existing[0]["id"]])
            else:
                (count,) = db.execute("select count(*) from alert_subscriptions where guild_id = ?",
                                      [guild_id]).fetchone() or (0,)
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

    @staticmethod
    def erase_member(db: Connection, guild_id: int, user_id: int) -> int:
        """Forget the member in this guild's alert tables (run by services.privacy inside its transaction): their
        id leaves the subscriptions they created and the levels they set (both are the server's settings and
        stay). The rows changed; the tables hold no other member data (the outbox has channel and role ids only)."""
        subs = db.execute("update alert_subscriptions set created_by = ? where guild_id = ? and created_by = ?",
                          [ERASED_MEMBER, guild_id, user_id]).rowcount
        levels = db.execute("update alert_levels set updated_by = null where guild_id = ? and updated_by = ?",
                            [guild_id, user_id]).rowcount
        return subs + levels

    # mutes (a moderator's "mute this event here for 24 h" button under an alert)

    async def mute(self, guild_id: int, channel_id: int, kind: str, hours: float = 24) -> datetime:
        """No `kind` alerts in the channel for `hours` from now (again: from now again); when the mute ends."""
        if kind not in EVENT_KINDS:
            raise InputError(f"unknown alert event {kind!r}")
        until = self.clock() + timedelta(hours=hours)
        await self._write(lambda db: db.execute(
            "insert into alert_mutes (guild_id, channel_id, kind, until) values (?, ?, ?, ?) "
            "on conflict (guild_id, channel_id, kind) do update set until = excluded.until",
            [guild_id, channel_id, kind, until.isoformat(timespec="seconds")]))
        return until

    async def muted_channels(self, guild_id: int, kind: str) -> set[int]:
        """The guild's channels where `kind` alerts are muted now."""
        rows = await self.database.run(lambda db: self._rows(
            db, "select channel_id from alert_mutes where guild_id = ? and kind = ? and until > ?",
            [guild_id, kind, self._now()]))
        return {r["channel_id"] for r in rows}

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
                raise InputError(f"{exc}. Example: {self.default_zones.to_text()} (support, entry zone low-high, "
                                 "resistance zone low-high)") from None
        else:
            zones = levels
        if not all(math.isfinite(v) for v in zones.values()):
            raise InputError("levels must be finite numbers")
        row = {"guild_id": guild_id, **asdict(zones), "updated_by": updated_by, "updated_at": self._now()}

        def write(db: Connection) -> None:
            db.execute("insert into alert_levels (guild_id, support, entry_low, entry_high, resistance_low, "
                       "resistance_high, updated_by, updated_at) values (:guild_id, :support, :entry_low, "
                       ":entry_high, :resistance_low, :resistance_high, :updated_by, :updated_at) on conflict "
                       "(guild_id) do update set support = excluded.support, entry_low = excluded.entry_low, "
                       "entry_high = excluded.entry_high, resistance_low = excluded.resistance_low, "
                       "resistance_high = excluded.resistance_high, updated_by = excluded.updated_by, "
                       "updated_at = excluded.updated_at", row)
            db.execute("delete from alert_state where guild_id = ?", [guild_id])

        await self._write(write)
        return zones

    async def reset_levels(self, guild_id: int) -> Zones:
        """Back to the configured default levels."""
        def write(db: Connection) -> None:
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
            "insert into alert_state (guild_id, state, updated_at) values (?, ?, ?) on conflict (guild_id) "
            "do update set state = excluded.state, updated_at = excluded.updated_at",
            [guild_id, state.to_json(), self._now()]))

    # outbox

    async def claim(self, subscription: Subscription, event: Event) -> int | None:
        """Record the intent to post `event` to the subscription's channel; the new outbox id, or None when
        that channel already has a row for this event (sent, in flight, or settled)."""
        now = self._now()

        def write(db: Connection) -> int | None:
            # The unique (guild, channel, event) key decides, in the one shared database, which process posts.
            rows = db.execute(
                "insert into alert_outbox (guild_id, channel_id, subscription_id, event_key, event, status, "
                "created_at, updated_at) values (?, ?, ?, ?, ?, 'pending', ?, ?) on conflict do nothing returning id",
                [subscription.guild_id, subscription.channel_id, subscription.id, event.key,
                 json.dumps(event.to_dict()), now, now]).fetchall()
            return rows[0][0] if rows else None

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


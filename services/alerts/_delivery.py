"""Delivery: post each event to the subscribed channels exactly once, and the watcher's two steps.

Delivery guarantee (what `fan_out` and `recover` implement):

    Each (channel, event) pair is posted at most once, and exactly once whenever the channel can be read.
    Before sending, we insert an outbox row whose unique key is (guild, channel, event key): a second attempt,
    a second watcher or a restart finds the row and does not send. After Discord answers we store the message
    id. A crash between the send and that write leaves a row without a message id; on start-up `pending()`
    returns it and `recover()` reconciles: it asks the cog to look for the post in every message of the channel
    since the intent was recorded (less RECOVERY_MARGIN; every post carries the event key in its footer, and a
    per-channel nonce that Discord itself dedupes for a few minutes). Found: we record its id, nothing is
    re-sent. Known absent: we send it now. Cannot tell (the bot cannot read the channel), or the event is
    stale: we skip it and record why. The outbox commits with synchronous=FULL (`Database.durable`), so a
    power loss cannot roll an intent back after its post went out.
    We chose at-most-once over at-least-once because a duplicated market alert (and its role ping) in a
    community channel is worse than one missing alert, and the reconciliation makes the missing case rare:
    it needs a crash in the milliseconds between Discord's answer and a local SQLite write, plus a channel
    the bot cannot read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Literal

import pandas as pd

from services.alerts._detector import BREADTH_WINDOW, DetectorState, Event, advance, breadth_event, intraday_notices
from services.alerts._store import AlertStore, Status, Subscription
from services.config import Zones
from services.members import member_breadth, member_data
from services.storage import Database

log = logging.getLogger(__package__)

MAX_ATTEMPTS = 3
# How far before an intent's record time its post is looked for: the post came after the record by the bot's
# clock, and Discord stamps message ids by its own; an hour covers any sane clock skew.
RECOVERY_MARGIN = timedelta(hours=1)
Detected = tuple[list[Event], DetectorState]
Detections = dict[tuple[object, ...], Detected]  # one close check's memo: (levels, state, day) -> detect's answer

DeliveryKind = Literal["forbidden", "not_found", "rate_limited", "other"]


class DeliveryError(Exception):
    """Raised by the cog's `send`/`find`. forbidden and not_found are permanent for that channel; rate_limited
    means Discord refused the message (not sent); other means the outcome is unknown (e.g. a timeout)."""

    def __init__(self, kind: DeliveryKind, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind


Send = Callable[[int, int | None, Event, Zones], Awaitable[int]]  # (channel_id, role_id, event, levels) -> message id
# (channel_id, event key, since) -> message_id if already posted: every message since `since` is looked at
Find = Callable[[int, str, datetime], Awaitable[int | None]]


@dataclass(frozen=True)
class Delivery:
    subscription_id: int
    channel_id: int
    status: Status | Literal["duplicate"]
    message_id: int | None = None
    error: str | None = None


async def _deliver(store: AlertStore, sub: Subscription, event: Event, zones: Zones, outbox_id: int,
                   send: Send) -> Delivery:
    """Send one claimed post and record the outcome; never raises except on cancellation."""
    try:
        message_id = await send(sub.channel_id, sub.role_id, event, zones)
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
                  store: AlertStore, zones: Zones) -> list[Delivery]:
    """Post `event` to every enabled subscription (of one guild, whose levels are `zones`) that wants it, at
    most `concurrency` sends at a time.

    Channels where a moderator muted this kind of event (`AlertStore.mute`) are left out. Each post is claimed
    in the outbox first (a channel that already has this event is skipped as `duplicate`), then sent, then its
    message id recorded. forbidden/not_found disable that subscription with the reason; no failure stops the
    other channels.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(sub: Subscription) -> Delivery:
        async with gate:
            outbox_id = await store.claim(sub, event)
            if outbox_id is None:
                return Delivery(sub.id, sub.channel_id, "duplicate")
            return await _deliver(store, sub, event, zones, outbox_id, send)

    wanted = [s for s in subscriptions if s.wants(event.kind)]
    if wanted and (muted := await store.muted_channels(wanted[0].guild_id, event.kind)):
        log.info("alerts: %s not posted to muted channels %s", event.key, sorted(muted))
        wanted = [s for s in wanted if s.channel_id not in muted]
    return list(await asyncio.gather(*(one(s) for s in wanted)))


async def recover(store: AlertStore, send: Send, find: Find, *, oldest: date | None = None,
                  max_attempts: int = MAX_ATTEMPTS, guilds: Collection[int] | None = None) -> list[Delivery]:
    """Finish or settle every pending intent, as the module docstring's delivery guarantee says: already in
    the channel -> record its id; known absent -> send now; unknown or older than `oldest` -> skip.

    Run it at start-up before the first check, and (for `retry` rows) at the start of each check: never while
    a `fan_out` is in flight, whose intents are pending too and would look unsent. With several shard processes
    on one database, `guilds` are this process's: another process's intents may be in flight.
    """
    results: list[Delivery] = []
    for entry in await store.pending():
        if guilds is not None and entry.guild_id not in guilds:
            continue
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
            found, looked = await find(entry.channel_id, entry.event.key, entry.created_at - RECOVERY_MARGIN), True
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
        zones = await store.levels(entry.guild_id)
        results.append(await _deliver(store, sub, entry.event, zones, entry.id, send))
    return results


# --- the watcher's steps ----------------------------------------------------------------------------------

async def check_close(store: AlertStore, guild_id: int, frame: pd.DataFrame, through: date, send: Send,
                      concurrency: int = 5, memo: Detections | None = None) -> list[Delivery]:
    """After a close: detect the guild's events up to `through` (the last completed session), post those of
    `through` (older ones, missed while the bot was down, are stale and only logged), then save the state.

    The state is saved after the posts are claimed, so a crash in between re-detects the same events on the
    next run and the outbox drops them as duplicates, instead of losing them. Guilds with the same levels and
    state see the same events: pass one `memo` to the checks of one close (same `frame`) to detect them once,
    off the event loop (a detector rebuilt from the whole history takes ~0.1 s).
    """
    if pd.Timestamp(through) not in frame.index:
        log.info("alerts: no %s bar yet for guild %s; try again later", through, guild_id)
        return []
    zones = await store.levels(guild_id)
    state = await store.load_state(guild_id)
    key = (zones.values(), state, through)
    detected = memo.get(key) if memo is not None else None
    if detected is None:
        detected = await asyncio.to_thread(advance, frame, zones, state, through)
        if memo is not None:
            memo[key] = detected
    events, state = detected
    subs = await store.subscriptions(guild_id)
    results: list[Delivery] = []
    for event in events:
        if event.day != through:
            log.info("alerts: guild %s: %s is stale, not posted", guild_id, event.key)
            continue
        results.extend(await fan_out(subs, event, send, concurrency, store=store, zones=zones))
    await store.save_state(guild_id, state)
    return results


async def breadth_alert(database: Database | None, frame: pd.DataFrame, through: date) -> Event | None:
    """The `breadth` event of session `through` (services.alerts._detector.breadth_event) from the member data an
    answer would use (`database`: the live closes, None: the bundle); None when the member closes do not reach
    `through` yet or the share did not cross."""
    data, _ = await member_data(database)
    if data.as_of != through:
        return None
    report = await asyncio.to_thread(member_breadth, data, "IWM")
    days = [date.fromisoformat(str(d)) for d in report.series.dates]
    return breadth_event(days, list(report.series.pct_above[BREADTH_WINDOW]), frame, through)


async def check_breadth(store: AlertStore, guild_id: int, event: Event, send: Send,
                        concurrency: int = 5) -> list[Delivery]:
    """Post a `breadth` event to the guild's channels that want it (the outbox keeps it once per channel)."""
    zones = await store.levels(guild_id)
    return await fan_out(await store.subscriptions(guild_id), event, send, concurrency, store=store, zones=zones)


async def check_intraday(store: AlertStore, guild_id: int, day: date, price: float, prev_close: float,
                         send: Send, concurrency: int = 5) -> list[Delivery]:
    """During a session: post `testing` notices for the guild's levels (the outbox keeps them once a day)."""
    zones = await store.levels(guild_id)
    notices = intraday_notices(day, price, prev_close, zones)
    if not notices:  # most checks: nothing near a level, no need for the subscriptions
        return []
    subs = await store.subscriptions(guild_id)
    results: list[Delivery] = []
    for notice in notices:
        results.extend(await fan_out(subs, notice, send, concurrency, store=store, zones=zones))
    return results



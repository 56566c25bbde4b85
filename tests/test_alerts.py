"""Alerts on the real bundled IWM history: the detector against independent computations, the replay, the
SQLite subscriptions/levels/outbox, fan-out failures, and exactly-once posting across a crash."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services import market_calendar
from services.alerts import (
    EVENT_KINDS,
    NEW_HIGH_QUIET_SESSIONS,
    AlertStore,
    DeliveryError,
    DetectorState,
    Event,
    PostCache,
    advance,
    alert_chart,
    breadth_crossings,
    breadth_event,
    build_post,
    check_breadth,
    check_close,
    detect,
    fan_out,
    footer_text,
    format_event,
    intraday_notices,
    parse_events,
    post_nonce,
    recover,
    replay,
    run_replay,
)
from services.charts import Renderer, render_levels
from services.config import Zones
from services.errors import InputError
from services.market import MarketData, read_bundled_csv
from services.storage import Database
from tests.support.postgres import schema_url

ROOT = Path(__file__).resolve().parent.parent
Z = Zones()  # 200, 205-220, 240-245
START, END = date(2024, 1, 1), date(2026, 8, 21)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return read_bundled_csv("IWM")


@pytest.fixture(scope="module")
def window_events(frame: pd.DataFrame) -> list[Event]:
    return replay(frame, Z, START, END)


@pytest.fixture
async def store(database: Database) -> AlertStore:
    return AlertStore(database, Z)  # both engines (tests/conftest.py)


def record_closes(close: pd.Series) -> list[int]:
    """Positions of the closes above every earlier close, by a plain loop (the first close is the first record)."""
    values = close.to_numpy(dtype=float)
    records, high = [0], values[0]
    for i in range(1, len(values)):
        if values[i] > high:
            records.append(i)
            high = values[i]
    return records


def quiet_new_highs(close: pd.Series, quiet: int = NEW_HIGH_QUIET_SESSIONS) -> list[pd.Timestamp]:
    """The record closes with at least `quiet` sessions strictly between them and the record close before."""
    records = record_closes(close)
    return [close.index[b] for a, b in itertools.pairwise(records) if b - a - 1 >= quiet]


def expected_events(frame: pd.DataFrame, z: Zones) -> set[tuple[date, str]]:
    """The same rules computed independently, vectorised over the whole history."""
    c = frame["close"]
    found: list[tuple[pd.Timestamp, str]] = []

    def turns_on(on: pd.Series, off: pd.Series, crossed: pd.Series) -> pd.Series:
        # 1 on an "on" close, 0 on an "off" close, otherwise the last decisive close's value (start: off); it
        # counts only when the previous close was on the other side of the level (`crossed`; never the first bar).
        regime = pd.Series(np.where(on, 1.0, np.where(off, 0.0, np.nan)), c.index).ffill().fillna(0.0)
        return (regime == 1) & (regime.shift(1, fill_value=0.0) == 0) & crossed

    prev = c.shift(1)
    found += [(d, "breakout") for d in c.index[turns_on(c > z.resistance_high, c < z.resistance_low,
                                                        prev <= z.resistance_high)]]
    found += [(d, "breakdown") for d in c.index[turns_on(c < z.support, c > z.entry_low, prev >= z.support)]]
    entry = (prev > z.entry_high) & (c >= z.entry_low) & (c <= z.entry_high)
    found += [(d, "entry_zone") for d in c.index[entry]]
    found += [(d, "new_high") for d in quiet_new_highs(c)]

    adj = frame["adj_close"]
    last_days = adj.groupby(adj.index.to_period("M")).apply(lambda s: s.index[-1])
    month_end = adj.loc[last_days.to_numpy()]
    ups = (month_end.pct_change() > 0).astype(int).to_numpy()
    run = np.zeros(len(ups), dtype=int)
    for i, up in enumerate(ups):
        run[i] = (run[i - 1] + 1) if up and i else int(up)
    streak_days = month_end.index[run >= 3]
    found += [(d, "streak") for d in streak_days if d != frame.index[-1]]  # the last month is unfinished
    return {(d.date(), kind) for d, kind in found}


# --- the detector on the real history ----------------------------------------------------------------------

def test_first_breakout_after_the_2021_high(frame: pd.DataFrame) -> None:
    close = frame["close"]
    high_day = close.loc["2021"].idxmax()
    after = close[close.index > high_day]
    expected = after[after > Z.resistance_high].index[0].date()
    events = replay(frame, Z, high_day.date(), END)
    breakouts = [e for e in events if e.kind == "breakout"]
    assert breakouts[0].day == expected == date(2025, 10, 3)
    assert breakouts[0].level == Z.resistance_high and breakouts[0].close > Z.resistance_high


def test_no_repeated_breakout_while_above_the_zone(frame: pd.DataFrame) -> None:
    events = replay(frame, Z, frame.index[0].date(), END)
    days = [pd.Timestamp(e.day) for e in events if e.kind == "breakout"]
    close = frame["close"]
    assert len(days) >= 2
    for first, second in itertools.pairwise(days):
        between = close[(close.index > first) & (close.index < second)]
        assert (between < Z.resistance_low).any(), f"{second.date()} re-fired without a close below the zone"
    # Closes above the zone top that did not fire, e.g. 2025-10-06 (246.81, the day after 245.83 fired).
    above = close.loc["2025-10-03":][close.loc["2025-10-03":] > Z.resistance_high]
    assert len(above) > len(days)


def test_new_high_first_beats_the_2021_closing_high(frame: pd.DataFrame) -> None:
    close = frame["close"]
    high_2021 = close.loc["2021"].max()
    later = close.loc["2022":]
    expected = later[later > high_2021].index[0].date()
    assert expected == date(2025, 9, 18) and round(high_2021, 2) == 242.56
    firsts = [e for e in replay(frame, Z, date(2022, 1, 1), END) if e.kind == "new_high"]
    assert firsts[0].day == expected
    assert firsts[0].level == pytest.approx(high_2021) and firsts[0].close == pytest.approx(244.84, abs=0.005)
    assert "2021-11-08" in firsts[0].detail


def test_new_high_fires_once_per_run_of_records(frame: pd.DataFrame, window_events: list[Event]) -> None:
    """Every record close used to alert: 36 in the window (the first on 2025-09-18, ~11 months to 2026-08-21).
    Only the first after a quiet month (NEW_HIGH_QUIET_SESSIONS sessions without one) alerts now."""
    close = frame["close"].dropna()
    in_window = [close.index[i] for i in record_closes(close) if START <= close.index[i].date() <= END]
    assert len(in_window) == 36 and in_window[0].date() == date(2025, 9, 18)
    highs = [e for e in window_events if e.kind == "new_high"]
    expected = [d.date() for d in quiet_new_highs(close) if START <= d.date() <= END]
    assert [e.day for e in highs] == expected == [date(2025, 9, 18), date(2025, 12, 4), date(2026, 4, 16),
                                                   date(2026, 8, 4)]
    assert "above 250.33 (2025-10-15), the first in 34 sessions" in highs[1].detail


def test_replay_from_the_first_bar_crosses_nothing_on_it(frame: pd.DataFrame) -> None:
    """The first bar (2000-05-26, far below support 200) has no previous close on the other side: no breakdown.
    The first breakdown is the first close below support after a close at or above it."""
    close = frame["close"].dropna()
    events = replay(frame, Z, close.index[0].date(), END)
    assert all(e.day != close.index[0].date() for e in events) and close.iloc[0] < Z.support
    first_cross = next(close.index[i].date() for i in range(1, len(close))
                       if close.iloc[i] < Z.support <= close.iloc[i - 1])
    assert next(e.day for e in events if e.kind == "breakdown") == first_cross


def test_a_state_stored_before_the_quiet_count_is_rebuilt(frame: pd.DataFrame) -> None:
    _, state = advance(frame, Z, None, date(2025, 12, 3))
    old = json.loads(state.to_json())
    del old["since_high"]
    events, rebuilt = advance(frame, Z, DetectorState.from_json(json.dumps(old)), date(2025, 12, 4))
    assert [e.kind for e in events] == ["new_high"] and rebuilt.since_high == 0
    assert rebuilt == advance(frame, Z, None, date(2025, 12, 4))[1]


def test_streak_events(window_events: list[Event]) -> None:
    streaks = [(e.day, e.streak) for e in window_events if e.kind == "streak"]
    assert streaks == [(date(2025, 7, 31), 3), (date(2025, 8, 29), 4), (date(2025, 9, 30), 5),
                       (date(2025, 10, 31), 6), (date(2025, 11, 28), 7), (date(2026, 6, 30), 3)]


def test_replay_window_matches_an_independent_computation(frame: pd.DataFrame, window_events: list[Event]) -> None:
    expected = {(d, k) for d, k in expected_events(frame, Z) if START <= d <= END}
    got = [(e.day, e.kind) for e in window_events]
    assert len(got) == len(set(got))
    assert set(got) == expected
    assert got == sorted(got, key=lambda x: x[0])
    counts = {k: sum(kind == k for _, kind in got) for k in ("breakout", "breakdown", "entry_zone", "new_high",
                                                              "streak")}
    assert counts == {"breakout": 4, "breakdown": 4, "entry_zone": 16, "new_high": 4, "streak": 6}
    assert [d for d, k in got if k == "breakout"] == [date(2025, 10, 3), date(2025, 10, 14), date(2025, 11, 25),
                                                      date(2026, 3, 31)]


def test_whole_history_matches_too(frame: pd.DataFrame) -> None:
    got = {(e.day, e.kind) for e in replay(frame, Z, frame.index[0].date(), END)}
    assert got == expected_events(frame, Z)


def test_other_levels(frame: pd.DataFrame) -> None:
    zones = Zones.parse("150,160-170,180-190")
    got = {(e.day, e.kind) for e in replay(frame, zones, date(2019, 1, 1), END)}
    assert got == {(d, k) for d, k in expected_events(frame, zones) if d >= date(2019, 1, 1)}


def test_watcher_day_by_day_equals_the_replay(frame: pd.DataFrame) -> None:
    """The watcher sees only bars up to each close and keeps its state as JSON between runs; month ends come
    from the exchange calendar. It must post what the replay shows."""
    start = date(2025, 6, 1)
    state: DetectorState | None = None
    seen: list[Event] = []
    for stamp in frame.loc[pd.Timestamp(start):].index:
        events, new_state = advance(frame.loc[:stamp], Z, state, stamp.date(), market_calendar.closes_month)
        seen += [e for e in events if e.day >= start]  # the first run builds its state from history
        state = DetectorState.from_json(new_state.to_json())
    assert seen == replay(frame, Z, start, END)


def test_detect_is_pure_and_idempotent() -> None:
    state = DetectorState.fresh(Z)
    events, state = detect(date(2025, 1, 2), 239.0, Z, state)
    assert events == [] and state.ath_close == 239.0  # a first close is no "new" high
    events, after = detect(date(2025, 1, 3), 246.0, Z, state)
    assert [e.kind for e in events] == ["breakout"]  # a record, but the day after the last one: no new_high
    assert detect(date(2025, 1, 3), 246.0, Z, after) == ([], after)  # same day again: nothing
    events, after2 = detect(date(2025, 1, 6), 241.0, Z, after)  # back inside the zone: still disarmed
    quiet = after2
    for i in range(NEW_HIGH_QUIET_SESSIONS - 1):  # 20 sessions without a record in all
        _, quiet = detect(date(2025, 2, 1) + pd.Timedelta(days=i), 241.0, Z, quiet)
    assert quiet.since_high == NEW_HIGH_QUIET_SESSIONS
    events, _ = detect(date(2025, 3, 1), 247.0, Z, quiet)
    assert [e.kind for e in events] == ["new_high"]
    events, _ = detect(date(2025, 1, 7), 247.0, Z, after2)  # a record after 1 quiet session: none
    assert events == []
    _, rearmed = detect(date(2025, 1, 8), 239.9, Z, after2)
    events, _ = detect(date(2025, 1, 9), 245.5, Z, rearmed)
    assert [e.kind for e in events] == ["breakout"]
    assert DetectorState.from_json(rearmed.to_json()) == rearmed


def test_breakdown_and_entry_zone_rearm() -> None:
    state = DetectorState.fresh(Z)
    kinds = []
    for i, close in enumerate([230, 221, 215, 199, 198, 200, 199.5, 204, 199, 206, 199, 221, 210, 221, 219]):
        events, state = detect(date(2025, 2, 1 + i), close, Z, state)
        kinds.append([e.kind for e in events])
    # No second breakdown while price chops between support and the entry low; one after a close above 205.
    assert kinds == [[], [], ["entry_zone"], ["breakdown"], [], [], [], [], [], [], ["breakdown"], [],
                     ["entry_zone"], [], ["entry_zone"]]


def test_advance_rebuilds_state_for_new_levels(frame: pd.DataFrame) -> None:
    _, state = advance(frame, Z, None, date(2025, 10, 2))
    assert state.last_day == date(2025, 10, 2) and state.breakout_armed
    other = Zones.parse("150,160-170,180-190")
    events, rebuilt = advance(frame, other, state, date(2025, 10, 3))
    assert rebuilt.matches(other) and not rebuilt.breakout_armed  # long above 190 already
    assert events == [] and rebuilt.ath_day == date(2025, 10, 3)  # a record 10 sessions after the last one
    assert rebuilt.since_high == 0 and state.since_high == 10  # 2025-09-19..10-02 after the 09-18 record


def test_intraday_notices() -> None:
    day = date(2025, 10, 3)
    [notice] = intraday_notices(day, 245.4, 244.0, Z)
    assert (notice.kind, notice.tag, notice.level) == ("testing", "resistance", 245.0)
    assert notice.key == "2025-10-03 testing resistance"
    assert intraday_notices(day, 245.4, 244.0, Z, seen={notice.key}) == []
    assert intraday_notices(day, 246.0, 245.5, Z) == []  # already above at the previous close
    [down] = intraday_notices(day, 199.0, 201.0, Z)
    assert down.tag == "support" and down.key != notice.key
    assert intraday_notices(date(2025, 10, 6), 245.4, 244.0, Z)[0].key != notice.key


def test_post_and_chart(frame: pd.DataFrame, window_events: list[Event]) -> None:
    event = next(e for e in window_events if e.kind == "new_high")
    post = build_post(event, Z)
    assert post.title == "IWM closed at a record 244.84" and post.colour == "up"
    assert post.key in post.footer and post.footer == footer_text(event)
    assert ("Previous high", "242.56") in post.fields
    assert len(post_nonce(123, event.key)) <= 25 and post_nonce(123, event.key) != post_nonce(124, event.key)
    spec = alert_chart(frame, event, Z)
    assert spec.highlight == event.level and spec.frame.index[-1].date() == event.day
    assert (spec.frame.index[-1] - spec.frame.index[0]).days <= 186
    assert render_levels(spec)[:8] == b"\x89PNG\r\n\x1a\n"
    streak = next(e for e in window_events if e.kind == "streak")
    assert build_post(streak, Z).title == "IWM: 3 up months in a row" and build_post(streak, Z).level is None


class CountingRenderer(Renderer):
    """Renders in a thread and counts the renders; the first `failures` of them raise."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(workers=1)
        self.renders, self.failures = 0, failures

    async def render(self, fn: Callable[[Any], bytes], spec: Any) -> bytes:
        self.renders += 1
        if self.renders <= self.failures:
            raise RuntimeError("render failed")
        return await super().render(fn, spec)


async def test_post_and_chart_prepared_once_per_event_and_levels(window_events: list[Event]) -> None:
    renderer = CountingRenderer(failures=1)
    posts = PostCache(MarketData([]), renderer)
    event = next(e for e in window_events if e.kind == "breakout")
    other = Zones.parse("150,160-170,180-190")
    try:
        with pytest.raises(RuntimeError, match="render failed"):  # a failed render is not kept
            await posts.get(event, Z)
        shared = await asyncio.gather(*(posts.get(event, Z) for _ in range(5)))  # five channels at once
        assert renderer.renders == 2 and all(p is shared[0] for p in shared)
        assert shared[0].post == build_post(event, Z) and shared[0].chart[:8] == b"\x89PNG\r\n\x1a\n"
        assert await posts.get(Event.from_dict(event.to_dict()), Z) is shared[0]  # the same event from the outbox
        elsewhere = await posts.get(event, other)  # a guild with other levels: its own post and chart
        assert renderer.renders == 3 and elsewhere.post == build_post(event, other) != shared[0].post
    finally:
        renderer.close()


async def test_run_replay_text() -> None:
    market = MarketData([])
    text = await run_replay(market, START, END, Z)
    lines = text.splitlines()
    assert lines[0].startswith("IWM alert replay 2024-01-01..2026-08-21 · levels 200,205-220,240-245")
    assert "34 events" in lines[0] and len(lines) == 35
    assert any(line.startswith("2025-10-03  breakout    close  245.83  level  245.00") for line in lines)
    with pytest.raises(InputError, match="after"):
        await run_replay(market, END, START, Z)
    with pytest.raises(InputError, match="no IWM bars"):
        await run_replay(market, date(2027, 1, 1), date(2027, 2, 1), Z)


def test_format_event() -> None:
    event = Event("breakdown", date(2024, 1, 2), 199.52, 200.0, "closed below support 200.00")
    assert format_event(event) == "2024-01-02  breakdown   close  199.52  level  200.00  closed below support 200.00"


# --- subscriptions, levels, state ---------------------------------------------------------------------------

async def test_subscription_validation(store: AlertStore) -> None:
    sub = await store.subscribe(1, 10, "breakout, new-high", created_by=7, role_id=99)
    assert sub.events == ("breakout", "new_high") and sub.role_id == 99 and sub.enabled
    again = await store.subscribe(1, 10, ["all"], created_by=8)
    assert again.id == sub.id and again.events == EVENT_KINDS and again.role_id is None
    with pytest.raises(InputError, match="unknown alert event moon"):
        await store.subscribe(1, 11, "breakout,moon", created_by=7)
    with pytest.raises(InputError, match="at least one"):
        await store.subscribe(1, 11, " , ", created_by=7)
    with pytest.raises(InputError, match="not a Discord id"):
        await store.subscribe(1, -5, "breakout", created_by=7)
    for channel in range(11, 20):
        await store.subscribe(1, channel, "breakout", created_by=7)
    with pytest.raises(InputError, match="most allowed"):
        await store.subscribe(1, 20, "breakout", created_by=7)
    assert len(await store.subscriptions(1)) == 10
    assert parse_events("ALL") == EVENT_KINDS


async def test_guild_isolation(store: AlertStore) -> None:
    a = await store.subscribe(1, 10, "breakout", created_by=7)
    await store.subscribe(2, 20, "breakout", created_by=8)
    assert [s.channel_id for s in await store.subscriptions(1)] == [10]
    assert [s.channel_id for s in await store.subscriptions(2)] == [20]
    assert await store.subscriptions(3) == []
    assert not await store.unsubscribe(2, 10)  # guild 2 cannot remove guild 1's channel
    await store.disable(2, a.id, "not yours")
    assert (await store.subscriptions(1))[0].enabled
    await store.set_levels(2, "150,160-170,180-190", updated_by=8)
    assert await store.levels(1) == Z and await store.levels(2) == Zones(150, 160, 170, 180, 190)
    event = Event("breakout", date(2025, 10, 3), 245.83, 245.0, "x")
    assert await store.claim(a, event) is not None
    assert await store.pending(2) == [] and len(await store.pending(1)) == 1
    assert await store.outbox(2) == []
    assert await store.unsubscribe(1, 10) and await store.subscriptions(1) == []
    assert await store.guild_ids() == [2]


async def erase(store: AlertStore, guild_id: int, user_id: int) -> int:
    return await store.database.run(lambda d: AlertStore.erase_member(d, guild_id, user_id))


async def test_erase_member_keeps_the_servers_settings(store: AlertStore) -> None:
    await store.subscribe(1, 10, "breakout", created_by=7, role_id=99)
    await store.subscribe(1, 11, "streak", created_by=8)
    await store.subscribe(2, 20, "breakout", created_by=7)
    await store.set_levels(1, "190,195-210,230-235", updated_by=7)
    await store.set_levels(2, "150,160-170,180-190", updated_by=7)
    before = await store.subscriptions(1)

    def rows(db: Any) -> list[tuple[Any, ...]]:
        subs = db.execute("select guild_id, channel_id, created_by from alert_subscriptions order by channel_id")
        levels = db.execute("select guild_id, updated_by from alert_levels order by guild_id")
        return [*subs.fetchall(), *levels.fetchall()]

    assert await erase(store, 1, 7) == 2
    assert await store.database.run(rows) == [(1, 10, 0), (1, 11, 8), (2, 20, 7), (1, None), (2, 7)]
    after = await store.subscriptions(1)
    assert [(s.events, s.role_id, s.enabled) for s in after] == [(s.events, s.role_id, s.enabled) for s in before]
    assert await store.levels(1) == Zones(190, 195, 210, 230, 235)
    assert await erase(store, 1, 7) == 0 and await erase(store, 3, 8) == 0


async def test_set_levels_validation_and_state_reset(store: AlertStore) -> None:
    with pytest.raises(InputError, match="support < entry low"):
        await store.set_levels(1, "200,220-205,240-245")
    with pytest.raises(InputError, match="expected SUPPORT"):
        await store.set_levels(1, "two hundred")
    with pytest.raises(InputError, match="finite"):
        await store.set_levels(1, "200,205-220,240-inf")
    assert await store.levels(1) == Z
    await store.save_state(1, DetectorState.fresh(Z))
    assert await store.load_state(1) == DetectorState.fresh(Z)
    assert await store.set_levels(1, " 190 , 195-210 , 230-235 ") == Zones(190, 195, 210, 230, 235)
    assert await store.load_state(1) is None  # rebuilt for the new levels on the next check
    assert await store.reset_levels(1) == Z and await store.levels(1) == Z


# --- fan-out and exactly-once -------------------------------------------------------------------------------

class Channels:
    """A fake Discord: messages per channel, and the cog-side send/find built on it."""

    def __init__(self, failures: dict[int, str] | None = None) -> None:
        self.messages: dict[int, list[tuple[int, str]]] = {}
        self.failures = failures or {}
        self.next_id = 1000
        self.inflight = self.max_inflight = 0
        self.zones: list[Zones] = []  # the levels each send was given
        self.since: list[datetime] = []  # the time bound of each search

    async def send(self, channel_id: int, role_id: int | None, event: Event, zones: Zones) -> int:
        self.zones.append(zones)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            if channel_id in self.failures:
                raise DeliveryError(self.failures[channel_id], f"channel {channel_id}")  # type: ignore[arg-type]
            self.next_id += 1
            self.messages.setdefault(channel_id, []).append((self.next_id, footer_text(event)))
            return self.next_id
        finally:
            self.inflight -= 1

    async def find(self, channel_id: int, key: str, since: datetime) -> int | None:
        self.since.append(since)
        return next((mid for mid, footer in self.messages.get(channel_id, []) if footer.endswith(key)), None)


EVENT = Event("breakout", date(2025, 10, 3), 245.83, 245.0, "closed above the resistance zone top 245.00", 244.02)


async def test_fan_out_survives_forbidden_and_not_found(store: AlertStore) -> None:
    for channel in range(101, 106):
        await store.subscribe(1, channel, "breakout,new_high", created_by=7)
    await store.subscribe(1, 106, "streak", created_by=7)  # does not want breakouts
    channels = Channels({102: "forbidden", 103: "not_found"})
    results = await fan_out(await store.subscriptions(1), EVENT, channels.send, store=store, zones=Z)
    assert {r.channel_id: r.status for r in results} == {101: "sent", 102: "failed", 103: "failed", 104: "sent",
                                                        105: "sent"}
    assert sorted(channels.messages) == [101, 104, 105]
    subs = {s.channel_id: s for s in await store.subscriptions(1)}
    assert not subs[102].enabled and "forbidden" in (subs[102].disabled_reason or "")
    assert not subs[103].enabled and "not_found" in (subs[103].disabled_reason or "")
    assert all(subs[c].enabled for c in (101, 104, 105, 106))
    outbox = {e.channel_id: e for e in await store.outbox(1)}
    assert {c: e.status for c, e in outbox.items()} == {101: "sent", 102: "failed", 103: "failed", 104: "sent",
                                                       105: "sent"}
    assert outbox[101].message_id == channels.messages[101][0][0]
    # The same event again (a second run, a second watcher): nothing is sent twice.
    again = await fan_out(await store.subscriptions(1), EVENT, channels.send, store=store, zones=Z)
    assert {r.status for r in again} == {"duplicate"}
    assert sum(len(m) for m in channels.messages.values()) == 3
    assert await store.pending() == []


async def test_fan_out_bounds_concurrency(store: AlertStore) -> None:
    for channel in range(201, 209):
        await store.subscribe(1, channel, "breakout", created_by=7)
    channels = Channels()
    results = await fan_out(await store.subscriptions(1), EVENT, channels.send, concurrency=3, store=store,
                            zones=Z)
    assert [r.status for r in results] == ["sent"] * 8
    assert 1 <= channels.max_inflight <= 3


async def test_rate_limited_is_retried_by_recovery(store: AlertStore) -> None:
    await store.subscribe(1, 301, "breakout", created_by=7)
    channels = Channels({301: "rate_limited"})
    [result] = await fan_out(await store.subscriptions(1), EVENT, channels.send, store=store, zones=Z)
    assert result.status == "retry"
    [entry] = await store.pending()
    assert entry.status == "retry" and entry.attempts == 1
    channels.failures.clear()
    [done] = await recover(store, channels.send, channels.find)
    assert done.status == "sent" and len(channels.messages[301]) == 1
    assert await store.pending() == []


async def test_recovery_leaves_other_guilds_intents_alone(store: AlertStore) -> None:
    """A shard process starting beside another: the other's pending intents may be in flight, not its to send."""
    await store.subscribe(1, 301, "breakout", created_by=7)
    await store.subscribe(2, 302, "breakout", created_by=7)
    channels = Channels({301: "rate_limited", 302: "rate_limited"})
    for guild in (1, 2):
        await fan_out(await store.subscriptions(guild), EVENT, channels.send, store=store, zones=Z)
    channels.failures.clear()
    [done] = await recover(store, channels.send, channels.find, guilds={1})
    assert done.channel_id == 301 and done.status == "sent" and 302 not in channels.messages
    assert [e.guild_id for e in await store.pending()] == [2]


CRASH_SCRIPT = textwrap.dedent("""
    import asyncio, json, os, sys
    from datetime import date
    from services.alerts import AlertStore, Event, fan_out, footer_text
    from services.config import Zones
    from services.storage import Database

    db_path, channel_path, event_json = sys.argv[1:4]

    async def send(channel_id, role_id, event, zones):
        # Discord accepted the post (it is in the channel) ... and the process dies before recording its id.
        with open(channel_path, "w") as fh:
            json.dump([[4242, footer_text(event)]], fh)
        os._exit(3)

    async def main():
        db = Database(db_path)
        await db.open()
        store = AlertStore(db, Zones())
        event = Event.from_dict(json.loads(event_json))
        await fan_out(await store.subscriptions(1), event, send, store=store, zones=Zones())

    asyncio.run(main())
""")


async def test_exactly_once_across_a_crash_between_send_and_record(tmp_path: Path) -> None:
    db_path, channel_path = tmp_path / "crash.db", tmp_path / "channel.json"
    async with Database(db_path) as db:
        store = AlertStore(db, Z)
        await store.subscribe(1, 401, "breakout", created_by=7)
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CRASH_SCRIPT, str(db_path), str(channel_path),
                         json.dumps(EVENT.to_dict())],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    channel = Channels()
    channel.messages[401] = [tuple(m) for m in json.loads(channel_path.read_text())]  # type: ignore[misc]

    async with Database(db_path) as db:  # the restart
        store = AlertStore(db, Z)
        [entry] = await store.pending()
        assert entry.message_id is None and entry.status == "pending" and entry.event == EVENT
        # The watcher runs again before recovery: the intent blocks a second post.
        [dup] = await fan_out(await store.subscriptions(1), EVENT, channel.send, store=store, zones=Z)
        assert dup.status == "duplicate"
        # Recovery finds the post by its footer key and records it; nothing is re-sent.
        [done] = await recover(store, channel.send, channel.find)
        assert (done.status, done.message_id) == ("sent", 4242)
        # searched back to the intent's record time less the margin, not through a count of recent messages
        assert abs(datetime.now(UTC) - entry.created_at) < timedelta(minutes=5)
        assert channel.since == [entry.created_at - timedelta(hours=1)]
        assert channel.messages[401] == [(4242, footer_text(EVENT))]
        assert await store.pending() == []
        [row] = await store.outbox(1)
        assert (row.status, row.message_id) == ("sent", 4242)


async def test_the_outbox_commits_with_synchronous_full(tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL can lose the last commits on a power loss (an intent lost: the alert goes out
    twice); the outbox's transactions are committed with FULL, and the connection is back to NORMAL after.
    (SQLite's; on PostgreSQL every commit is durable: test_postgres_commits_wait_for_the_wal_flush.)"""
    async with Database(tmp_path / "alerts.db") as db:
        await outbox_commits_with_synchronous_full(AlertStore(db, Z))


async def outbox_commits_with_synchronous_full(store: AlertStore) -> None:
    statements: list[str] = []
    await store.database.run(lambda db: db.conn.set_trace_callback(statements.append))
    sub = await store.subscribe(1, 701, "breakout", created_by=7)
    statements.clear()
    outbox_id = await store.claim(sub, EVENT)
    assert outbox_id is not None
    await store.record(outbox_id, "sent", message_id=1, attempted=True)
    await store.database.run(lambda db: db.conn.set_trace_callback(None))
    writes = [i for i, sql in enumerate(statements) if "alert_outbox" in sql]
    commits = [i for i, sql in enumerate(statements) if sql.strip().upper() == "COMMIT"]
    fulls = [i for i, sql in enumerate(statements) if sql == "PRAGMA synchronous=FULL"]
    normals = [i for i, sql in enumerate(statements) if sql == "PRAGMA synchronous=NORMAL"]
    assert len(writes) == len(commits) == len(fulls) == len(normals) == 2, statements
    for full, write, commit, normal in zip(fulls, writes, commits, normals, strict=True):
        assert full < write < commit < normal  # each write committed while the level is FULL
    assert await store.database.run(lambda db: db.conn.execute("PRAGMA synchronous").fetchone()[0]) == 1  # NORMAL


async def test_postgres_commits_wait_for_the_wal_flush(postgres: str) -> None:
    with schema_url(postgres) as url:
        async with Database(url) as db:
            assert await db.run(lambda d: d.execute("SHOW synchronous_commit").fetchone()[0]) == "on"


async def test_one_claim_wins_across_processes_sharing_postgres(postgres: str) -> None:
    """Each shard process has its own connection to the one database: however many claim the same (guild,
    channel, event) at once, exactly one gets an outbox id and the others see the row (the unique key decides)."""
    with schema_url(postgres) as url:
        async with Database(url) as first:
            sub = await AlertStore(first, Z).subscribe(1, 801, "breakout", created_by=7)
        processes = [Database(url) for _ in range(4)]
        for db in processes:
            await db.open()
        try:
            stores = [AlertStore(db, Z) for db in processes]
            for days in range(5):  # five events, each claimed by four processes at once
                event = dataclasses.replace(EVENT, day=EVENT.day + timedelta(days=days))
                ids = await asyncio.gather(*(store.claim(sub, event) for store in stores))
                assert len([i for i in ids if i is not None]) == 1, ids
            rows = await stores[0].outbox(1)
            assert len(rows) == 5 and len({r.event.key for r in rows}) == 5
        finally:
            for db in processes:
                await db.close()


async def test_recovery_when_unsure_skips_and_when_absent_sends(store: AlertStore) -> None:
    a = await store.subscribe(1, 501, "breakout", created_by=7)
    b = await store.subscribe(1, 502, "breakout", created_by=7)
    c = await store.subscribe(1, 503, "breakout", created_by=7)
    old = Event("breakout", date(2025, 3, 3), 246.0, 245.0, "x")
    for sub in (a, b):  # crashed after claiming: sent or not, nobody knows
        await store.claim(sub, EVENT)
    await store.claim(c, old)
    channels = Channels()

    async def find(channel_id: int, key: str, since: datetime) -> int | None:
        if channel_id == 502:
            raise DeliveryError("forbidden", "missing Read Message History")
        return await channels.find(channel_id, key, since)

    await store.set_levels(1, "190,195-210,230-235")
    results = {r.channel_id: r for r in await recover(store, channels.send, find, oldest=date(2025, 10, 1))}
    assert results[501].status == "sent" and channels.messages[501][0][1] == footer_text(EVENT)  # known absent
    assert channels.zones == [Zones(190, 195, 210, 230, 235)]  # posted with the guild's levels
    assert results[502].status == "skipped" and "not re-sent" in (results[502].error or "")  # unknown
    assert results[503].status == "skipped" and results[503].error == "stale"
    assert 502 not in channels.messages and 503 not in channels.messages
    assert await store.pending() == []


async def test_check_close_posts_once_and_saves_state(store: AlertStore, frame: pd.DataFrame) -> None:
    await store.subscribe(1, 601, "breakout,new_high", created_by=7)
    channels = Channels()
    first = await check_close(store, 1, frame, date(2025, 10, 3), channels.send)
    assert [r.status for r in first] == ["sent"] and channels.zones == [Z]  # a breakout; the record is no new_high
    assert [f for _, f in channels.messages[601]] == [footer_text(e) for e in replay(frame, Z, date(2025, 10, 3),
                                                                                    date(2025, 10, 3))]
    assert (await store.load_state(1)).last_day == date(2025, 10, 3)  # type: ignore[union-attr]
    await store.save_state(1, DetectorState.fresh(Z))  # as if the state write had been lost in a crash
    again = await check_close(store, 1, frame, date(2025, 10, 3), channels.send)
    assert {r.status for r in again} == {"duplicate"} and len(channels.messages[601]) == 1
    assert await check_close(store, 1, frame, date(2026, 10, 6), channels.send) == []  # no bar yet


# --- breadth ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled_breadth() -> tuple[list[date], list[float]]:
    """IWM's share of members above their 200-day average on the bundled member closes."""
    from services.members import load_member_data, member_breadth

    series = member_breadth(load_member_data(), "IWM").series
    return [date.fromisoformat(str(d)) for d in series.dates], [float(x) for x in series.pct_above[200]]


def loop_crossings(days: list[date], pct: list[float]) -> list[tuple[date, str]]:
    """Crossings of 50% by a plain loop over the days after the last one found: the first day that crosses the
    other way with the share at least 5 points past 50% in between (or anything before the first crossing),
    else the first day 5 points past 50% on the other side."""
    known = [(d, p) for d, p in zip(days, pct, strict=True) if not np.isnan(p)]
    out: list[tuple[date, str]] = []
    start, last = 1, ""
    while start < len(known):
        hit = None
        for i in range(start, len(known)):
            before, now = known[i - 1][1], known[i][1]
            went_far = last == "" or any(p >= 55 if last == "up" else p <= 45 for _, p in known[start - 1: i])
            if (last != "up" and before < 50 <= now and went_far) or (last == "down" and now >= 55):
                hit = i, "up"
            elif (last != "down" and before >= 50 > now and went_far) or (last == "up" and now <= 45):
                hit = i, "down"
            if hit:
                break
        if hit is None:
            break
        out.append((known[hit[0]][0], hit[1]))
        start, last = hit[0] + 1, hit[1]
    return out


def test_breadth_crossings_match_a_plain_loop(bundled_breadth) -> None:
    days, pct = bundled_breadth
    found = breadth_crossings(days, pct)
    assert [(c.day, c.direction) for c in found] == loop_crossings(days, pct)
    assert {c.direction for c in found} == {"up", "down"}  # the bundled history crosses both ways
    for c in found:
        i = days.index(c.day)
        assert c.pct == pct[i] and (c.pct >= 50) == (c.direction == "up")


async def test_a_breadth_crossing_is_posted_once_to_the_channels_that_want_it(store: AlertStore, frame,
                                                                              bundled_breadth) -> None:
    days, pct = bundled_breadth
    crossing = breadth_crossings(days, pct)[-1]
    i = days.index(crossing.day)
    assert breadth_event(days[: i + 1], pct[: i + 1], frame, days[i - 1]) is None  # not the newest day
    event = breadth_event(days[: i + 1], pct[: i + 1], frame, crossing.day)
    assert event is not None and event.kind == "breadth" and event.tag == crossing.direction
    assert event.close == float(frame["close"].get(pd.Timestamp(crossing.day), np.nan)) or np.isnan(event.close)
    assert f"{crossing.pct:.0f}% of them closed above their 200-day average" in event.detail
    await store.subscribe(1, 10, "breadth", created_by=7)
    await store.subscribe(1, 11, "breakout", created_by=7)
    channels = Channels()
    first = await check_breadth(store, 1, event, channels.send)
    again = await check_breadth(store, 1, event, channels.send)
    assert [r.status for r in first] == ["sent"] and [r.status for r in again] == ["duplicate"]
    assert list(channels.messages) == [10] and len(channels.messages[10]) == 1
    post = build_post(event, Z)
    assert post.title == f"Russell 2000 breadth crossed 50% ({crossing.direction})"
    assert post.colour == crossing.direction and post.footer == footer_text(event)


async def test_a_breadth_post_carries_the_breadth_chart_to_its_day(bundled_breadth) -> None:
    """A breadth alert shows what crossed: the members' breadth chart (6 months to the event's day), not the price
    chart the price alerts carry; the same PNG `/iwm breadth period:6mo as_of:<day>` draws."""
    from services.breadth import breadth_answer

    days, pct = bundled_breadth
    day = loop_crossings(days, pct)[-1][0]
    upto = days.index(day) + 1
    frame = (await MarketData([]).bars("IWM")).frame
    event = breadth_event(days[:upto], pct[:upto], frame, day)
    assert event is not None and event.day == day
    renderer = Renderer(processes=False)
    try:
        prepared = await PostCache(MarketData([]), renderer).get(event, Z)
        _, expected = await breadth_answer(MarketData([]), renderer, "6mo", day)
    finally:
        renderer.close()
    assert prepared.post == build_post(event, Z) and prepared.chart == expected

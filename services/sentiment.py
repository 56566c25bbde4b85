"""Weekly sentiment polls in the style of the AAII Investor Sentiment Survey, and `/iwm sentiment`.

The bot posts Discord native polls (answers Bullish / Neutral / Bearish, answer ids 1, 2, 3). This module keeps
a log of the vote events, closes polls against Discord's final voter lists, makes sure each result is posted
once, opens scheduled weekly polls, and reports a guild's results against the AAII long-run averages.

Times are aware datetimes, stored as fixed-width ISO 8601 UTC text (so text order is time order).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

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
from services.storage import Database

log = logging.getLogger(__name__)

# AAII Investor Sentiment Survey: weekly since July 1987, "Over the next six months, will the stock market rise,
# stay flat or fall?". Long-run averages as published by AAII (aaii.com/sentimentsurvey).
AAII_SOURCE = "AAII Investor Sentiment Survey, long-run averages since 1987 (aaii.com/sentimentsurvey)"
AAII_BULLISH = 37.5
AAII_NEUTRAL = 31.5
AAII_BEARISH = 31.0
AAII_SPREAD = AAII_BULLISH - AAII_BEARISH  # percentage points

BULLISH, NEUTRAL, BEARISH = 1, 2, 3  # Discord poll answer ids, in the order the answers are posted
ANSWERS = {BULLISH: "Bullish", NEUTRAL: "Neutral", BEARISH: "Bearish"}
ANSWER_EMOJI = {BULLISH: "🐂", NEUTRAL: "😐", BEARISH: "🐻"}

DEFAULT_QUESTION = "Where will IWM be in six months?"
MAX_QUESTION = 300  # Discord's limit on a poll question
MIN_HOURS, MAX_HOURS = 1, 768  # Discord accepts 1 hour to 32 days
DEFAULT_HOURS = 168  # one week, like AAII
# Below this many votes a poll's percentages are noise (one member moves them by 10 points or more), so the
# report says "not enough votes" instead.
MIN_VOTES = 10
MAX_WEEKS = 520
# A result claim older than this is considered abandoned (the poster crashed) and may be claimed again.
CLAIM_TIMEOUT = timedelta(minutes=15)
# A scheduled poll may still open this long after its time (the bot was down); later, that week is skipped.
SCHEDULE_GRACE = timedelta(hours=12)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sentiment_polls (
    message_id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    question TEXT NOT NULL,
    created_at TEXT NOT NULL,
    ends_at TEXT NOT NULL,
    multiselect INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'open',          -- open | closed
    closed_at TEXT,
    bullish INTEGER, neutral INTEGER, bearish INTEGER,  -- final tally, set when closed
    claimed_at TEXT,                              -- a closer is posting the result
    result_message_id INTEGER                     -- the result was posted
);
CREATE INDEX IF NOT EXISTS sentiment_polls_guild ON sentiment_polls (guild_id, created_at);
CREATE INDEX IF NOT EXISTS sentiment_polls_pending ON sentiment_polls (result_message_id, ends_at);
CREATE TABLE IF NOT EXISTS sentiment_votes (
    message_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    answer_id INTEGER NOT NULL,
    live INTEGER NOT NULL,
    added_at TEXT,
    removed_at TEXT,
    updated_at TEXT NOT NULL,                     -- time of the last event applied to this row
    PRIMARY KEY (message_id, user_id, answer_id)
);
CREATE INDEX IF NOT EXISTS sentiment_votes_user ON sentiment_votes (user_id);
CREATE TABLE IF NOT EXISTS sentiment_schedules (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    weekday INTEGER NOT NULL,                     -- 0 = Monday
    time_utc TEXT NOT NULL,                       -- HH:MM
    question TEXT NOT NULL,
    hours INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    last_opened_on TEXT,                          -- date of the last occurrence opened
    UNIQUE (guild_id, channel_id)
);
"""


def iso_utc(at: datetime) -> str:
    """Fixed-width UTC text for storage; text comparison then orders by time. Naive datetimes are refused."""
    if at.tzinfo is not UTC:
        if at.tzinfo is None:
            raise ValueError(f"{at!r} has no timezone: pass an aware datetime (e.g. datetime.now(UTC))")
        at = at.astimezone(UTC)
    # isoformat(timespec="microseconds"), written out: twice as fast, and every logged message needs one
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00" % (  # noqa: UP031 (an f-string is slower here)
        at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond)


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def create_tables(d: sqlite_utils.Database) -> None:
    d.executescript(SCHEMA)


# --- validation -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PollSpec:
    question: str
    hours: int


def validate_question(question: str | None) -> str:
    text = DEFAULT_QUESTION if question is None else question.strip()
    if not text:
        raise InputError("the poll question is empty: write a question, or leave it out for the default")
    if len(text) > MAX_QUESTION:
        raise InputError(f"the poll question has {len(text)} characters; Discord allows at most {MAX_QUESTION}")
    return text


def validate_hours(hours: int | None) -> int:
    if hours is None:
        return DEFAULT_HOURS
    if not is_whole(hours, MIN_HOURS, MAX_HOURS):
        raise InputError(
            f"poll length {hours!r} hours: Discord polls last {MIN_HOURS} to {MAX_HOURS} whole hours (32 days); "
            f"the default is {DEFAULT_HOURS} (one week)"
        )
    return hours


def validate_poll(question: str | None = None, hours: int | None = None) -> PollSpec:
    """Check a new poll before it is posted. InputError says what is wrong."""
    return PollSpec(validate_question(question), validate_hours(hours))


# --- tallies and results --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Percentages:
    bullish: float
    neutral: float
    bearish: float

    @property
    def spread(self) -> float:
        """Bull-bear spread in percentage points, as AAII reports it."""
        return self.bullish - self.bearish


AAII_AVERAGES = Percentages(AAII_BULLISH, AAII_NEUTRAL, AAII_BEARISH)


@dataclass(frozen=True)
class Tally:
    bullish: int = 0
    neutral: int = 0
    bearish: int = 0

    @property
    def total(self) -> int:
        return self.bullish + self.neutral + self.bearish

    @property
    def enough(self) -> bool:
        return self.total >= MIN_VOTES

    def percentages(self) -> Percentages | None:
        """Shares of the votes in percent, or None below MIN_VOTES."""
        if not self.enough:
            return None
        n = self.total
        return Percentages(self.bullish / n * 100, self.neutral / n * 100, self.bearish / n * 100)

    @classmethod
    def from_counts(cls, counts: Mapping[int, int]) -> Tally:
        return cls(counts.get(BULLISH, 0), counts.get(NEUTRAL, 0), counts.get(BEARISH, 0))


@dataclass(frozen=True)
class Poll:
    message_id: int
    guild_id: int
    channel_id: int
    question: str
    created_at: datetime
    ends_at: datetime
    status: str  # open | closed
    multiselect: bool
    final: Tally | None  # set once closed
    result_message_id: int | None

    @classmethod
    def from_row(cls, row: Mapping) -> Poll:
        final = None if row["status"] != "closed" else Tally(row["bullish"] or 0, row["neutral"] or 0,
                                                                 row["bearish"] or 0)
        return cls(row["message_id"], row["guild_id"], row["channel_id"], row["question"],
                   parse_utc(row["created_at"]), parse_utc(row["ends_at"]), row["status"], bool(row["multiselect"]),
                   final, row["result_message_id"])


@dataclass(frozen=True)
class PollResult:
    poll: Poll
    tally: Tally  # final when the poll is closed, live otherwise

    @property
    def percentages(self) -> Percentages | None:
        return self.tally.percentages()


# --- schedules ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    id: int
    guild_id: int
    channel_id: int
    weekday: int  # 0 = Monday
    time_utc: time
    question: str
    hours: int
    created_at: datetime
    last_opened_on: date | None  # before this claim, when returned by due_schedules

    @classmethod
    def from_row(cls, row: Mapping) -> Schedule:
        return cls(row["id"], row["guild_id"], row["channel_id"], row["weekday"], time.fromisoformat(row["time_utc"]),
                   row["question"], row["hours"], parse_utc(row["created_at"]),
                   date.fromisoformat(row["last_opened_on"]) if row["last_opened_on"] else None)

    def occurrence(self, now: datetime) -> datetime:
        """The latest scheduled time at or before `now`."""
        now = now.astimezone(UTC)
        day = now.date() - timedelta(days=(now.weekday() - self.weekday) % 7)
        at = datetime.combine(day, self.time_utc, tzinfo=UTC)
        return at if at <= now else at - timedelta(days=7)


def parse_time_utc(value: time | str) -> time:
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    try:
        hour, minute = (int(part) for part in value.strip().split(":"))
        return time(hour, minute)
    except (ValueError, AttributeError) as exc:
        raise InputError(f"time {value!r}: write it as HH:MM in UTC, e.g. 14:00") from exc


# --- the store ------------------------------------------------------------------------------------------

def _one(d: sqlite_utils.Database, sql: str, params: list) -> dict | None:
    return next(d.query(sql, params), None)


def _live_counts(d: sqlite_utils.Database, message_id: int) -> dict[int, int]:
    rows = d.execute("SELECT answer_id, count(*) FROM sentiment_votes WHERE message_id = ? AND live = 1 "
                     "GROUP BY answer_id", [message_id]).fetchall()
    return dict(rows)


def delete_member_votes(d: sqlite_utils.Database, guild_id: int, user_id: int) -> int:
    """Delete a member's votes on this guild's polls (runs on the database thread, inside the caller's
    transaction when there is one). Final tallies of closed polls are counts without ids and stay."""
    cur = d.execute("DELETE FROM sentiment_votes WHERE user_id = ? AND message_id IN "
                    "(SELECT message_id FROM sentiment_polls WHERE guild_id = ?)", [user_id, guild_id])
    return cur.rowcount


class SentimentStore:
    """Polls, vote log and schedules. All methods run their SQL on the database thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        """Create the tables (idempotent)."""
        await self.db.run(create_tables)

    # polls

    async def register_poll(
        self, guild_id: int, channel_id: int, message_id: int, spec: PollSpec, created_at: datetime,
        *, ends_at: datetime | None = None, multiselect: bool = False,
    ) -> Poll:
        """Record a poll the bot just posted (idempotent). `ends_at` defaults to created_at + spec.hours."""
        row = {
            "message_id": message_id, "guild_id": guild_id, "channel_id": channel_id, "question": spec.question,
            "created_at": iso_utc(created_at),
            "ends_at": iso_utc(ends_at or created_at + timedelta(hours=spec.hours)),
            "multiselect": int(multiselect), "status": "open",
        }

        def write(d: sqlite_utils.Database) -> dict:
            d.execute("INSERT OR IGNORE INTO sentiment_polls (message_id, guild_id, channel_id, question, "
                      "created_at, ends_at, multiselect, status) VALUES (:message_id, :guild_id, :channel_id, "
                      ":question, :created_at, :ends_at, :multiselect, :status)", row)
            return _one(d, "SELECT * FROM sentiment_polls WHERE message_id = ?", [message_id])

        return Poll.from_row(await self.db.run(write))

    async def get_poll(self, message_id: int) -> Poll | None:
        row = await self.db.run(lambda d: _one(d, "SELECT * FROM sentiment_polls WHERE message_id = ?",
                                               [message_id]))
        return Poll.from_row(row) if row else None

    async def record_vote(self, message_id: int, user_id: int, answer_id: int, added: bool, at: datetime) -> bool:
        """Apply one vote add/remove event; True if it changed the log.

        Idempotent: an add for a live vote or a remove for a removed one changes nothing, and an event older than
        the last one applied to the same (poll, member, answer) is ignored, so replayed or reordered gateway
        events do not double count. On a single-choice poll an add replaces the member's other live answer.
        Events for unknown or closed polls, or for answer ids other than 1-3, are ignored.
        """
        stamp = iso_utc(at)
        if answer_id not in ANSWERS:
            return False

        def apply(d: sqlite_utils.Database) -> bool:
            poll = _one(d, "SELECT status, multiselect FROM sentiment_polls WHERE message_id = ?", [message_id])
            if poll is None or poll["status"] != "open":
                return False
            key = [message_id, user_id, answer_id]
            with d.atomic():
                row = _one(d, "SELECT live, updated_at FROM sentiment_votes WHERE message_id = ? AND user_id = ? "
                              "AND answer_id = ?", key)
                if row is not None and (row["updated_at"] > stamp or bool(row["live"]) == added):
                    return False
                if added:
                    if not poll["multiselect"]:
                        d.execute("UPDATE sentiment_votes SET live = 0, removed_at = ?, updated_at = ? "
                                  "WHERE message_id = ? AND user_id = ? AND answer_id != ? AND live = 1 "
                                  "AND updated_at <= ?", [stamp, stamp, message_id, user_id, answer_id, stamp])
                    d.execute("INSERT INTO sentiment_votes (message_id, user_id, answer_id, live, added_at, "
                              "updated_at) VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT DO UPDATE SET live = 1, "
                              "added_at = excluded.added_at, removed_at = NULL, updated_at = excluded.updated_at",
                              [*key, stamp, stamp])
                else:
                    # A remove with no row yet (it overtook its add) leaves a tombstone so the late add is ignored.
                    d.execute("INSERT INTO sentiment_votes (message_id, user_id, answer_id, live, removed_at, "
                              "updated_at) VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT DO UPDATE SET live = 0, "
                              "removed_at = excluded.removed_at, updated_at = excluded.updated_at",
                              [*key, stamp, stamp])
            return True

        return await self.db.run(apply)

    async def tally(self, message_id: int) -> Tally:
        """Live votes in the log (the final tally once the poll is closed)."""
        def read(d: sqlite_utils.Database) -> Tally:
            row = _one(d, "SELECT * FROM sentiment_polls WHERE message_id = ?", [message_id])
            return _result(d, row).tally if row else Tally.from_counts(_live_counts(d, message_id))

        return await self.db.run(read)

    async def polls_to_close(self, now: datetime) -> list[Poll]:
        """Polls whose result still has to be posted: ended (also when the bot starts after the deadline) or
        already reconciled, with no result posted and no live claim on posting it. Oldest deadline first."""
        stamp, stale = iso_utc(now), iso_utc(now - CLAIM_TIMEOUT)
        rows = await self.db.run(lambda d: list(d.query(
            "SELECT * FROM sentiment_polls WHERE result_message_id IS NULL AND (ends_at <= ? OR status = 'closed') "
            "AND (claimed_at IS NULL OR claimed_at < ?) ORDER BY ends_at", [stamp, stale])))
        return [Poll.from_row(r) for r in rows]

    async def reconcile(
        self, message_id: int, final_voters: Mapping[int, Set[int]], at: datetime | None = None
    ) -> Tally | None:
        """Make the log agree with Discord's final voter lists and close the poll with that tally.

        Votes cast while the bot was offline are added, votes the log still holds but Discord does not are
        removed. Safe to run again (for instance when posting the result failed). None for an unknown poll.
        """
        stamp = iso_utc(at or datetime.now(UTC))
        unknown = set(final_voters) - set(ANSWERS)
        if unknown:
            raise ValueError(f"answer ids {sorted(unknown)} are not poll answers {sorted(ANSWERS)}")
        final = {(user, answer) for answer, users in final_voters.items() for user in users}

        def apply(d: sqlite_utils.Database) -> Tally | None:
            if _one(d, "SELECT 1 AS x FROM sentiment_polls WHERE message_id = ?", [message_id]) is None:
                return None
            with d.atomic():
                live = set(d.execute("SELECT user_id, answer_id FROM sentiment_votes WHERE message_id = ? "
                                     "AND live = 1", [message_id]).fetchall())
                d.conn.executemany(
                    "UPDATE sentiment_votes SET live = 0, removed_at = ?, updated_at = ? "
                    "WHERE message_id = ? AND user_id = ? AND answer_id = ?",
                    [(stamp, stamp, message_id, user, answer) for user, answer in live - final])
                d.conn.executemany(
                    "INSERT INTO sentiment_votes (message_id, user_id, answer_id, live, added_at, updated_at) "
                    "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT DO UPDATE SET live = 1, added_at = excluded.added_at, "
                    "removed_at = NULL, updated_at = excluded.updated_at",
                    [(message_id, user, answer, stamp, stamp) for user, answer in final - live])
                tally = Tally.from_counts({a: len(users) for a, users in final_voters.items()})
                d.execute("UPDATE sentiment_polls SET status = 'closed', closed_at = coalesce(closed_at, ?), "
                          "bullish = ?, neutral = ?, bearish = ? WHERE message_id = ?",
                          [stamp, tally.bullish, tally.neutral, tally.bearish, message_id])
            return tally

        return await self.db.run(apply)

    async def claim_result(self, message_id: int, now: datetime) -> bool:
        """Take the right to post this poll's result. Only one caller gets True until the claim is released or
        goes stale (CLAIM_TIMEOUT); False once the result is posted."""
        stamp, stale = iso_utc(now), iso_utc(now - CLAIM_TIMEOUT)
        cur = await self.db.run(lambda d: d.execute(
            "UPDATE sentiment_polls SET claimed_at = ? WHERE message_id = ? AND result_message_id IS NULL "
            "AND (claimed_at IS NULL OR claimed_at < ?)", [stamp, message_id, stale]))
        return cur.rowcount == 1

    async def release_claim(self, message_id: int) -> None:
        """Give the claim back after posting failed, so the next closer retries."""
        await self.db.run(lambda d: d.execute(
            "UPDATE sentiment_polls SET claimed_at = NULL WHERE message_id = ? AND result_message_id IS NULL",
            [message_id]))

    async def mark_result_posted(self, message_id: int, result_message_id: int) -> bool:
        """Record the posted result message; False if a result was already recorded."""
        cur = await self.db.run(lambda d: d.execute(
            "UPDATE sentiment_polls SET result_message_id = ? WHERE message_id = ? AND result_message_id IS NULL",
            [result_message_id, message_id]))
        return cur.rowcount == 1

    async def forget_member(self, guild_id: int, user_id: int) -> int:
        """Delete the member's votes on this guild's polls; returns how many rows went."""
        def run(d: sqlite_utils.Database) -> int:
            with d.atomic():
                return delete_member_votes(d, guild_id, user_id)

        return await self.db.run(run)

    # schedules

    async def set_schedule(
        self, guild_id: int, channel_id: int, weekday: int, at: time | str, now: datetime,
        question: str | None = None, hours: int | None = None,
    ) -> Schedule:
        """Open a poll in this channel every week on `weekday` (0 = Monday) at `at` UTC. Replaces the channel's
        schedule; the first poll opens at the next occurrence after now."""
        if not is_whole(weekday, 0, 6):
            raise InputError(f"weekday {weekday!r}: use 0 (Monday) to 6 (Sunday)")
        spec = validate_poll(question, hours)
        row = {"guild_id": guild_id, "channel_id": channel_id, "weekday": weekday,
               "time_utc": parse_time_utc(at).strftime("%H:%M"), "question": spec.question, "hours": spec.hours,
               "created_at": iso_utc(now)}

        def write(d: sqlite_utils.Database) -> dict:
            d.execute("INSERT INTO sentiment_schedules (guild_id, channel_id, weekday, time_utc, question, hours, "
                      "created_at) VALUES (:guild_id, :channel_id, :weekday, :time_utc, :question, :hours, "
                      ":created_at) ON CONFLICT (guild_id, channel_id) DO UPDATE SET weekday = excluded.weekday, "
                      "time_utc = excluded.time_utc, question = excluded.question, hours = excluded.hours, "
                      "created_at = excluded.created_at", row)
            return _one(d, "SELECT * FROM sentiment_schedules WHERE guild_id = ? AND channel_id = ?",
                        [guild_id, channel_id])

        return Schedule.from_row(await self.db.run(write))

    async def remove_schedule(self, guild_id: int, channel_id: int) -> bool:
        cur = await self.db.run(lambda d: d.execute(
            "DELETE FROM sentiment_schedules WHERE guild_id = ? AND channel_id = ?", [guild_id, channel_id]))
        return cur.rowcount > 0

    async def schedules(self, guild_id: int) -> list[Schedule]:
        rows = await self.db.run(lambda d: list(d.query(
            "SELECT * FROM sentiment_schedules WHERE guild_id = ? ORDER BY channel_id", [guild_id])))
        return [Schedule.from_row(r) for r in rows]

    async def due_schedules(self, now: datetime) -> list[Schedule]:
        """Schedules whose weekly time has come, each claimed for this week so it opens at most once a week.

        Due means: the latest occurrence is after the schedule was set, not yet opened, and at most
        SCHEDULE_GRACE ago (after a long outage the missed week is skipped rather than opened days late).
        If posting fails, `release_schedule` gives the week back.
        """
        now = now.astimezone(UTC)

        def claim(d: sqlite_utils.Database) -> list[Schedule]:
            due = []
            with d.atomic():
                for row in d.query("SELECT * FROM sentiment_schedules ORDER BY id"):
                    schedule = Schedule.from_row(row)
                    at = schedule.occurrence(now)
                    opened = schedule.last_opened_on
                    if at <= schedule.created_at or now - at > SCHEDULE_GRACE or (opened and opened >= at.date()):
                        continue
                    due.append(schedule)
                d.conn.executemany("UPDATE sentiment_schedules SET last_opened_on = ? WHERE id = ?",
                                   [(s.occurrence(now).date().isoformat(), s.id) for s in due])
            return due

        return await self.db.run(claim)

    async def release_schedule(self, schedule: Schedule) -> None:
        """Undo a due_schedules claim (the poll could not be posted), so the next check retries it."""
        previous = schedule.last_opened_on.isoformat() if schedule.last_opened_on else None
        await self.db.run(lambda d: d.execute(
            "UPDATE sentiment_schedules SET last_opened_on = ? WHERE id = ?", [previous, schedule.id]))


# --- /iwm sentiment -------------------------------------------------------------------------------------

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


def _result(d: sqlite_utils.Database, row: Mapping) -> PollResult:
    poll = Poll.from_row(row)
    if poll.final is not None:
        return PollResult(poll, poll.final)
    return PollResult(poll, Tally.from_counts(_live_counts(d, poll.message_id)))


def compute_sentiment(d: sqlite_utils.Database, guild_id: int, weeks: int, now: datetime) -> SentimentReport:
    """The report for one guild (runs on the database thread)."""
    since = now - timedelta(weeks=weeks)
    create_tables(d)
    closed = [_result(d, r) for r in d.query(
        "SELECT * FROM sentiment_polls WHERE guild_id = ? AND status = 'closed' AND created_at >= ? "
        "ORDER BY created_at, message_id", [guild_id, iso_utc(since)])]
    latest_row = _one(d, "SELECT * FROM sentiment_polls WHERE guild_id = ? AND status = 'closed' "
                         "ORDER BY created_at DESC, message_id DESC LIMIT 1", [guild_id])
    open_row = _one(d, "SELECT * FROM sentiment_polls WHERE guild_id = ? AND status = 'open' "
                       "ORDER BY created_at DESC, message_id DESC LIMIT 1", [guild_id])
    counted = [p for p in (r.percentages for r in closed) if p is not None]
    average = None
    if counted:
        average = Percentages(*(float(np.mean([getattr(p, k) for p in counted]))
                                for k in ("bullish", "neutral", "bearish")))
    return SentimentReport(
        guild_id=guild_id, weeks=weeks, since=since,
        latest=_result(d, latest_row) if latest_row else None,
        current=_result(d, open_row) if open_row else None,
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

"""Community log: what members say in opted-in channels, and `/iwm community`.

Logging is opt-in per channel (`set_logging`). Every write goes through one `LogWriter`: events are queued
without waiting and written in batches on the database thread, in the order they arrived, so a burst of messages
never blocks the event loop. Deletions blank the content (and earlier versions) and keep a tombstone;
`forget_member` removes everything about a member; `purge_older_than` applies the retention period.

Tone is deliberately crude: counts of a few bullish and bearish words (see BULLISH_WORDS / BEARISH_WORDS); it
ignores negation and sarcasm, so read it as a rough mood gauge over many messages, never per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from services import sentiment
from services.charts import (
    BLUE,
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
from services.market import MarketData, ProviderError
from services.sentiment import iso_utc
from services.storage import Database

log = logging.getLogger(__name__)

BATCH_SIZE = 500  # rows per transaction at most
FLUSH_INTERVAL = 0.5  # seconds: the longest an event waits in memory when traffic is light
WRITE_ATTEMPTS = 3  # a batch whose transaction fails (disk full, locked) is retried, then dropped and logged
MAX_REPORT_DAYS = 365
MAX_EXPORT_DAYS = 3650
TOP = 10

# $IWM, $spy, $BRK.B: 1-5 letters and an optional class letter; not $100, not US$5, not $TOOLONG.
# The "$" comes first (the lookbehind after it) so the regex engine can skip straight to each "$".
CASHTAG = re.compile(r"\$(?<![\w$]\$)([A-Za-z]{1,5}(?:\.[A-Za-z])?)(?!\w)")
# Whole lower-cased words (and a few emoji) counted for tone. Ambiguous words ("long", "short", "call", "up")
# are left out on purpose.
BULLISH_WORDS = frozenset({
    "bull", "bulls", "bullish", "calls", "moon", "mooning", "rip", "ripping", "rally", "rallying", "breakout",
    "buy", "buying", "bought", "green", "pump", "pumping", "squeeze", "higher", "🚀", "📈", "🐂",
})
BEARISH_WORDS = frozenset({
    "bear", "bears", "bearish", "puts", "dump", "dumping", "crash", "crashing", "sell", "selling", "sold", "red",
    "lower", "tank", "tanking", "breakdown", "recession", "rug", "📉", "🐻", "🩸",
})
# Tone counts tokens: runs of ASCII letters and "$" in the lower-cased text, and the tone emoji. A token with a
# "$" is a cashtag or part of one ($BULL is a ticker, not a mood), so it never counts.
TOKEN = re.compile(r"[a-z$]+|[🚀📈🐂📉🐻🩸]")
# For ASCII text (most messages) the same tokens come from bytes.translate + split, several times faster than the
# regex (bench: community_log): every byte but a-z and $ becomes a space.
_ASCII_BREAKS = bytes.maketrans(bytes(range(256)), bytes(b if b in b"abcdefghijklmnopqrstuvwxyz$" else 32
                                                         for b in range(256)))
_ASCII_BULLISH = frozenset(w.encode() for w in BULLISH_WORDS if w.isascii())
_ASCII_BEARISH = frozenset(w.encode() for w in BEARISH_WORDS if w.isascii())
_ASCII_TONE = _ASCII_BULLISH | _ASCII_BEARISH

SCHEMA = """
CREATE TABLE IF NOT EXISTS community_channels (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    enabled_at TEXT NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
);
CREATE TABLE IF NOT EXISTS community_messages (
    message_id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    content TEXT NOT NULL,                 -- current text; '' once deleted
    cashtags TEXT NOT NULL DEFAULT '[]',   -- JSON array of distinct upper-case tickers
    bull INTEGER NOT NULL DEFAULT 0,       -- bullish / bearish tone words in the current text
    bear INTEGER NOT NULL DEFAULT 0,
    reply_to INTEGER,
    edited_at TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_at TEXT
);
CREATE INDEX IF NOT EXISTS community_messages_guild ON community_messages (guild_id, created_at);
CREATE INDEX IF NOT EXISTS community_messages_author ON community_messages (guild_id, author_id);
CREATE INDEX IF NOT EXISTS community_messages_created ON community_messages (created_at);
CREATE TABLE IF NOT EXISTS community_revisions (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    content TEXT NOT NULL,                 -- the text an edit replaced; '' once the message is deleted
    replaced_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS community_revisions_message ON community_revisions (message_id);
CREATE TABLE IF NOT EXISTS community_reactions (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    emoji_key TEXT NOT NULL,               -- custom emoji id, or the unicode emoji itself
    emoji_name TEXT NOT NULL,
    emoji_id INTEGER,                      -- NULL for unicode emoji
    added_at TEXT NOT NULL,
    removed_at TEXT,                       -- NULL while the reaction is on the message
    PRIMARY KEY (message_id, user_id, emoji_key)
);
CREATE INDEX IF NOT EXISTS community_reactions_guild ON community_reactions (guild_id, added_at);
CREATE INDEX IF NOT EXISTS community_reactions_user ON community_reactions (guild_id, user_id);
"""


def create_tables(d: sqlite_utils.Database) -> None:
    sentiment.create_tables(d)  # forget_member also deletes poll votes
    d.executescript(SCHEMA)


# --- text analysis --------------------------------------------------------------------------------------

def find_cashtags(text: str) -> list[str]:
    """Distinct tickers mentioned as cashtags, upper-cased, in order of first mention."""
    if "$" not in text:  # most messages: skip the regex
        return []
    return list(dict.fromkeys(map(str.upper, CASHTAG.findall(text))))


def tone_counts(text: str) -> tuple[int, int]:
    """(bullish, bearish) word counts."""
    tokens: list[Any]
    if text.isascii():
        tokens = text.lower().encode().translate(_ASCII_BREAKS).split()
        if _ASCII_TONE.isdisjoint(tokens):  # most messages
            return 0, 0
        bullish_words, bearish_words = _ASCII_BULLISH, _ASCII_BEARISH
    else:
        tokens = TOKEN.findall(text.lower())
        bullish_words, bearish_words = BULLISH_WORDS, BEARISH_WORDS
    bullish = bearish = 0
    for token in tokens:
        if token in bullish_words:
            bullish += 1
        elif token in bearish_words:
            bearish += 1
    return bullish, bearish


def tone(bullish: int, bearish: int) -> float | None:
    """(bullish - bearish) / (bullish + bearish), from -1 (all bearish) to +1; None when no word matched."""
    matched = bullish + bearish
    return None if matched == 0 else (bullish - bearish) / matched


def clean_text(text: str) -> str:
    """The text as valid Unicode: a lone surrogate (possible from JSON escapes) becomes U+FFFD, everything else
    (emoji, ZWJ sequences, combining marks, NUL) is kept as is."""
    if text.isascii():  # most messages: nothing to check, no copy
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def emoji_key(name: str, emoji_id: int | None) -> str:
    return str(emoji_id) if emoji_id is not None else name


# --- the batched writer ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Kind:
    """One kind of log event: its SQL statements and how an event becomes parameter rows for each of them.

    A batchable kind's statements may run for a whole run of consecutive events at once (statement by statement,
    with executemany); a kind whose statements read what the previous event of the run wrote is not batchable.
    """

    statements: tuple[str, ...]
    params: Callable[..., tuple[list[tuple], ...]]
    batchable: bool = True


def _text_fields(content: str) -> tuple[str, str, int, int]:
    """(text, cashtags as JSON, bullish, bearish) for a message's columns."""
    content = clean_text(content)
    tags = find_cashtags(content)
    # Tickers are letters and dots only, so the JSON can be written directly.
    return (content, '["' + '", "'.join(tags) + '"]' if tags else "[]", *tone_counts(content))


def _create(guild_id: int, channel_id: int, message_id: int, author_id: int, created_at: datetime, content: str,
            reply_to: int | None) -> tuple[list[tuple], ...]:
    text, tags, bull, bear = _text_fields(content)
    return ([(message_id, guild_id, channel_id, author_id, iso_utc(created_at), text, tags, bull, bear, reply_to)],)


def _edit(guild_id: int, channel_id: int, message_id: int, content: str, edited_at: datetime,
          author_id: int | None, created_at: datetime | None, reply_to: int | None) -> tuple[list[tuple], ...]:
    text, tags, bull, bear = _text_fields(content)
    at = iso_utc(edited_at)
    insert = []
    if author_id is not None and created_at is not None:  # a message logged before we saw it: keep it from now
        insert = [(message_id, guild_id, channel_id, author_id, iso_utc(created_at), text, tags, bull, bear,
                   reply_to, at)]
    return ([(at, message_id, guild_id, text)], [(text, tags, bull, bear, at, message_id, guild_id, text)], insert)


def _delete(guild_id: int, message_ids: tuple[int, ...], at: datetime) -> tuple[list[tuple], ...]:
    stamp = iso_utc(at)
    return [(stamp, m, guild_id) for m in message_ids], [(m, guild_id) for m in message_ids]


def _reaction(guild_id: int, channel_id: int, message_id: int, user_id: int, emoji_name: str, emoji_id: int | None,
              at: datetime) -> tuple[list[tuple], ...]:
    name = clean_text(emoji_name)
    return ([(guild_id, channel_id, message_id, user_id, emoji_key(name, emoji_id), name, emoji_id, iso_utc(at))],)


def _reaction_removed(guild_id: int, channel_id: int, message_id: int, user_id: int, emoji_name: str,
                      emoji_id: int | None, at: datetime) -> tuple[list[tuple], ...]:
    return ([(iso_utc(at), message_id, user_id, emoji_key(clean_text(emoji_name), emoji_id), guild_id)],)


def _cleared(guild_id: int, message_id: int, at: datetime) -> tuple[list[tuple], ...]:
    return ([(iso_utc(at), message_id, guild_id)],)


def _emoji_cleared(guild_id: int, message_id: int, emoji_name: str, emoji_id: int | None,
                   at: datetime) -> tuple[list[tuple], ...]:
    return ([(iso_utc(at), message_id, guild_id, emoji_key(clean_text(emoji_name), emoji_id))],)


_MESSAGE_COLUMNS = "message_id, guild_id, channel_id, author_id, created_at, content, cashtags, bull, bear, reply_to"
KINDS: dict[str, _Kind] = {
    "create": _Kind((f"INSERT INTO community_messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (message_id) DO NOTHING",), _create),
    "edit": _Kind((
        "INSERT INTO community_revisions (guild_id, message_id, content, replaced_at) "
        "SELECT guild_id, message_id, content, ? FROM community_messages "
        "WHERE message_id = ? AND guild_id = ? AND deleted = 0 AND content IS NOT ?",
        "UPDATE community_messages SET content = ?, cashtags = ?, bull = ?, bear = ?, edited_at = ? "
        "WHERE message_id = ? AND guild_id = ? AND deleted = 0 AND content IS NOT ?",
        f"INSERT INTO community_messages ({_MESSAGE_COLUMNS}, edited_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (message_id) DO NOTHING",
    ), _edit, batchable=False),
    "delete": _Kind((
        "UPDATE community_messages SET content = '', cashtags = '[]', bull = 0, bear = 0, deleted = 1, "
        "deleted_at = coalesce(deleted_at, ?) WHERE message_id = ? AND guild_id = ?",
        "UPDATE community_revisions SET content = '' WHERE message_id = ? AND guild_id = ?",
    ), _delete),
    "reaction_add": _Kind((
        "INSERT INTO community_reactions (guild_id, channel_id, message_id, user_id, emoji_key, emoji_name, "
        "emoji_id, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
        "added_at = excluded.added_at, emoji_name = excluded.emoji_name, removed_at = NULL "
        "WHERE removed_at IS NOT NULL",), _reaction),
    "reaction_remove": _Kind((
        "UPDATE community_reactions SET removed_at = ? WHERE message_id = ? AND user_id = ? AND emoji_key = ? "
        "AND guild_id = ? AND removed_at IS NULL",), _reaction_removed),
    "reactions_clear": _Kind((
        "UPDATE community_reactions SET removed_at = ? WHERE message_id = ? AND guild_id = ? "
        "AND removed_at IS NULL",), _cleared),
    "reaction_emoji_clear": _Kind((
        "UPDATE community_reactions SET removed_at = ? WHERE message_id = ? AND guild_id = ? AND emoji_key = ? "
        "AND removed_at IS NULL",), _emoji_cleared),
}

Prepared = tuple[list[tuple], ...]  # an event as parameter rows, one list per statement of its kind
Op = tuple[str, Prepared]  # (kind, its parameter rows)
# Errors that belong to one event (a value SQLite cannot store, a naive time). Anything else, such as
# sqlite3.OperationalError (locked, disk full), aborts the whole batch so LogWriter retries it.
BAD_EVENT = (ValueError, TypeError, OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError,
             sqlite3.ProgrammingError, sqlite3.DataError)


def _ids(args: tuple[Any, ...]) -> list[int]:
    """The ids in an event, for log lines (never its text: the log file is not covered by forget_member)."""
    return [a for a in args if isinstance(a, int)][:4]


@functools.lru_cache(maxsize=32)
def _multi_row(sql: str, rows: int) -> str:
    """`INSERT ... VALUES (?, ...) tail` as one statement that inserts `rows` rows."""
    head, rest = sql.split(" VALUES ", 1)
    marks = rest[: rest.index(")") + 1]
    return f"{head} VALUES {', '.join([marks] * rows)}{rest[len(marks):]}"


def _plan(d: sqlite_utils.Database, sql: str, rows: list[tuple]) -> list[tuple[str, Any, bool]]:
    """(statement, parameters, executemany?) steps that write `rows` with `sql`. An INSERT ... VALUES becomes
    multi-row statements: SQLite then inserts a whole run in one call with the GIL released, so the event loop
    runs meanwhile (bench: community_log). Anything else is one executemany."""
    if len(rows) < 2 or not sql.startswith("INSERT") or " VALUES " not in sql:
        return [(sql, rows, True)]
    most = max(1, d.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(rows[0]))
    chunks = [rows[i:i + most] for i in range(0, len(rows), most)]
    return [(_multi_row(sql, len(chunk)), list(chain.from_iterable(chunk)), False) for chunk in chunks]


def _execute(d: sqlite_utils.Database, kind: _Kind, prepared: Sequence[Prepared]) -> None:
    """Run a kind's statements for a run of its events. More than one SQL call goes in a savepoint, so a failure
    leaves nothing half done; a single statement is atomic by itself."""
    steps = []
    for i, sql in enumerate(kind.statements):
        rows = [row for params in prepared for row in params[i]]
        if rows:
            steps += _plan(d, sql, rows)
    with d.atomic() if len(steps) > 1 else contextlib.nullcontext():
        for sql, params, many in steps:
            if many:
                d.conn.executemany(sql, params)
            else:
                d.conn.execute(sql, params)


def apply_ops(d: sqlite_utils.Database, ops: Sequence[Op]) -> tuple[int, int]:
    """Write prepared events (kind, parameter rows) in order in one transaction; returns (applied, skipped).

    Runs of consecutive batchable events of one kind go in together. If a run fails, none of it stays and it is
    retried one event at a time, so a bad event is logged and skipped and the rest stay.
    """
    runs: list[tuple[str, list[Prepared]]] = []
    for name, prepared in ops:
        if runs and runs[-1][0] == name and KINDS[name].batchable:
            runs[-1][1].append(prepared)
        else:
            runs.append((name, [prepared]))
    applied = skipped = 0
    with d.atomic():
        for name, run in runs:
            kind = KINDS[name]
            try:
                _execute(d, kind, run)
                applied += len(run)
                continue
            except BAD_EVENT:
                log.debug("community log: a run of %d %s events failed; retrying one by one", len(run), name)
            for event in run:
                try:
                    _execute(d, kind, [event])
                    applied += 1
                except BAD_EVENT as exc:
                    log.warning("community log: skipped a %s event SQLite refused %s: %r", name,
                                _ids(tuple(event[0][0]) if event[0] else ()), exc)
                    skipped += 1
    return applied, skipped


class LogWriter:
    """Queues log events and writes them in batches: up to `batch_size` events per transaction, or whatever
    arrived within `interval` seconds of the first waiting event, on the database thread, in arrival order.

    `put` never waits, so the event loop is never held up by the disk. What is lost in a crash: the events
    still in memory (at most `interval` seconds' worth plus any backlog). `flush()` returns once everything
    queued before it is committed; `close()` flushes and stops (call it at shutdown).

    The queue is a plain list that the writer takes a batch at a time (not an asyncio.Queue, whose per-item
    cost was most of the writer's overhead at gateway-burst rates).
    """

    def __init__(self, db: Database, *, batch_size: int = BATCH_SIZE, interval: float = FLUSH_INTERVAL) -> None:
        if batch_size < 1 or interval < 0:
            raise ValueError("batch_size must be at least 1 and interval not negative")
        self.db, self.batch_size, self.interval = db, batch_size, interval
        self._ops: list[Op] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (events queued before it, flush future)
        self._queued = 0  # events ever queued
        self._taken = 0  # events ever taken by the writer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.applied = 0  # events written
        self.skipped = 0  # events refused (bad rows) or dropped after failed transactions

    @property
    def pending(self) -> int:
        return len(self._ops)

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="community-log-writer")

    def put(self, kind: str, *args: Any) -> None:
        """Queue one event. Its parameter rows (cashtags, tone, timestamps; a few microseconds) are worked out
        here, on the event loop, so that the database thread only runs SQL, which releases the GIL: the two then
        overlap (bench: community_log). A bad event (naive time, wrong type) is logged and skipped."""
        if self._closed:
            raise RuntimeError("the community log writer is closed")
        if kind not in KINDS:
            raise ValueError(f"unknown log event kind {kind!r}")
        try:
            prepared = KINDS[kind].params(*args)
        except BAD_EVENT as exc:
            log.warning("community log: skipped a bad %s event %s: %r", kind, _ids(args), exc)
            self.skipped += 1
            return
        self.start()
        self._ops.append((kind, prepared))
        self._queued += 1
        if len(self._ops) == 1 or len(self._ops) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Return once every event queued so far is committed (or skipped)."""
        if self._task is None or self._task.done():
            return
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((self._queued, done))
        self._wake.set()
        await asyncio.shield(done)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._wake.set()
            await self._task

    def _release_waiters(self) -> None:
        still = []
        for upto, done in self._waiters:
            if self._taken >= upto:
                if not done.done():
                    done.set_result(None)
            else:
                still.append((upto, done))
        self._waiters = still

    async def _run(self) -> None:
        while True:
            if not self._ops:
                self._release_waiters()
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            hurry = self._closed or self._waiters or len(self._ops) >= self.batch_size
            if not hurry:  # let a light trickle gather for up to `interval` seconds
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                except TimeoutError:
                    pass
            batch, self._ops = self._ops[: self.batch_size], self._ops[self.batch_size:]
            await self._write(batch)
            self._taken += len(batch)
            self._release_waiters()

    async def _write(self, batch: list[Op]) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                applied, skipped = await self.db.run(lambda d: apply_ops(d, batch))
            except Exception:
                log.exception("community log: writing %d events failed (attempt %d of %d)", len(batch), attempt,
                              WRITE_ATTEMPTS)
                if attempt < WRITE_ATTEMPTS:
                    await asyncio.sleep(0.5 * attempt)
                continue
            self.applied += applied
            self.skipped += skipped
            return
        log.error("community log: dropped %d events after %d failed attempts", len(batch), WRITE_ATTEMPTS)
        self.skipped += len(batch)


# --- the log --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ForgetCounts:
    messages: int
    revisions: int
    reactions: int  # the member's reactions and reactions on their messages
    votes: int


@dataclass(frozen=True)
class PurgeCounts:
    messages: int
    revisions: int
    reactions: int


def validate_days(days: int, maximum: int) -> int:
    if not is_whole(days, 1, maximum):
        raise InputError(f"days {days!r}: choose 1 to {maximum}")
    return days


def _day_start(day: date) -> str:
    return iso_utc(datetime.combine(day, time(), tzinfo=UTC))


class CommunityLog:
    """Opt-in channels and the message/reaction log of every guild. Call `open()` first and `close()` at
    shutdown.

    Event methods never wait. Creates, edits and added reactions in channels that are not logged are ignored
    (the caller should check `is_logged` first anyway); deletions, removed and cleared reactions are always
    applied, since they only ever remove what the log holds. For threads, pass the parent channel's id if the
    opt-in should cover them.
    """

    def __init__(self, db: Database, *, batch_size: int = BATCH_SIZE, interval: float = FLUSH_INTERVAL) -> None:
        self.db = db
        self.writer = LogWriter(db, batch_size=batch_size, interval=interval)
        self._channels: dict[int, set[int]] = {}

    async def open(self) -> None:
        def load(d: sqlite_utils.Database) -> list[tuple[int, int]]:
            create_tables(d)
            return d.execute("SELECT guild_id, channel_id FROM community_channels").fetchall()

        self._channels = {}
        for guild_id, channel_id in await self.db.run(load):
            self._channels.setdefault(guild_id, set()).add(channel_id)
        self.writer.start()

    async def close(self) -> None:
        """Write everything queued and stop the writer (before closing the Database)."""
        await self.writer.close()

    async def flush(self) -> None:
        await self.writer.flush()

    # opt-in

    def is_logged(self, guild_id: int, channel_id: int) -> bool:
        """Whether the channel is opted in (memory only, no database access)."""
        return channel_id in self._channels.get(guild_id, ())

    def logged_channels(self, guild_id: int) -> frozenset[int]:
        return frozenset(self._channels.get(guild_id, ()))

    async def set_logging(self, guild_id: int, channel_id: int, on: bool, at: datetime | None = None) -> bool:
        """Opt a channel in or out; True if that changed anything. Opting out keeps what was logged (retention and
        forget_member still apply)."""
        if on:
            stamp = iso_utc(at or datetime.now(UTC))
            cur = await self.db.run(lambda d: d.execute(
                "INSERT OR IGNORE INTO community_channels VALUES (?, ?, ?)", [guild_id, channel_id, stamp]))
            self._channels.setdefault(guild_id, set()).add(channel_id)
        else:
            cur = await self.db.run(lambda d: d.execute(
                "DELETE FROM community_channels WHERE guild_id = ? AND channel_id = ?", [guild_id, channel_id]))
            self._channels.get(guild_id, set()).discard(channel_id)
        return cur.rowcount > 0

    # events

    def message_created(self, guild_id: int, channel_id: int, message_id: int, author_id: int,
                        created_at: datetime, content: str, reply_to: int | None = None) -> bool:
        """Queue a new message; False if its channel is not logged."""
        if not self.is_logged(guild_id, channel_id):
            return False
        self.writer.put("create", guild_id, channel_id, message_id, author_id, created_at, content, reply_to)
        return True

    def message_edited(self, guild_id: int, channel_id: int, message_id: int, content: str | None,
                       edited_at: datetime, *, author_id: int | None = None, created_at: datetime | None = None,
                       reply_to: int | None = None) -> bool:
        """Queue an edit: the replaced text becomes a revision. Edits that do not change the text (embed updates)
        add nothing. In a logged channel, with author_id and created_at, an edit of a message the log never saw
        adds it. Edits of already logged messages apply even after the channel is opted out (a member editing
        something out must be honoured)."""
        if content is None:
            return False
        if not self.is_logged(guild_id, channel_id):
            author_id = created_at = None
        self.writer.put("edit", guild_id, channel_id, message_id, content, edited_at, author_id, created_at,
                        reply_to)
        return True

    def message_deleted(self, guild_id: int, channel_id: int, message_id: int, at: datetime) -> None:
        self.messages_deleted(guild_id, channel_id, [message_id], at)

    def messages_deleted(self, guild_id: int, channel_id: int, message_ids: Iterable[int], at: datetime) -> None:
        """Queue a (bulk) deletion: content and earlier versions are blanked, the row is marked deleted."""
        self.writer.put("delete", guild_id, tuple(message_ids), at)

    def reaction_added(self, guild_id: int, channel_id: int, message_id: int, user_id: int, emoji_name: str,
                       emoji_id: int | None, at: datetime) -> bool:
        """Queue a reaction: a unicode emoji has emoji_id None; a custom one its id (its name may change)."""
        if not self.is_logged(guild_id, channel_id):
            return False
        self.writer.put("reaction_add", guild_id, channel_id, message_id, user_id, emoji_name, emoji_id, at)
        return True

    def reaction_removed(self, guild_id: int, channel_id: int, message_id: int, user_id: int, emoji_name: str,
                         emoji_id: int | None, at: datetime) -> None:
        self.writer.put("reaction_remove", guild_id, channel_id, message_id, user_id, emoji_name, emoji_id, at)

    def reactions_cleared(self, guild_id: int, channel_id: int, message_id: int, at: datetime) -> None:
        self.writer.put("reactions_clear", guild_id, message_id, at)

    def reaction_emoji_cleared(self, guild_id: int, channel_id: int, message_id: int, emoji_name: str,
                               emoji_id: int | None, at: datetime) -> None:
        self.writer.put("reaction_emoji_clear", guild_id, message_id, emoji_name, emoji_id, at)

    # member rights and retention

    async def forget_member(self, guild_id: int, user_id: int) -> ForgetCounts:
        """Delete everything stored about the member in this guild: messages, their revisions, the member's
        reactions and reactions on their messages, and their votes on this guild's polls. Queued events are
        written first so none of them lands afterwards."""
        await self.flush()

        def run(d: sqlite_utils.Database) -> ForgetCounts:
            mine = "SELECT message_id FROM community_messages WHERE guild_id = ? AND author_id = ?"
            with d.atomic():
                revisions = d.execute(f"DELETE FROM community_revisions WHERE guild_id = ? AND message_id IN ({mine})",
                                      [guild_id, guild_id, user_id]).rowcount
                reactions = d.execute(f"DELETE FROM community_reactions WHERE guild_id = ? AND (user_id = ? OR "
                                      f"message_id IN ({mine}))", [guild_id, user_id, guild_id, user_id]).rowcount
                messages = d.execute("DELETE FROM community_messages WHERE guild_id = ? AND author_id = ?",
                                     [guild_id, user_id]).rowcount
                votes = sentiment.delete_member_votes(d, guild_id, user_id)
            return ForgetCounts(messages, revisions, reactions, votes)

        return await self.db.run(run)

    async def purge_older_than(self, days: int, now: datetime | None = None) -> PurgeCounts:
        """Retention (all guilds): delete messages created more than `days` ago with their revisions and
        reactions, and reactions added (or removed) that long ago."""
        if not is_whole(days, 1):
            raise ValueError(f"retention days {days!r} must be a whole number of at least 1")
        cutoff = iso_utc((now or datetime.now(UTC)) - timedelta(days=days))
        old = "SELECT message_id FROM community_messages WHERE created_at < ?"

        def run(d: sqlite_utils.Database) -> PurgeCounts:
            with d.atomic():
                revisions = d.execute(f"DELETE FROM community_revisions WHERE message_id IN ({old}) "
                                      "OR replaced_at < ?", [cutoff, cutoff]).rowcount
                reactions = d.execute(f"DELETE FROM community_reactions WHERE message_id IN ({old}) "
                                      "OR coalesce(removed_at, added_at) < ?", [cutoff, cutoff]).rowcount
                messages = d.execute("DELETE FROM community_messages WHERE created_at < ?", [cutoff]).rowcount
            return PurgeCounts(messages, revisions, reactions)

        return await self.db.run(run)

    async def report(self, market: MarketData, renderer: Renderer, guild_id: int,
                     days: int) -> tuple[CommunityReport, bytes]:
        """`/iwm community` for a guild, including what members wrote a moment ago (the writer is flushed)."""
        await self.flush()
        return await community_answer(self.db, market, renderer, guild_id, days)

    async def export_csv(self, guild_id: int, days: int, now: datetime | None = None) -> bytes:
        """This guild's messages of the last `days` days as UTF-8 CSV, oldest first: ids, times, cashtags,
        number of revisions and live reactions, deleted flag, content ('' for deleted messages)."""
        days = validate_days(days, MAX_EXPORT_DAYS)
        since = iso_utc((now or datetime.now(UTC)) - timedelta(days=days))
        await self.flush()

        def run(d: sqlite_utils.Database) -> bytes:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["message_id", "channel_id", "author_id", "created_at", "edited_at", "reply_to",
                             "cashtags", "revisions", "reactions", "deleted", "content"])
            rows = d.execute(
                "SELECT m.message_id, m.channel_id, m.author_id, m.created_at, m.edited_at, m.reply_to, m.cashtags, "
                "(SELECT count(*) FROM community_revisions r WHERE r.message_id = m.message_id), "
                "(SELECT count(*) FROM community_reactions x WHERE x.message_id = m.message_id "
                " AND x.removed_at IS NULL), m.deleted, m.content "
                "FROM community_messages m WHERE m.guild_id = ? AND m.created_at >= ? "
                "ORDER BY m.created_at, m.message_id", [guild_id, since])
            for row in rows:
                row = list(row)
                row[6] = " ".join(json.loads(row[6]))
                row[4] = row[4] or ""
                row[5] = "" if row[5] is None else row[5]
                writer.writerow(row)
            return out.getvalue().encode("utf-8")

        return await self.db.run(run)


# --- /iwm community -------------------------------------------------------------------------------------

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


def render_community(chart: CommunityChart) -> bytes:
    fig, (price, activity, mood) = new_figure((1.4, 1.2, 0.8))
    title(fig, chart.title, chart.subtitle)
    x = np.arange(len(chart.days))
    close = np.array([np.nan if c is None else c for c in chart.close], dtype=float)
    ok = ~np.isnan(close)
    if ok.any():
        price.plot(x[ok], close[ok], color=TEXT, lw=1.3, marker="o" if ok.sum() < 40 else None, ms=3,
                   label="IWM close")
        legend(price)
    if chart.price_note:
        price.text(0.99, 0.06, chart.price_note, color=YELLOW, fontsize=9, ha="right", va="bottom",
                   transform=price.transAxes)
    price.set_ylabel("IWM $", color=MUTED, fontsize=8)
    price.tick_params(labelbottom=False)
    activity.bar(x, chart.messages, color=BLUE, width=0.8, label="messages")
    activity.plot(x, chart.members, color=YELLOW, lw=1.2, marker="o" if len(x) < 40 else None, ms=3,
                  label="active members")
    activity.set_ylim(0, max([*chart.messages, *chart.members, 1]) * 1.25)
    activity.set_ylabel("per day", color=MUTED, fontsize=8)
    legend(activity)
    activity.tick_params(labelbottom=False)
    tones = np.array([np.nan if t is None else t for t in chart.tone], dtype=float)
    has = ~np.isnan(tones)
    mood.axhline(0, color=MUTED, lw=0.8)
    mood.bar(x[has], tones[has], color=np.where(tones[has] >= 0, UP, DOWN), width=0.8)
    mood.set_ylim(-1.05, 1.05)
    mood.set_ylabel("tone", color=MUTED, fontsize=8)
    date_axis(mood, pd.DatetimeIndex([pd.Timestamp(d) for d in chart.days]))
    return to_png(fig)


def compute_activity(d: sqlite_utils.Database, guild_id: int, start: date, end: date) -> dict[str, Any]:
    """The window's counts for one guild (runs on the database thread)."""
    create_tables(d)
    window = [guild_id, _day_start(start), _day_start(end + timedelta(days=1))]
    live = "FROM community_messages WHERE guild_id = ? AND created_at >= ? AND created_at < ? AND deleted = 0"
    daily = {row[0]: row[1:] for row in d.execute(
        f"SELECT substr(created_at, 1, 10), count(*), count(DISTINCT author_id), sum(bull), sum(bear) {live} "
        "GROUP BY 1", window)}
    messages, members = d.execute(f"SELECT count(*), count(DISTINCT author_id) {live}", window).fetchone()
    tags = d.execute(
        "SELECT j.value, count(*) AS n FROM community_messages m, json_each(m.cashtags) j WHERE m.guild_id = ? "
        "AND m.created_at >= ? AND m.created_at < ? AND m.deleted = 0 GROUP BY j.value ORDER BY n DESC, j.value "
        f"LIMIT {TOP}", window).fetchall()
    reactions = d.execute(
        "SELECT max(emoji_name), max(emoji_id), count(*) AS n FROM community_reactions WHERE guild_id = ? "
        "AND added_at >= ? AND added_at < ? AND removed_at IS NULL GROUP BY emoji_key ORDER BY n DESC, 1 "
        f"LIMIT {TOP}", window).fetchall()
    return {"daily": daily, "messages": messages, "members": members, "tags": tags, "reactions": reactions}


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
    now: datetime | None = None,
) -> tuple[CommunityReport, bytes]:
    """The `/iwm community` report (this guild only) and its chart: activity and tone per UTC day against the
    IWM close. When the log runs past the market data, the chart shows the overlap and the report says so."""
    days = validate_days(days, MAX_REPORT_DAYS)
    end = (now or datetime.now(UTC)).astimezone(UTC).date()
    start = end - timedelta(days=days - 1)
    stats = await db.run(lambda d: compute_activity(d, guild_id, start, end))
    calendar = [start + timedelta(days=i) for i in range(days)]
    daily = tuple(DayActivity(day, *(int(v or 0) for v in stats["daily"].get(day.isoformat(), (0, 0, 0, 0))))
                  for day in calendar)

    closes: dict[date, float] = {}
    as_of: date | None = None
    note_extra = ""
    try:
        bars = await market.bars("IWM")
        as_of = bars.as_of
        window = bars.frame["close"].dropna().loc[pd.Timestamp(start):pd.Timestamp(end)]
        closes = {stamp.date(): float(value) for stamp, value in window.items()}
        if bars.stale:
            note_extra = f" (IWM data is a stale {bars.source} copy)"
    except ProviderError as exc:
        log.warning("community report without prices: %s", exc)
    note = market_note(as_of, bool(closes), end) + note_extra

    bull = sum(x.bullish for x in daily)
    bear = sum(x.bearish for x in daily)
    report = CommunityReport(
        guild_id=guild_id, days=days, start=start, end=end, daily=daily,
        messages=int(stats["messages"]), members=int(stats["members"]),
        top_cashtags=tuple((tag, n) for tag, n in stats["tags"]),
        top_reactions=tuple(TopReaction(name, emoji_id, n) for name, emoji_id, n in stats["reactions"]),
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

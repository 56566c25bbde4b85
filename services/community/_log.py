"""The community log store: opt-in channels, the event queue into the batched writer, retention, the CSV export
and a member's erasure.

Deletions blank the content (and earlier versions) and keep a tombstone; `erase_member` removes everything about
a member (services.privacy runs it for forget-me); `purge_older_than` applies the retention period. Both delete
in small transactions (`DELETE_BATCH`), and the export streams to a file in chunks, so a million-message log never
holds the database thread for long (`services.community._pace`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import BinaryIO

from services.charts import Renderer
from services.community._events import Event, MessageCreated, MessageEdited, ReactionAdded
from services.community._pace import Pace
from services.community._report import CommunityReport, community_answer, validate_days
from services.community._writer import BATCH_SIZE, FLUSH_INTERVAL, LogWriter
from services.errors import is_whole
from services.market import MarketData
from services.sql import Connection
from services.storage import Database
from services.timefmt import iso_utc

log = logging.getLogger(__name__)

MAX_EXPORT_DAYS = 3650
# A purge or an erasure deletes in transactions of at most DELETE_BATCH messages (with their revisions and
# reactions) or rows, each sized to take about TURN seconds on the database thread (`Pace`).
DELETE_BATCH = 2000
# A cell starting with one of these is run as a formula by Excel, LibreOffice or Sheets (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """A text cell a spreadsheet would run as a formula, prefixed with a single quote so it shows as text (OWASP's
    advice, with every cell quoted by the writer); other cells as they are."""
    return f"'{cell}" if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell


@dataclass(frozen=True)
class LogCounts:
    """Rows deleted from the log."""

    messages: int
    revisions: int
    reactions: int

    def __add__(self, other: LogCounts) -> LogCounts:
        return LogCounts(self.messages + other.messages, self.revisions + other.revisions,
                         self.reactions + other.reactions)


class CommunityLog:
    """Opt-in channels and the message/reaction log of every guild. Call `open()` first and `close()` at
    shutdown.

    `put` never waits. New messages and added reactions in channels that are not logged are ignored (the caller
    should check `is_logged` first anyway); deletions, removed and cleared reactions are always applied, since
    they only ever remove what the log holds. For threads, pass the parent channel's id if the opt-in should
    cover them.
    """

    def __init__(self, db: Database, *, batch_size: int = BATCH_SIZE, interval: float = FLUSH_INTERVAL,
                 delete_batch: int = DELETE_BATCH) -> None:
        self.db = db
        self.delete_batch = delete_batch
        # Exports in the making, beside the SQLite file, so that a file a crash left behind is found and deleted
        # at the next `open`. In-memory and PostgreSQL: the system's temp folder (a file there is deleted when
        # its export ends; one a crash left behind is the system's to clear).
        self.export_dir = (None if db.engine != "sqlite" or str(db.path) == ":memory:"
                           else db.path.with_name(db.path.name + "-exports"))
        self.writer = LogWriter(db, batch_size=batch_size, interval=interval)
        self._channels: dict[int, set[int]] = {}

    async def open(self) -> None:
        def load(d: Connection) -> list[tuple[int, int]]:
            return d.execute("SELECT guild_id, channel_id FROM community_channels").fetchall()

        self._channels = {}
        for guild_id, channel_id in await self.db.run(load):
            self._channels.setdefault(guild_id, set()).add(channel_id)
        if self.export_dir is not None:
            await asyncio.to_thread(_clear_exports, self.export_dir)
        await self._finish_erasures()
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
        forget-me still apply)."""
        if on:
            stamp = iso_utc(at or datetime.now(UTC))
            cur = await self.db.run(lambda d: d.execute(
                "INSERT INTO community_channels VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [guild_id, channel_id, stamp]))
            self._channels.setdefault(guild_id, set()).add(channel_id)
        else:
            cur = await self.db.run(lambda d: d.execute(
                "DELETE FROM community_channels WHERE guild_id = ? AND channel_id = ?", [guild_id, channel_id]))
            self._channels.get(guild_id, set()).discard(channel_id)
        return cur.rowcount > 0

    # events

    def put(self, event: Event) -> bool:
        """Queue an event without waiting; False if it is not for the log: a new message or an added reaction in
        a channel that is not logged. Edits of already logged messages apply even after the channel is opted out
        (a member editing something out must be honoured), but outside a logged channel an edit never adds a
        message the log did not see."""
        if isinstance(event, (MessageCreated, ReactionAdded)):
            if not self.is_logged(event.guild_id, event.channel_id):
                return False
        elif isinstance(event, MessageEdited) and not self.is_logged(event.guild_id, event.channel_id):
            event = replace(event, author_id=None, created_at=None)
        self.writer.put(event)
        return True

    # member rights and retention

    @staticmethod
    def begin_erasure(d: Connection, guild_id: int, user_id: int) -> None:
        """Record that the member's erasure is under way, inside the caller's transaction (services.privacy, beside
        the other stores' erasures). From then on exports leave the member out, and `erase_member` (or, after a
        crash, the next `open`) deletes their rows."""
        d.execute("INSERT INTO community_erasures VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                  [guild_id, user_id, iso_utc(datetime.now(UTC))])

    async def erase_member(self, guild_id: int, user_id: int) -> LogCounts:
        """Delete everything the log holds about a member in this guild: their messages with their revisions, their
        reactions and reactions on their messages; then the erasure record (`begin_erasure`), and checkpoint the
        write-ahead log (SQLite) so the text leaves the WAL file too. In transactions of at most `delete_batch` messages
        (or reactions), each a short turn (`Pace`) on the database thread, so the writer and other commands run between
        them. The caller flushes the writer first (services.privacy)."""
        total, pace, done = LogCounts(0, 0, 0), Pace(self.delete_batch, checkpoint=True), False
        while not done:
            counts, done = await self.db.run(pace(lambda d, rows: _erase_batch(d, guild_id, user_id, rows)))
            total += counts
        # secure_delete zeroes the freed pages of the database file; the write-ahead log still holds the old
        # pages until a checkpoint, so copy it back and truncate it now.
        await self.db.run(lambda d: d.checkpoint("TRUNCATE"))
        return total

    async def _finish_erasures(self) -> None:
        """Erasures a crash interrupted (their record is still there): finish them before the log is used."""
        pending = await self.db.run(lambda d: d.execute("SELECT guild_id, user_id FROM community_erasures").fetchall())
        for guild_id, user_id in pending:
            counts = await self.erase_member(guild_id, user_id)
            log.info("community log: finished the interrupted erasure of member %s in guild %s: %s", user_id,
                     guild_id, counts)

    async def purge_older_than(self, days: int, now: datetime | None = None) -> LogCounts:
        """Retention (all guilds): delete messages created more than `days` ago with their revisions and
        reactions, and revisions replaced and reactions added (or removed) that long ago. In transactions of at
        most `delete_batch` messages (or rows), each a short turn on the database thread; a purge cut short
        leaves only older-than-retention rows that the next purge takes."""
        if not is_whole(days, 1):
            raise ValueError(f"retention days {days!r} must be a whole number of at least 1")
        cutoff = iso_utc((now or datetime.now(UTC)) - timedelta(days=days))
        total, pace = LogCounts(0, 0, 0), Pace(self.delete_batch, checkpoint=True)
        while True:
            counts = await self.db.run(pace(lambda d, rows: _purge_messages(d, cutoff, rows)))
            total += counts
            if not counts.messages:
                break
        # Old rows whose message is not old (or not in the log): a walk through each table in key order.
        for table, old in (("community_revisions", "replaced_at < ?"),
                           ("community_reactions", "coalesce(removed_at, added_at) < ?")):
            after: tuple | None = ()
            while after is not None:
                deleted, after = await self.db.run(pace(partial(_purge_walk, table, old, cutoff, after)))
                revisions = table == "community_revisions"
                total += LogCounts(0, deleted if revisions else 0, 0 if revisions else deleted)
        return total

    async def report(self, market: MarketData, renderer: Renderer, guild_id: int, days: int,
                     channels: Collection[int] | None = None) -> tuple[CommunityReport, bytes]:
        """`/iwm community` for a guild (`channels`: only these), including what members wrote a moment ago (the
        writer is flushed)."""
        await self.flush()
        return await community_answer(self.db, market, renderer, guild_id, days, channels=channels)

    @asynccontextmanager
    async def export_csv(self, guild_id: int, days: int, *, max_bytes: int | None = None,
                         channels: Collection[int] | None = None, now: datetime | None = None) -> AsyncIterator[Export]:
        """This guild's messages of the last `days` days as a UTF-8 CSV file, oldest first: ids, times, cashtags,
        number of revisions and live reactions, deleted flag, content ('' for deleted messages). Every cell is
        quoted, and text a spreadsheet would run as a formula is neutralised (`spreadsheet_safe`).

        The file is written `EXPORT_CHUNK` rows at a time, each chunk one short turn on the database thread (a
        million-message log never sits in memory, and the log writer and other work run between chunks), and
        stops before the row that would take it past `max_bytes`. The file is deleted when the block ends.
        Members whose erasure is under way (`erase_member`) are left out; with `channels`, only those channels'
        messages are in."""
        days = validate_days(days, MAX_EXPORT_DAYS)
        since = iso_utc((now or datetime.now(UTC)) - timedelta(days=days))
        limit = max_bytes if max_bytes is not None else sys.maxsize
        await self.flush()
        header = _csv_lines([EXPORT_COLUMNS])
        out, path = await asyncio.to_thread(_export_file, self.export_dir)
        try:
            size, messages, complete = len(header), 0, len(header) <= limit
            key: tuple[str, int] | None = (since, -1)  # (created_at, message_id) of the last row written
            if complete:
                await asyncio.to_thread(out.write, header)
            while complete and key is not None:
                written, wrote, key, complete = await self.db.run(
                    partial(_export_chunk, out=out, guild_id=guild_id, after=key, room=limit - size, channels=channels))
                size, messages = size + written, messages + wrote
            out.close()
            yield Export(path, messages, size, complete)
        finally:
            out.close()
            await asyncio.to_thread(path.unlink, missing_ok=True)


EXPORT_COLUMNS = ("message_id", "channel_id", "author_id", "created_at", "edited_at", "reply_to", "cashtags",
                  "revisions", "reactions", "deleted", "content")
EXPORT_CHUNK = 2000  # rows per turn on the database thread: about 20 ms (bench: community_scale)


@dataclass(frozen=True)
class Export:
    """A CSV export on disk (see CommunityLog.export_csv)."""

    path: Path
    messages: int  # rows in the file
    size: int  # bytes
    complete: bool  # False: the next row would have passed max_bytes, so the file stops before it


def _export_file(folder: Path | None) -> tuple[BinaryIO, Path]:
    if folder is not None:
        folder.mkdir(mode=0o700, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="export-", suffix=".csv", dir=folder)  # mode 0600: members' messages
    return os.fdopen(fd, "wb"), Path(name)


def _clear_exports(folder: Path) -> None:
    """Delete exports a crash left behind: members' messages must not outlive retention or forget-me there."""
    for left in folder.glob("export-*.csv"):
        left.unlink(missing_ok=True)


def _csv_lines(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _export_chunk(d: Connection, out: BinaryIO, guild_id: int, after: tuple[str, int],
                  room: int, channels: Collection[int] | None = None) -> tuple[int, int, tuple[str, int] | None, bool]:
    """Write the next EXPORT_CHUNK rows after the key (created_at, message_id) to `out`, at most `room` bytes,
    from `channels` only unless None. Returns (bytes written, rows written, the last row's key or None at the
    end, whether everything fitted)."""
    where, params = "", [guild_id, *after, guild_id]
    if channels is not None:
        chosen, ids = d.in_ids("m.channel_id", sorted(channels))
        where = f"AND {chosen} "
        params.append(ids)
    rows = d.execute(
        "SELECT m.message_id, m.channel_id, m.author_id, m.created_at, m.edited_at, m.reply_to, m.cashtags, "
        "(SELECT count(*) FROM community_revisions r WHERE r.message_id = m.message_id), "
        "(SELECT count(*) FROM community_reactions x WHERE x.message_id = m.message_id "
        " AND x.removed_at IS NULL), m.deleted, m.content "
        "FROM community_messages m WHERE m.guild_id = ? AND (m.created_at, m.message_id) > (?, ?) "
        f"AND m.author_id NOT IN (SELECT user_id FROM community_erasures WHERE guild_id = ?) {where}"
        f"ORDER BY m.created_at, m.message_id LIMIT {EXPORT_CHUNK}", params).fetchall()
    if not rows:
        return 0, 0, None, True
    cells = []
    for row in rows:
        row = list(row)
        row[6] = " ".join(json.loads(row[6]))
        row[4] = row[4] or ""
        row[5] = "" if row[5] is None else row[5]
        cells.append([spreadsheet_safe(cell) for cell in row])
    data = _csv_lines(cells)
    fits = len(cells)
    if len(data) > room:  # the limit falls inside this chunk: keep the rows that fit whole
        lines = [_csv_lines([row]) for row in cells]
        used = fits = 0
        while fits < len(lines) and used + len(lines[fits]) <= room:
            used += len(lines[fits])
            fits += 1
        data = b"".join(lines[:fits])
    out.write(data)
    last = rows[fits - 1] if fits else None
    key = (last[3], last[0]) if last else None
    return len(data), fits, key, fits == len(rows)


def _delete_messages(d: Connection, ids: list[int]) -> LogCounts:
    """Delete these messages with their revisions and the reactions on them (inside the caller's transaction)."""
    chosen, batch = d.in_ids("message_id", ids)
    revisions = d.execute(f"DELETE FROM community_revisions WHERE {chosen}", [batch]).rowcount
    reactions = d.execute(f"DELETE FROM community_reactions WHERE {chosen}", [batch]).rowcount
    messages = d.execute(f"DELETE FROM community_messages WHERE {chosen}", [batch]).rowcount
    return LogCounts(messages, revisions, reactions)


def _erase_batch(d: Connection, guild_id: int, user_id: int, limit: int) -> tuple[LogCounts, bool]:
    """One transaction of a member's erasure: up to `limit` of their messages (with revisions and reactions), or
    else up to `limit` of their reactions, or else the erasure record. Returns the counts and whether it is done."""
    with d.atomic():
        ids = [row[0] for row in d.execute(
            "SELECT message_id FROM community_messages WHERE guild_id = ? AND author_id = ? LIMIT ?",
            [guild_id, user_id, limit])]
        if ids:
            return _delete_messages(d, ids), False
        reactions = d.execute(
            f"DELETE FROM community_reactions WHERE ({REACTION_KEY}) IN (SELECT {REACTION_KEY} "
            "FROM community_reactions WHERE guild_id = ? AND user_id = ? LIMIT ?)", [guild_id, user_id, limit]).rowcount
        if reactions:
            return LogCounts(0, 0, reactions), False
        d.execute("DELETE FROM community_erasures WHERE guild_id = ? AND user_id = ?", [guild_id, user_id])
        return LogCounts(0, 0, 0), True


def _purge_messages(d: Connection, cutoff: str, limit: int) -> LogCounts:
    """One transaction of retention: the `limit` oldest messages created before the cutoff, with their revisions
    and reactions."""
    with d.atomic():
        ids = [row[0] for row in d.execute(
            "SELECT message_id FROM community_messages WHERE created_at < ? ORDER BY created_at LIMIT ?",
            [cutoff, limit])]
        return _delete_messages(d, ids) if ids else LogCounts(0, 0, 0)


# Each table's key, in the order retention walks it (a row value: both engines compare them left to right).
WALK_KEYS = {"community_revisions": "id", "community_reactions": "message_id, user_id, emoji_key"}
REACTION_KEY = WALK_KEYS["community_reactions"]


def _purge_walk(table: str, old: str, cutoff: str, after: tuple, d: Connection, limit: int) -> tuple[int, tuple | None]:
    """One transaction of retention's walk through `table` in key order: of the next `limit` rows after the key
    `after` (`()`: from the start), delete those matching `old` (one `?`, the cutoff). Returns the rows deleted
    and the last key looked at (None at the end)."""
    key = WALK_KEYS[table]
    past = f"({key}) > ({', '.join('?' * len(after))})" if after else "TRUE"
    with d.atomic():
        keys = d.execute(f"SELECT {key} FROM {table} WHERE {past} ORDER BY {key} LIMIT ?", [*after, limit]).fetchall()
        if not keys:
            return 0, None
        last = tuple(keys[-1])
        upto = ", ".join("?" * len(last))
        return d.execute(f"DELETE FROM {table} WHERE {past} AND ({key}) <= ({upto}) AND {old}",
                         [*after, *last, cutoff]).rowcount, last

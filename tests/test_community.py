"""Community log: opt-in, message and reaction events through the batched writer, member rights, the report."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.alerts import AlertStore
from services.community import (
    CommunityLog,
    EmojiCleared,
    MessageCreated,
    MessageEdited,
    MessagesDeleted,
    ReactionAdded,
    ReactionRemoved,
    ReactionsCleared,
    _log,
    community_answer,
)
from services.community._text import (
    BEARISH_WORDS,
    BULLISH_WORDS,
    TOKEN,
    clean_text,
    find_cashtags,
    text_fields,
    tone,
    tone_counts,
)
from services.community._writer import LogWriter
from services.config import Zones
from services.errors import InputError
from services.market import MarketData
from services.privacy import forget_member
from services.sentiment import BEARISH, BULLISH, SentimentStore, validate_poll
from services.storage import Database
from services.timefmt import iso_utc

T0 = datetime(2026, 8, 10, 15, 0, tzinfo=UTC)
G1, G2 = 1001, 2002
C1, C2, C_OFF = 11, 22, 33  # C1 logged in G1, C2 logged in G2, C_OFF not logged
ALICE, BOB = 501, 502


@pytest.fixture
def db(database):
    return database  # the shorter name reads better in the many queries below


@pytest.fixture
async def clog(db):
    log = CommunityLog(db, interval=60)  # only explicit flushes (and close) write, so tests are deterministic
    await log.open()
    await log.set_logging(G1, C1, True, T0)
    await log.set_logging(G2, C2, True, T0)
    yield log
    await log.close()


async def rows(db, sql, params=()):
    return await db.run(lambda d: list(d.query(sql, list(params))))


async def exported(clog, days, **options) -> bytes:
    """The export's file, read before the export's block deletes it."""
    async with clog.export_csv(G1, days, **options) as export:
        return export.path.read_bytes()


async def message(db, message_id):
    found = await rows(db, "SELECT * FROM community_messages WHERE message_id = ?", [message_id])
    return found[0] if found else None


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- text ---------------------------------------------------------------------------------------------------

def test_cashtags():
    text = "$IWM and $spy, $BRK.B. Not $100, US$5, $TOOLONG, $IWM again, ($QQQ) $AAPL's $R2K"
    assert find_cashtags(text) == ["IWM", "SPY", "BRK.B", "QQQ", "AAPL"]
    assert find_cashtags("") == []


def test_tone_words():
    assert tone_counts("Bullish! Buying calls 🚀🚀 but bears say crash") == (5, 2)
    assert tone_counts("Bullish! Buying calls but bears say crash") == (3, 2)  # ASCII takes the fast path
    assert tone_counts("bullishness is not a listed word; calling it") == (0, 0)
    assert tone_counts("$BULL and $BEAR are tickers, not moods; $PUTS neither") == (0, 0)
    assert tone(3, 1) == 0.5 and tone(0, 2) == -1.0 and tone(0, 0) is None


def test_clean_text_keeps_valid_unicode():
    odd = "👨‍👩‍👧‍👦 🇺🇸 e\u0301 \u202eRTL\u202c \x01 \ufeff 𝔘𝔫𝔦"
    assert clean_text(odd) == odd
    assert clean_text("a\ud800b") == "a\ufffdb"
    # NUL is the one character dropped: PostgreSQL's text cannot hold it, and both engines store the same text.
    assert clean_text("a\x00b") == "ab" and clean_text("🚀\x00\x00🚀") == "🚀🚀"


# --- opt-in -------------------------------------------------------------------------------------------------

async def test_opt_in_cache_and_opted_out_channel_ignored(db, clog):
    assert clog.is_logged(G1, C1) and clog.is_logged(G2, C2)
    assert not clog.is_logged(G1, C_OFF) and not clog.is_logged(G2, C1)  # per guild
    assert not clog.put(MessageCreated(G1, C_OFF, 1, ALICE, at(0), "not logged"))
    assert not clog.put(ReactionAdded(G1, C_OFF, 1, ALICE, "👍", None, at(0)))
    assert clog.put(MessageCreated(G1, C1, 2, ALICE, at(0), "logged"))
    await clog.flush()
    assert await message(db, 1) is None
    assert (await message(db, 2))["content"] == "logged"
    assert await rows(db, "SELECT * FROM community_reactions") == []
    assert await clog.set_logging(G1, C1, False)
    assert not await clog.set_logging(G1, C1, False)
    assert not clog.is_logged(G1, C1)
    # the cache is rebuilt from the table on start-up
    fresh = CommunityLog(db)
    await fresh.open()
    assert fresh.logged_channels(G1) == frozenset() and fresh.logged_channels(G2) == {C2}
    await fresh.close()


# --- messages -----------------------------------------------------------------------------------------------

async def test_create_edit_delete_in_one_batch(db, clog):
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), "first $IWM", reply_to=None))
    clog.put(MessageCreated(G1, C1, 2, BOB, at(1), "a reply, bullish", reply_to=1))
    clog.put(MessageEdited(G1, C1, 1, "second $SPY", at(2)))
    clog.put(MessageEdited(G1, C1, 1, "second $SPY", at(3)))  # embed update: same text, no revision
    clog.put(MessageEdited(G1, C1, 1, "third $IWM $RUT", at(4)))
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), "replayed create"))  # ignored, the row exists
    await clog.flush()
    first = await message(db, 1)
    assert (first["content"], json.loads(first["cashtags"]), first["edited_at"]) == (
        "third $IWM $RUT", ["IWM", "RUT"], at(4).isoformat(timespec="microseconds"))
    revisions = await rows(db, "SELECT content FROM community_revisions WHERE message_id = 1 ORDER BY id")
    assert [r["content"] for r in revisions] == ["first $IWM", "second $SPY"]
    reply = await message(db, 2)
    assert (reply["reply_to"], reply["bull"], reply["bear"]) == (1, 1, 0)
    # edit then delete in the same batch: the delete comes last
    clog.put(MessageEdited(G1, C1, 1, "fourth", at(5)))
    clog.put(MessagesDeleted(G1, (1,), at(6)))
    clog.put(MessageEdited(G1, C1, 1, "edit after delete is ignored", at(7)))
    await clog.flush()
    gone = await message(db, 1)
    assert (gone["deleted"], gone["content"], gone["cashtags"], gone["bull"]) == (1, "", "[]", 0)
    revisions = await rows(db, "SELECT content FROM community_revisions WHERE message_id = 1")
    assert len(revisions) == 3 and {r["content"] for r in revisions} == {""}


async def test_edit_of_unseen_message(db, clog):
    clog.put(MessageEdited(G1, C1, 7, "no author known", at(1)))
    clog.put(MessageEdited(G1, C1, 8, "now known", at(2), author_id=BOB, created_at=at(-60), reply_to=3))
    await clog.flush()
    assert await message(db, 7) is None
    row = await message(db, 8)
    assert (row["author_id"], row["content"], row["reply_to"]) == (BOB, "now known", 3)
    assert await rows(db, "SELECT * FROM community_revisions") == []


async def test_edits_after_opt_out_still_apply(db, clog):
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), "my phone number is ..."))
    await clog.flush()
    await clog.set_logging(G1, C1, False)
    assert clog.put(MessageEdited(G1, C1, 1, "[removed]", at(1)))
    clog.put(MessageEdited(G1, C1, 2, "never logged", at(2), author_id=BOB, created_at=at(0)))
    await clog.flush()
    assert (await message(db, 1))["content"] == "[removed]"
    assert await message(db, 2) is None


async def test_bulk_delete(db, clog):
    for i in range(1, 6):
        clog.put(MessageCreated(G1, C1, i, ALICE, at(i), f"message {i} $IWM"))
    clog.put(MessageEdited(G1, C1, 2, "edited", at(10)))
    clog.put(MessagesDeleted(G1, (1, 2, 3, 999), at(11)))
    await clog.flush()
    found = await rows(db, "SELECT message_id, deleted, content FROM community_messages ORDER BY message_id")
    assert [(r["message_id"], r["deleted"], r["content"]) for r in found] == [
        (1, 1, ""), (2, 1, ""), (3, 1, ""), (4, 0, "message 4 $IWM"), (5, 0, "message 5 $IWM")]
    assert [r["content"] for r in await rows(db, "SELECT content FROM community_revisions")] == [""]


async def test_delete_is_guild_scoped(db, clog):
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), "mine"))
    clog.put(MessagesDeleted(G2, (1,), at(1)))  # another guild cannot touch it
    await clog.flush()
    assert (await message(db, 1))["deleted"] == 0


# --- reactions ----------------------------------------------------------------------------------------------

async def test_reactions_add_remove_clear(db, clog):
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), "react to me"))
    clog.put(ReactionAdded(G1, C1, 1, ALICE, "🚀", None, at(1)))
    clog.put(ReactionAdded(G1, C1, 1, ALICE, "🚀", None, at(1.5)))  # replayed: keeps the first time
    clog.put(ReactionAdded(G1, C1, 1, BOB, "🚀", None, at(2)))
    clog.put(ReactionAdded(G1, C1, 1, BOB, "stonks", 42, at(3)))
    clog.put(ReactionAdded(G1, C1, 1, ALICE, "stonks_renamed", 42, at(4)))  # same custom emoji, new name
    clog.put(ReactionRemoved(G1, 1, BOB, "🚀", None, at(5)))
    await clog.flush()

    async def live():
        found = await rows(db, "SELECT user_id, emoji_key FROM community_reactions WHERE removed_at IS NULL "
                               "ORDER BY user_id, emoji_key")
        return [(r["user_id"], r["emoji_key"]) for r in found]

    assert await live() == [(ALICE, "42"), (ALICE, "🚀"), (BOB, "42")]
    first = await rows(db, "SELECT added_at FROM community_reactions WHERE user_id = ? AND emoji_key = '🚀'",
                       [ALICE])
    assert first[0]["added_at"] == at(1).isoformat(timespec="microseconds")
    clog.put(ReactionAdded(G1, C1, 1, BOB, "🚀", None, at(6)))  # re-added after removal
    clog.put(EmojiCleared(G1, 1, "stonks", 42, at(7)))
    await clog.flush()
    assert await live() == [(ALICE, "🚀"), (BOB, "🚀")]
    clog.put(ReactionsCleared(G1, 1, at(8)))
    await clog.flush()
    assert await live() == []
    assert len(await rows(db, "SELECT * FROM community_reactions")) == 4


# --- the writer ---------------------------------------------------------------------------------------------

async def test_burst_of_20000_loses_nothing_and_close_flushes(tmp_path):
    path = tmp_path / "burst.db"
    async with Database(path) as database:
        clog = CommunityLog(database, interval=30)
        await clog.open()
        await clog.set_logging(G1, C1, True, T0)
        for i in range(20_000):
            clog.put(MessageCreated(G1, C1, 10_000 + i, 1 + i % 300, T0 + timedelta(seconds=i), f"msg {i} $IWM 🚀"))
            if i % 1000 == 0:
                clog.put(MessageEdited(G1, C1, 10_000 + i, f"edited {i}", T0 + timedelta(seconds=i, milliseconds=1)))
                await asyncio.sleep(0)  # let the writer run while the burst goes on
        await clog.close()  # no flush: close must write everything
        assert clog.writer.applied == 20_020 and clog.writer.skipped == 0
        with pytest.raises(RuntimeError):
            clog.put(MessageCreated(G1, C1, 1, ALICE, T0, "after close"))
    async with Database(path) as database:
        count = await database.run(lambda d: d.execute("SELECT count(*), count(DISTINCT author_id), "
                                                       "min(message_id), max(message_id) FROM community_messages")
                                   .fetchone())
        assert count == (20_000, 300, 10_000, 29_999)
        edits = await database.run(lambda d: d.execute("SELECT count(*) FROM community_revisions").fetchone())
        assert edits == (20,)


async def test_writer_flushes_on_its_own(db):
    writer = LogWriter(db, batch_size=500, interval=0.01)
    writer.put(MessageCreated(G1, C1, 1, ALICE, T0, "hello"))
    for _ in range(500):  # no flush(): the interval writes it
        if writer.applied:
            break
        await asyncio.sleep(0.01)
    assert writer.applied == 1
    await writer.close()
    await writer.close()  # twice is fine


async def test_the_backlog_is_bounded_by_back_pressure(db):
    """Other work holds the database thread (here 0.3 s): `put` never lets more than max_pending events wait in
    memory. Past that it writes the oldest batch itself and returns once it is committed, the event loop held
    meanwhile, so the bot reads no more gateway events until the backlog is down; the order holds."""
    writer = LogWriter(db, batch_size=50, interval=60, max_pending=200)
    busy = asyncio.ensure_future(db.run(lambda d: time.sleep(0.3)))
    await asyncio.sleep(0.05)  # the database thread is in it now
    peak, started = 0, time.monotonic()
    for i in range(1, 1001):
        writer.put(MessageCreated(G1, C1, i, ALICE, at(i), f"message {i}"))
        peak = max(peak, writer.pending)
    assert peak < 200 and writer.pushed_back >= (1000 - 200) // 50
    assert time.monotonic() - started > 0.2  # put waited for the database thread to be free
    await busy
    await writer.flush()
    physical = "rowid" if db.engine == "sqlite" else "ctid"  # the order rows went in (a fresh PostgreSQL heap)
    assert [r["message_id"] for r in await rows(db, f"SELECT message_id FROM community_messages ORDER BY {physical}")
            ] == list(range(1, 1001))
    await writer.close()


async def test_flush_racing_close(db, clog):
    for i in range(1, 1201):
        clog.put(MessageCreated(G1, C1, i, ALICE, at(i), "x"))
    await asyncio.gather(clog.flush(), clog.close(), clog.flush())
    await clog.flush()  # after close: returns at once
    assert len(await rows(db, "SELECT * FROM community_messages")) == 1200


async def test_long_odd_unicode_message_stored_intact(db, clog):
    pieces = ["👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "e\u0301", "\u202eRTL\u202c", "\u200b", "\x00", "\ufeff", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
              "中文", "עברית", "🚀", "$IWM", "\"quoted, with comma\"", "\r\n", "🤌🏽", "\U0010fffd"]
    text = ""
    i = 0
    while len(text) < 4000:
        text += pieces[i % len(pieces)]
        i += 1
    text = text[:4000]
    assert len(text) == 4000
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), text))
    await clog.flush()
    stored = "".join(ch for ch in text if ch != "\x00")  # the one character neither engine keeps (clean_text)
    assert (await message(db, 1))["content"] == stored
    data = await exported(clog, 30, now=at(60))
    (row,) = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert row["content"] == stored


async def test_bad_rows_do_not_lose_the_batch(db, clog, caplog):
    for i in range(1, 101):
        if i == 30:
            clog.put(MessageCreated(G1, C1, 2**64, ALICE, at(i), "id too large for SQLite"))
        elif i == 60:
            clog.put(MessageCreated(G1, C1, 60, ALICE, datetime(2026, 8, 10, 15, 0), "naive time"))
        elif i == 70:
            clog.put(MessageCreated(G1, C1, 70, ALICE, at(i), "lone surrogate \ud83d kept as U+FFFD"))
        else:
            clog.put(MessageCreated(G1, C1, i, ALICE, at(i), f"fine {i}"))
    clog.put(ReactionAdded(G1, C1, 5, BOB, "👍", 2**70, at(200)))  # bad custom emoji id
    clog.put(ReactionAdded(G1, C1, 5, BOB, "👎", None, at(201)))
    await clog.flush()
    stored = await rows(db, "SELECT message_id FROM community_messages ORDER BY message_id")
    assert [r["message_id"] for r in stored] == [i for i in range(1, 101) if i not in (30, 60)]
    assert (await message(db, 70))["content"] == "lone surrogate \ufffd kept as U+FFFD"
    assert [r["emoji_key"] for r in await rows(db, "SELECT emoji_key FROM community_reactions")] == ["👎"]
    assert clog.writer.skipped == 3 and clog.writer.applied == 99
    assert "skipped" in caplog.text
    # and the writer carries on
    clog.put(MessageCreated(G1, C1, 500, ALICE, at(300), "still writing"))
    await clog.flush()
    assert await message(db, 500) is not None


async def test_inserts_split_by_sqlites_variable_limit(db, clog):
    """A run of inserts goes in as multi-row statements of as many rows as SQLite's variable limit allows (999
    on older builds; PostgreSQL: one COPY); a bad row in a later statement leaves the earlier ones neither lost nor
    doubled."""
    if db.engine == "sqlite":
        await db.run(lambda d: d.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 35))  # 3 rows per statement
    for i in range(1, 12):
        clog.put(MessageCreated(G1, C1, 2**64 if i == 8 else i, ALICE, at(i), f"message {i} $IWM"))
    for i in range(3):
        clog.put(ReactionAdded(G1, C1, 1, BOB, "🚀", None, at(20 + i)))  # the same reaction thrice: one row
    await clog.flush()
    stored = await rows(db, "SELECT message_id, cashtags FROM community_messages ORDER BY message_id")
    assert [(r["message_id"], r["cashtags"]) for r in stored] == [(i, '["IWM"]') for i in range(1, 12) if i != 8]
    reactions = await rows(db, "SELECT added_at FROM community_reactions")
    assert [r["added_at"] for r in reactions] == [iso_utc(at(20))]
    assert clog.writer.applied == 13 and clog.writer.skipped == 1


async def test_failed_transaction_is_retried(db, clog, monkeypatch):
    real_run, failures = db.run, []

    async def flaky_run(fn):
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("database is locked")
        return await real_run(fn)

    monkeypatch.setattr(db, "run", flaky_run)
    for i in range(1, 11):
        clog.put(MessageCreated(G1, C1, i, ALICE, at(i), f"message {i}"))
    await clog.flush()
    monkeypatch.undo()
    assert failures == [1] and clog.writer.applied == 10 and clog.writer.skipped == 0
    assert len(await rows(db, "SELECT * FROM community_messages")) == 10


# --- member rights, retention, export -----------------------------------------------------------------------

async def test_forget_member(db, clog):
    store = SentimentStore(db)
    alerts = AlertStore(db, Zones())
    await alerts.subscribe(G1, C1, ("breakout",), created_by=ALICE)
    await alerts.subscribe(G2, C2, ("breakout",), created_by=ALICE)  # another server: stays
    await store.register_poll(G1, C1, 9001, validate_poll(), T0)
    await store.register_poll(G2, C2, 9002, validate_poll(), T0)
    for poll in (9001, 9002):
        await store.record_vote(poll, ALICE, BULLISH, True, at(1))
        await store.record_vote(poll, BOB, BEARISH, True, at(1))
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), "alice one"))
    clog.put(MessageCreated(G1, C1, 2, ALICE, at(1), "alice two"))
    clog.put(MessageCreated(G1, C1, 3, BOB, at(2), "bob replies", reply_to=1))
    clog.put(MessageCreated(G2, C2, 4, ALICE, at(3), "alice elsewhere"))
    clog.put(MessageEdited(G1, C1, 1, "alice one, edited", at(4)))
    clog.put(ReactionAdded(G1, C1, 3, ALICE, "👍", None, at(5)))  # alice on bob's message
    clog.put(ReactionAdded(G1, C1, 1, BOB, "👍", None, at(6)))  # bob on alice's message
    clog.put(ReactionAdded(G1, C1, 3, BOB, "🚀", None, at(7)))  # bob on bob's message: stays
    # queued, not yet written when forget is called: must not survive it
    clog.put(MessageCreated(G1, C1, 5, ALICE, at(8), "alice, still in the queue"))
    counts = await forget_member(clog, G1, ALICE)
    assert (counts.messages, counts.revisions, counts.reactions, counts.votes, counts.settings) == (3, 1, 2, 1, 1)
    creators = await rows(db, "SELECT guild_id, created_by FROM alert_subscriptions ORDER BY guild_id")
    assert [(r["guild_id"], r["created_by"]) for r in creators] == [(G1, 0), (G2, ALICE)]  # the setting stays
    assert [r["message_id"] for r in await rows(db, "SELECT message_id FROM community_messages "
                                                    "ORDER BY message_id")] == [3, 4]
    assert [(r["user_id"], r["emoji_key"]) for r in await rows(db, "SELECT * FROM community_reactions")] == [
        (BOB, "🚀")]
    votes = await rows(db, "SELECT message_id, user_id FROM sentiment_votes ORDER BY message_id, user_id")
    assert [(v["message_id"], v["user_id"]) for v in votes] == [(9001, BOB), (9002, ALICE), (9002, BOB)]
    again = await forget_member(clog, G1, ALICE)
    assert (again.messages, again.revisions, again.reactions, again.votes, again.settings) == (0, 0, 0, 0, 0)


async def test_forget_member_is_one_transaction(tmp_path):
    """If one store's erasure fails, no store loses anything: here the vote table has gone."""
    async with Database(tmp_path / "no-polls.db") as database:
        await database.run(lambda d: d.execute("DROP TABLE sentiment_votes"))
        clog = CommunityLog(database, interval=60)
        await clog.open()
        await clog.set_logging(G1, C1, True, T0)
        clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), "alice one"))
        clog.put(ReactionAdded(G1, C1, 1, BOB, "👍", None, at(1)))
        with pytest.raises(sqlite3.OperationalError, match="sentiment_"):
            await forget_member(clog, G1, ALICE)
        assert await rows(database, "SELECT message_id FROM community_messages") == [{"message_id": 1}]
        assert len(await rows(database, "SELECT * FROM community_reactions")) == 1
        await clog.close()


async def test_retention_purge(db, clog):
    now = T0 + timedelta(days=400)
    clog.put(MessageCreated(G1, C1, 1, ALICE, now - timedelta(days=366), "old"))
    clog.put(MessageEdited(G1, C1, 1, "old, edited", now - timedelta(days=366, minutes=-1)))
    clog.put(ReactionAdded(G1, C1, 1, BOB, "👍", None, now - timedelta(days=10)))  # recent, on an old message
    clog.put(MessageCreated(G2, C2, 2, BOB, now - timedelta(days=364), "recent"))
    clog.put(ReactionAdded(G2, C2, 2, ALICE, "👍", None, now - timedelta(days=364)))
    clog.put(ReactionAdded(G2, C2, 99, ALICE, "👎", None, now - timedelta(days=370)))  # old, unlogged message
    await clog.flush()
    counts = await clog.purge_older_than(365, now=now)
    assert (counts.messages, counts.revisions, counts.reactions) == (1, 1, 2)
    assert [r["message_id"] for r in await rows(db, "SELECT message_id FROM community_messages")] == [2]
    assert len(await rows(db, "SELECT * FROM community_reactions")) == 1
    with pytest.raises(ValueError):
        await clog.purge_older_than(0)


async def test_export_csv(db, clog):
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), "=SUM(1) $IWM $spy, \"quoted\"\nsecond line"))
    clog.put(MessageCreated(G1, C1, 2, BOB, at(1), "secret, then deleted", reply_to=1))
    clog.put(MessageEdited(G1, C1, 2, "secret v2", at(2)))
    clog.put(MessagesDeleted(G1, (2,), at(3)))
    clog.put(ReactionAdded(G1, C1, 1, BOB, "👍", None, at(4)))
    clog.put(MessageCreated(G2, C2, 3, ALICE, at(0), "other guild"))
    clog.put(MessageCreated(G1, C1, 4, ALICE, at(-60 * 24 * 10), "too old for a 7 day export"))
    data = await exported(clog, 7, now=at(60))
    assert b"secret" not in data and b"other guild" not in data
    table = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert [r["message_id"] for r in table] == ["1", "2"]
    first, second = table
    assert first["content"] == "'=SUM(1) $IWM $spy, \"quoted\"\nsecond line"  # neutralised, see below
    assert (first["cashtags"], first["reactions"], first["deleted"], first["revisions"]) == ("IWM SPY", "1", "0", "0")
    assert (second["content"], second["deleted"], second["revisions"], second["reply_to"]) == ("", "1", "1", "1")
    assert first["created_at"] == at(0).isoformat(timespec="microseconds")
    with pytest.raises(InputError):
        await exported(clog, 0)


async def test_export_is_written_in_chunks_and_stops_before_the_size_limit(db, clog, monkeypatch):
    for i in range(1, 301):
        clog.put(MessageCreated(G1, C1, i, ALICE if i % 2 else BOB, at(i / 10), f"message {i} " + "x" * (i % 17)))
    whole = await exported(clog, 7, now=at(60))
    monkeypatch.setattr(_log, "EXPORT_CHUNK", 7)  # many chunks, and a limit that falls inside one
    calls = 0
    run = db.run

    async def counting(fn):
        nonlocal calls
        calls += 1
        return await run(fn)

    monkeypatch.setattr(db, "run", counting)
    assert await exported(clog, 7, now=at(60)) == whole  # the chunks join up to the same file
    assert calls >= 300 // 7  # one turn on the database thread per chunk (plus the flush)
    lines = whole.split(b"\r\n")[:-1]  # no row holds a line break here
    assert len(lines) == 301
    limit = len(whole) // 2
    fits = max(k for k in range(302) if sum(len(line) + 2 for line in lines[:k]) <= limit) - 1  # rows after the header
    async with clog.export_csv(G1, 7, max_bytes=limit, now=at(60)) as export:
        data = export.path.read_bytes()
        assert export.path.stat().st_mode & 0o777 == 0o600
        assert (export.complete, export.messages, export.size) == (False, fits, len(data))
    assert not export.path.exists()  # gone once the block ends
    assert export.path.parent == (db.path.with_name(db.path.name + "-exports") if db.engine == "sqlite"
                                  else Path(tempfile.gettempdir()))
    assert data == b"".join(line + b"\r\n" for line in lines[: fits + 1]) and len(data) <= limit
    async with clog.export_csv(G1, 7, max_bytes=len(whole), now=at(60)) as export:
        assert (export.complete, export.messages) == (True, 300)
    async with clog.export_csv(G1, 7, max_bytes=10, now=at(60)) as export:  # not even the header fits
        assert (export.complete, export.messages, export.path.read_bytes()) == (False, 0, b"")


async def test_an_export_a_crash_left_behind_is_deleted_at_the_next_open(db, clog):
    """Members' messages must not outlive retention or forget-me in a half-written export file."""
    if db.engine != "sqlite":
        pytest.skip("on PostgreSQL exports go to the system's temp folder, which the system clears")
    async with clog.export_csv(G1, 7) as export:
        left = export.path.with_name("export-left-by-a-crash.csv")
        left.write_bytes(export.path.read_bytes())
    assert left.exists()
    again = CommunityLog(db, interval=60)
    await again.open()  # as at the next start
    assert not left.exists()
    await again.close()


@pytest.mark.parametrize(("content", "cell"), [
    ('=HYPERLINK("http://x")', "'=HYPERLINK(\"http://x\")"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("+1", "'+1"),
    ("-1", "'-1"),
    ("\tx", "'\tx"),
    ("\rx", "'\rx"),
    ("plain text, $IWM", "plain text, $IWM"),
])
async def test_export_csv_neutralises_formulas(clog, content, cell):
    """OWASP's CSV-injection advice: a cell a spreadsheet would run as a formula starts with a single quote, and
    every cell is quoted, so the raw line carries the quote right after the opening double quote."""
    clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), content))
    data = (await exported(clog, 7, now=at(60))).decode("utf-8")
    header, row = list(csv.reader(io.StringIO(data, newline="")))
    assert row[header.index("content")] == cell
    line = data.split("\r\n", 1)[1]
    expected = '"' + cell.replace('"', '""') + '"'
    assert line.startswith('"1","') and line.rstrip("\r\n").endswith(expected)


# --- /iwm community -----------------------------------------------------------------------------------------

async def fill_two_guilds(clog):
    """G1: three members over four days in August 2026 (inside the bundled IWM data); G2: one loud member."""
    n = 0
    texts = ["$IWM breakout, buying calls 🚀", "bearish, $SPY puts", "$IWM $RUT rally", "meh", "crash incoming $IWM"]
    for day in range(4):
        for k in range(3 + day):
            n += 1
            clog.put(MessageCreated(G1, C1, n, (ALICE, BOB, 503)[k % 3], T0 + timedelta(days=day, minutes=k),
                                    texts[(day + k) % len(texts)]))
            clog.put(ReactionAdded(G1, C1, n, BOB, "🚀" if k % 2 else "stonks", None if k % 2 else 77,
                                   T0 + timedelta(days=day, minutes=k + 1)))
    for k in range(50):
        clog.put(MessageCreated(G2, C2, 1000 + k, 999, T0 + timedelta(days=1, minutes=k), "$TSLA to the moon 🚀"))
    await clog.flush()


async def test_community_report_guild_isolation(db, clog, renderer):
    await fill_two_guilds(clog)
    market = MarketData([])
    now = T0 + timedelta(days=3, hours=2)  # 2026-08-13
    report, png = await community_answer(db, market, renderer, G1, 7, now=now)
    assert png.startswith(b"\x89PNG")
    assert (report.start, report.end) == (date(2026, 8, 7), date(2026, 8, 13))
    assert len(report.daily) == 7
    assert [d.messages for d in report.daily[-4:]] == [3, 4, 5, 6] and report.messages == 18
    assert report.members == 3 and report.daily[-4].members == 3
    assert report.top_cashtags[0] == ("IWM", 10)
    assert "TSLA" not in dict(report.top_cashtags)
    assert {r.display: r.count for r in report.top_reactions} == {"<:stonks:77>": 10, "🚀": 8}
    assert report.bullish > 0 and report.bearish > 0 and -1 <= report.tone <= 1
    assert report.market_note == "" and report.market_as_of == date(2026, 10, 5) and report.market_days == 5
    other, _ = await community_answer(db, market, renderer, G2, 7, now=now)
    assert (other.messages, other.members, other.top_cashtags) == (50, 1, (("TSLA", 50),))


async def test_report_includes_what_was_just_written(clog, renderer):
    """`/iwm community` (CommunityLog.report) counts messages still waiting in the writer's queue."""
    now = datetime.now(UTC)
    for i in range(3):
        clog.put(MessageCreated(G1, C1, 5000 + i, ALICE, now, f"just now {i} $IWM"))
    assert clog.writer.pending == 3  # the fixture's writer only writes on flush
    report, _ = await clog.report(MarketData([]), renderer, G1, 7)
    assert report.messages == 3 and report.top_cashtags == (("IWM", 3),)


async def test_community_report_after_the_market_data_ends(db, clog, renderer):
    market = MarketData([])
    now = datetime(2026, 10, 16, 12, tzinfo=UTC)  # a Friday; the window starts 2026-09-17
    clog.put(MessageCreated(G1, C1, 1, ALICE, datetime(2026, 10, 14, 12, tzinfo=UTC), "$IWM bullish"))
    await clog.flush()
    report, png = await community_answer(db, market, renderer, G1, 30, now=now)
    assert png.startswith(b"\x89PNG")
    # Sessions 2026-09-17..10-05: 13; weekdays 10-06..10-15 without a price (the 16th is still open): 8.
    assert report.market_as_of == date(2026, 10, 5) and report.market_days == 13
    assert report.market_note.startswith("IWM prices end 2026-10-05") and "last 8 weekdays" in report.market_note
    late, _ = await community_answer(db, market, renderer, G1, 3, now=now)
    assert late.market_days == 0 and "no IWM prices in this window" in late.market_note


@pytest.mark.parametrize("days", [0, 366, -3, 1.5])
async def test_bad_days(db, renderer, days):
    with pytest.raises(InputError):
        await community_answer(db, MarketData([]), renderer, G1, days)


# The definitions the fast paths must agree with: the cashtag pattern with its lookbehind first, and tone as a
# plain regex tokenizer.
REFERENCE_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,5}(?:\.[A-Za-z])?)(?!\w)")


def reference_tone(text: str) -> tuple[int, int]:
    tokens = TOKEN.findall(text.lower())
    return sum(t in BULLISH_WORDS for t in tokens), sum(t in BEARISH_WORDS for t in tokens)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["bull", "bear", "puts", "calls", "$", "$IWM", "BRK.B", "é", "🚀", "📉", " ", ".",
                                 "_", "1", "x", "Sell", "İ", "\u017f"]), max_size=12).map("".join)
       | st.text(alphabet=st.sampled_from(list("abcIWMSPYBRK.$ 1_0🚀📉🐂xyz\u00e9bullbearputs")), max_size=60)
       | st.text(max_size=60))
def test_fast_text_analysis_agrees_with_the_plain_definitions(text: str) -> None:
    """The writer's hot path (bytes tokens for ASCII, the "$"-first cashtag regex) says what the plain regexes
    say, for ASCII and non-ASCII text alike."""
    assert find_cashtags(text) == list(dict.fromkeys(m.upper() for m in REFERENCE_CASHTAG.findall(text)))
    assert tone_counts(text) == reference_tone(text)
    content, tags, bullish, bearish = text_fields(text)
    assert json.loads(tags) == find_cashtags(content) and (bullish, bearish) == tone_counts(content)


async def test_forgotten_text_leaves_the_database_and_its_write_ahead_log(tmp_path):
    path = tmp_path / "forget.db"
    secret = "unmistakable-secret-text-4f2a9c"
    async with Database(path) as database:
        clog = CommunityLog(database, interval=60)
        await clog.open()
        await clog.set_logging(G1, C1, True, T0)
        clog.put(MessageCreated(G1, C1, 1, ALICE, at(0), f"alice says {secret}"))
        await clog.flush()
        files = [path, path.with_name(path.name + "-wal")]
        assert any(secret.encode() in f.read_bytes() for f in files if f.exists())  # the test can see it at all
        await forget_member(clog, G1, ALICE)
        assert not any(secret.encode() in f.read_bytes() for f in files if f.exists())
        await clog.close()

"""A large community log written straight into SQLite (no writer, no events): the scale tests and
bench/community_scale.py build their 50k- and 1M-message logs with it in seconds."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.schema import migrate
from services.timefmt import iso_utc

TEXTS = ("$IWM looks strong into the close, buying calls", "selling, this looks red to me $TNA",
         "anyone watching $IWM $SPY today?", "bearish divergence on breadth, careful", "bull flag, moon soon 🚀")


def fill_log(path: Path, guild_id: int, channel_id: int, messages: int, *, authors: int = 500,
             end: datetime | None = None, days: int = 400, first_id: int = 1) -> None:
    """`messages` messages of `authors` members in one channel, spread evenly over the `days` days before `end`
    (oldest first, ids from `first_id`), with an earlier version for every 10th message and a reaction on every
    5th. Authors and reacting members (user ids 1000 to 1000 + authors - 1) are drawn at random, seeded."""
    end = end or datetime.now(UTC)
    step = timedelta(days=days) / messages
    start = end - timedelta(days=days)
    draw = random.Random(messages).randrange
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn)  # the bot's own schema, at this code's version
        chunk = 50_000
        for lo in range(0, messages, chunk):
            rows, revisions, reactions = [], [], []
            for i in range(lo, min(lo + chunk, messages)):
                mid, author, at = first_id + i, 1000 + draw(authors), iso_utc(start + step * i)
                text = TEXTS[i % len(TEXTS)]
                rows.append((mid, guild_id, channel_id, author, at, text, '["IWM"]', 1, 0))
                if i % 10 == 0:
                    revisions.append((guild_id, mid, "first draft", at))
                if i % 5 == 0:
                    reactions.append((guild_id, channel_id, mid, 1000 + draw(authors), "🚀", "🚀", None, at))
            with conn:
                conn.executemany("INSERT INTO community_messages (message_id, guild_id, channel_id, author_id, "
                                 "created_at, content, cashtags, bull, bear) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                conn.executemany("INSERT INTO community_revisions (guild_id, message_id, content, replaced_at) "
                                 "VALUES (?, ?, ?, ?)", revisions)
                conn.executemany("INSERT INTO community_reactions VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)", reactions)
        conn.execute("INSERT OR IGNORE INTO community_channels VALUES (?, ?, ?)",
                     (guild_id, channel_id, iso_utc(start)))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()

"""The community log's tables."""

from __future__ import annotations

import sqlite_utils

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
-- A member's erasure under way (forget-me deletes in batches): finished at the next start if the bot stops first.
CREATE TABLE IF NOT EXISTS community_erasures (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    requested_at TEXT NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
"""


def create_tables(d: sqlite_utils.Database) -> None:
    d.executescript(SCHEMA)

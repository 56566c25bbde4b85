"""The community log's events, one typed value per gateway event, each with the SQL that applies it.

An event becomes parameter rows (`rows()`, one list per statement) when it is queued, on the event loop, so the
database thread only runs SQL (bench: community_log). Events are plain slotted dataclasses, not frozen ones: one
is built per gateway event, and a frozen dataclass takes three to four times as long to build. Treat them as
values all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from services.community._text import clean_text, emoji_key, text_fields
from services.timefmt import iso_utc

Prepared = tuple[list[tuple], ...]  # an event as parameter rows, one list per statement of its kind


class Event:
    """A log event: its SQL statements and how it becomes parameter rows for each of them.

    A batchable kind's statements may run for a whole run of consecutive events at once (statement by statement,
    with executemany or a multi-row INSERT); a kind whose statements read what the previous event of the run
    wrote is not batchable.
    """

    __slots__ = ()
    statements: ClassVar[tuple[str, ...]]
    batchable: ClassVar[bool] = True

    def rows(self) -> Prepared:
        raise NotImplementedError


_MESSAGE_COLUMNS = "message_id, guild_id, channel_id, author_id, created_at, content, cashtags, bull, bear, reply_to"


@dataclass(slots=True)
class MessageCreated(Event):
    """A new message. For a thread, channel_id is the parent's if the parent's opt-in should cover it."""

    guild_id: int
    channel_id: int
    message_id: int
    author_id: int
    created_at: datetime
    content: str
    reply_to: int | None = None

    statements = (f"INSERT INTO community_messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (message_id) DO NOTHING",)

    def rows(self) -> Prepared:
        text, tags, bull, bear = text_fields(self.content)
        return ([(self.message_id, self.guild_id, self.channel_id, self.author_id, iso_utc(self.created_at), text,
                  tags, bull, bear, self.reply_to)],)


@dataclass(slots=True)
class MessageEdited(Event):
    """An edit: the replaced text becomes a revision; an edit that keeps the text (an embed update) adds nothing.
    With author_id and created_at, an edit of a message the log never saw adds it."""

    guild_id: int
    channel_id: int
    message_id: int
    content: str
    edited_at: datetime
    author_id: int | None = None
    created_at: datetime | None = None
    reply_to: int | None = None

    statements = (
        "INSERT INTO community_revisions (guild_id, message_id, content, replaced_at) "
        "SELECT guild_id, message_id, content, ? FROM community_messages "
        "WHERE message_id = ? AND guild_id = ? AND deleted = 0 AND content <> ?",
        "UPDATE community_messages SET content = ?, cashtags = ?, bull = ?, bear = ?, edited_at = ? "
        "WHERE message_id = ? AND guild_id = ? AND deleted = 0 AND content <> ?",
        f"INSERT INTO community_messages ({_MESSAGE_COLUMNS}, edited_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (message_id) DO NOTHING",
    )
    batchable = False

    def rows(self) -> Prepared:
        text, tags, bull, bear = text_fields(self.content)
        at = iso_utc(self.edited_at)
        insert = []
        if self.author_id is not None and self.created_at is not None:  # not logged before: keep it from now
            insert = [(self.message_id, self.guild_id, self.channel_id, self.author_id, iso_utc(self.created_at),
                       text, tags, bull, bear, self.reply_to, at)]
        return ([(at, self.message_id, self.guild_id, text)],
                [(text, tags, bull, bear, at, self.message_id, self.guild_id, text)], insert)


@dataclass(slots=True)
class MessagesDeleted(Event):
    """One deleted message or a bulk deletion: the content and earlier versions are blanked, a tombstone stays."""

    guild_id: int
    message_ids: tuple[int, ...]
    at: datetime

    statements = (
        "UPDATE community_messages SET content = '', cashtags = '[]', bull = 0, bear = 0, deleted = 1, "
        "deleted_at = coalesce(deleted_at, ?) WHERE message_id = ? AND guild_id = ?",
        "UPDATE community_revisions SET content = '' WHERE message_id = ? AND guild_id = ?",
    )

    def rows(self) -> Prepared:
        stamp = iso_utc(self.at)
        return [(stamp, m, self.guild_id) for m in self.message_ids], [(m, self.guild_id) for m in self.message_ids]


@dataclass(slots=True)
class ReactionAdded(Event):
    """A reaction: a unicode emoji has emoji_id None, a custom one its id (its name may change)."""

    guild_id: int
    channel_id: int
    message_id: int
    user_id: int
    emoji_name: str
    emoji_id: int | None
    at: datetime

    statements = (
        "INSERT INTO community_reactions (guild_id, channel_id, message_id, user_id, emoji_key, emoji_name, "
        "emoji_id, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, user_id, emoji_key) "
        "DO UPDATE SET added_at = excluded.added_at, emoji_name = excluded.emoji_name, removed_at = NULL "
        "WHERE community_reactions.removed_at IS NOT NULL",)

    def rows(self) -> Prepared:
        name = clean_text(self.emoji_name)
        return ([(self.guild_id, self.channel_id, self.message_id, self.user_id, emoji_key(name, self.emoji_id), name,
                  self.emoji_id, iso_utc(self.at))],)


@dataclass(slots=True)
class ReactionRemoved(Event):
    guild_id: int
    message_id: int
    user_id: int
    emoji_name: str
    emoji_id: int | None
    at: datetime

    statements = (
        "UPDATE community_reactions SET removed_at = ? WHERE message_id = ? AND user_id = ? AND emoji_key = ? "
        "AND guild_id = ? AND removed_at IS NULL",)

    def rows(self) -> Prepared:
        return ([(iso_utc(self.at), self.message_id, self.user_id,
                  emoji_key(clean_text(self.emoji_name), self.emoji_id), self.guild_id)],)


@dataclass(slots=True)
class ReactionsCleared(Event):
    """Every reaction on a message removed at once."""

    guild_id: int
    message_id: int
    at: datetime

    statements = (
        "UPDATE community_reactions SET removed_at = ? WHERE message_id = ? AND guild_id = ? "
        "AND removed_at IS NULL",)

    def rows(self) -> Prepared:
        return ([(iso_utc(self.at), self.message_id, self.guild_id)],)


@dataclass(slots=True)
class EmojiCleared(Event):
    """Every reaction with one emoji removed from a message at once."""

    guild_id: int
    message_id: int
    emoji_name: str
    emoji_id: int | None
    at: datetime

    statements = (
        "UPDATE community_reactions SET removed_at = ? WHERE message_id = ? AND guild_id = ? AND emoji_key = ? "
        "AND removed_at IS NULL",)

    def rows(self) -> Prepared:
        return ([(iso_utc(self.at), self.message_id, self.guild_id,
                  emoji_key(clean_text(self.emoji_name), self.emoji_id))],)

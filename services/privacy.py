"""A member's right to be forgotten: every feature erases its own member data, and `forget_member` runs them all
in one transaction (like Red-DiscordBot's per-cog `red_delete_data_for_user`, called by one coordinator).

Each store's `erase_member(d, guild_id, user_id)` deletes its rows for that member in that guild and returns its
counts; a new feature that stores member data adds its call here.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.alerts import AlertStore
from services.community import CommunityLog
from services.sentiment import SentimentStore
from services.sql import Connection


@dataclass(frozen=True)
class ForgetCounts:
    messages: int
    revisions: int
    reactions: int  # the member's reactions and reactions on their messages
    votes: int  # on this guild's polls (closed polls keep their final counts, without ids)
    settings: int  # alert subscriptions and levels the member set: their id is cleared, the settings stay


async def forget_member(community: CommunityLog, guild_id: int, user_id: int) -> ForgetCounts:
    """Delete everything stored about the member in this guild, from every store at once. The community log's
    queued events are written first so none of them lands afterwards. The stores share one database, the one the
    community log writes to."""
    await community.flush()

    def run(d: Connection) -> ForgetCounts:
        with d.atomic():
            logged = CommunityLog.erase_member(d, guild_id, user_id)
            votes = SentimentStore.erase_member(d, guild_id, user_id)
            settings = AlertStore.erase_member(d, guild_id, user_id)
        if d.engine == "sqlite":
            # secure_delete zeroes the freed pages of the database file; the write-ahead log still holds the old
            # pages until a checkpoint, so copy it back and truncate it now.
            d.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ForgetCounts(logged.messages, logged.revisions, logged.reactions, votes, settings)

    return await community.db.run(run)

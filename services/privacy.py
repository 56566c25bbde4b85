"""A member's right to be forgotten: every feature erases its own member data, and `forget_member` runs them all
(like Red-DiscordBot's per-cog `red_delete_data_for_user`, called by one coordinator).

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
    """Delete everything stored about the member in this guild, from every store. The community log's queued
    events are written first so none of them lands afterwards. The stores share one database, the one the
    community log writes to.

    A member's log can run to many thousand rows, more than one transaction should hold the database thread for,
    so the erasure is two steps, all or nothing across a crash:

    1. one transaction erases the small stores (poll votes, alert settings) and records the community log's
       erasure (`CommunityLog.begin_erasure`). If it fails, nothing is deleted.
    2. the community log deletes the member's rows in small transactions (`CommunityLog.erase_member`), the
       record going with the last. From step 1 on, exports leave the member out; if the bot stops during step 2,
       `CommunityLog.open` finishes the erasure at the next start, before the log is used.
    """
    await community.flush()

    def begin(d: Connection) -> tuple[int, int]:
        with d.atomic():
            CommunityLog.begin_erasure(d, guild_id, user_id)
            votes = SentimentStore.erase_member(d, guild_id, user_id)
            settings = AlertStore.erase_member(d, guild_id, user_id)
        return votes, settings

    votes, settings = await community.db.run(begin)
    logged = await community.erase_member(guild_id, user_id)
    return ForgetCounts(logged.messages, logged.revisions, logged.reactions, votes, settings)

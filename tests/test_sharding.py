"""Scale-out: two bot processes, each running one of two shards with its own SQLite file, against one Discord.

Every piece of state is per guild and a guild lives on one shard, so each process answers and posts only for its
own guilds. (The two "processes" are two independent bots in this test process, each with its own settings,
resources and database, exactly as two `python bot.py run` processes with SHARD_COUNT=2 and SHARD_IDS=0 / 1.)
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import date

import discord

from app import SmallcapsBot
from tests.support.local_discord import LocalDiscord, smallcaps_bot

MODERATOR = discord.Permissions(manage_channels=True, send_messages=True, view_channel=True)
BREAKOUT_DAY = date(2025, 10, 3)  # the first daily close above 245 after the 2021 high (tests/test_alerts.py)


async def start_shard(stack: AsyncExitStack, discord_: LocalDiscord, shard_id: int, tmp_path) -> SmallcapsBot:
    return await stack.enter_async_context(smallcaps_bot(discord_, {
        "DATABASE_PATH": str(tmp_path / f"shard{shard_id}.db"), "SHARD_COUNT": "2", "SHARD_IDS": str(shard_id),
    }))


async def test_two_shard_processes_each_serve_only_their_guilds(discord_: LocalDiscord, tmp_path) -> None:
    discord_.shard_count = 2
    guilds = [discord_.add_guild("Shard zero", shard=(0, 2)), discord_.add_guild("Shard one", shard=(1, 2))]
    async with AsyncExitStack() as stack:
        bots = [await start_shard(stack, discord_, shard, tmp_path) for shard in (0, 1)]
        for shard, bot in enumerate(bots):
            assert bot.get_guild(guilds[shard].id) is not None
            assert bot.get_guild(guilds[1 - shard].id) is None

        # A command in each guild is answered, by the process that owns that guild.
        for guild in guilds:
            handle = await discord_.dispatch_interaction(discord_.slash_command(
                "iwm", "subscribe", {"events": "breakout"}, guild=guild, channel="iwm-alerts", permissions=MODERATOR))
            (callback,) = await handle.wait_for_responses(1)
            assert callback.json["type"] == 4 and "breakout" in callback.json["data"]["content"]
        for shard, bot in enumerate(bots):
            subs = await bot.resources.alerts.subscriptions(guilds[shard].id)
            assert [s.channel_id for s in subs] == [int(guilds[shard].channel("iwm-alerts")["id"])]
            assert await bot.resources.alerts.subscriptions(guilds[1 - shard].id) == []

        # Plant the other guild's subscription in shard 0's database too (say, a copied file): it must still
        # post only to the guild it serves.
        other = guilds[1]
        await bots[0].resources.alerts.subscribe(other.id, int(other.channel("iwm-alerts")["id"]), ["breakout"],
                                                 created_by=1)

        # The watcher runs in both processes: each guild gets the breakout exactly once.
        for bot in bots:
            await bot.get_cog("Alerts").run_close_check(BREAKOUT_DAY)  # type: ignore[union-attr]
        for bot in bots:  # a second round (a restart, a duplicate tick) posts nothing more
            await bot.get_cog("Alerts").run_close_check(BREAKOUT_DAY)  # type: ignore[union-attr]
        for guild in guilds:
            posts = [m for m in discord_.channel_messages(guild.channel("iwm-alerts"))
                     if m.get("embeds") and "2025-10-03 breakout" in m["embeds"][0]["footer"]["text"]]
            assert len(posts) == 1, guild.name

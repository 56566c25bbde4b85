"""Scale-out: two bot processes, each running one of two shards with its own SQLite file, against one Discord;
and moving every guild's rows to its new file when the shard count changes (`bot.py reshard`).

Every piece of state is per guild and a guild lives on one shard, so each process answers and posts only for its
own guilds. (The two "processes" are two independent bots in this test process, each with its own settings,
resources and database, exactly as two `python bot.py run` processes with SHARD_COUNT=2 and SHARD_IDS=0 / 1.)
"""

from __future__ import annotations

import sqlite3
import stat
from contextlib import AsyncExitStack, closing
from datetime import UTC, date, datetime
from pathlib import Path

import discord
import pytest

import bot
from app import SmallcapsBot, open_resources
from services.alerts import AlertStore, DetectorState, Event
from services.community import CommunityLog, MessageCreated, MessageEdited, ReactionAdded
from services.config import Settings, Zones
from services.schema import migrate
from services.schema.shards import GUILD_TABLES, Layout, ShardLayoutError, record, shard_of
from services.sentiment import SentimentStore, validate_poll
from services.storage import Database
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


# --- resharding the SQLite files ----------------------------------------------------------------------------

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
# Keys the destination file numbers anew: compared without them (an outbox row by its subscription's channel).
RENUMBERED = {"alert_subscriptions": "id", "alert_outbox": "id", "community_revisions": "id",
              "sentiment_schedules": "id"}


def guild_on(old: int, new: int) -> int:
    """A guild id on shard `old` of 2 and shard `new` of 3 (the shard is (id >> 22) % count)."""
    k = next(k for k in range(100, 106) if k % 2 == old and k % 3 == new)
    return (k << 22) + 4321


GUILDS = [guild_on(old, new) for old in (0, 1) for new in (0, 1, 2)]


async def make_state(path: Path, guilds: list[int]) -> None:
    """Every kind of guild state, through the stores: subscriptions, levels, detector state, an outbox intent,
    the community log (message, edit, reaction), a poll with votes and a forgotten voter, a weekly schedule."""
    async with Database(path) as database:
        alerts, sentiment = AlertStore(database, Zones()), SentimentStore(database)
        clog = CommunityLog(database, interval=60)
        await clog.open()
        for n, guild in enumerate(guilds):
            channel, message = guild + 1, guild + 100
            sub = await alerts.subscribe(guild, channel, "breakout", created_by=7)
            await alerts.subscribe(guild, channel + 1, "all", created_by=8)
            await alerts.set_levels(guild, "200,205-220,240-245", updated_by=7)
            await alerts.mute(guild, channel + 1, "testing")
            await alerts.save_state(guild, DetectorState.fresh(Zones()))
            await alerts.claim(sub, Event("breakout", date(2025, 10, 3), 245.8 + n, 245.0, "closed above"))
            await clog.set_logging(guild, channel, True, T0)
            clog.put(MessageCreated(guild, channel, message, 30 + n, T0, f"guild {n} says $IWM up"))
            clog.put(MessageEdited(guild, channel, message, f"guild {n} says $IWM down", T0))
            clog.put(ReactionAdded(guild, channel, message, 31, "👍", None, T0))
            await sentiment.register_poll(guild, channel, message + 1, validate_poll(), T0)
            for user in (40, 41, 42):
                await sentiment.record_vote(message + 1, user, 1, True, T0)
            await database.run(lambda d, g=guild: SentimentStore.erase_member(d, g, 42))  # a forget-me tombstone
            await database.run(lambda d, g=guild: CommunityLog.begin_erasure(d, g, 43))  # an erasure under way
            await sentiment.set_schedule(guild, channel, 0, "14:30", T0)
        await clog.close()


def guild_rows(paths: list[Path]) -> dict[Path, dict[str, list[dict]]]:
    out = {}
    for path in paths:
        with closing(sqlite3.connect(path)) as conn:
            conn.row_factory = sqlite3.Row
            out[path] = {t.name: [dict(r) for r in conn.execute(f"SELECT * FROM {t.name}")] for t in GUILD_TABLES}
    return out


def comparable(files: dict[Path, dict[str, list[dict]]]) -> dict[str, list[str]]:
    """Every row of every file, by table, without the keys a file numbers itself."""
    out: dict[str, list[str]] = {}
    for tables in files.values():
        channel_of = {s["id"]: (s["guild_id"], s["channel_id"]) for s in tables["alert_subscriptions"]}
        for table, rows in tables.items():
            for row in rows:
                row = {k: v for k, v in row.items() if k != RENUMBERED.get(table)}
                if table == "alert_outbox":
                    row["subscription_id"] = channel_of[row["subscription_id"]]
                out.setdefault(table, []).append(repr(sorted(row.items())))
    return {t: sorted(rows) for t, rows in out.items()}


def settings(path: Path, shard: int, count: int) -> Settings:
    return Settings.from_env({"DATABASE_PATH": str(path), "SHARD_COUNT": str(count), "SHARD_IDS": str(shard),
                              "MARKET_DATA_PROVIDER": "bundled"})


async def test_reshard_two_files_to_three_moves_every_guild_to_its_new_shard(tmp_path, capsys) -> None:
    old = [tmp_path / "shard0.db", tmp_path / "shard1.db"]
    for shard, path in enumerate(old):
        async with open_resources(settings(path, shard, 2), render_processes=False):  # records the layout
            pass
        await make_state(path, [g for g in GUILDS if shard_of(g, 2) == shard])
    before = guild_rows(old)
    assert all(rows for tables in before.values() for rows in tables.values())

    # SHARD_COUNT changed without moving the rows: refused, saying what to run.
    with pytest.raises(ShardLayoutError, match=r"shard0\.db holds the guilds of shard 0 of SHARD_COUNT=2, but this "
                       r"process runs shard 0 of SHARD_COUNT=3: .*`python bot\.py reshard --from-count 2 "
                       r"--to-count 3 DB\.\.\.`"):
        async with open_resources(settings(old[0], 0, 3), render_processes=False):
            pass

    new = [*old, tmp_path / "shard2.db"]
    assert bot.main(["reshard", "--from-count", "2", "--to-count", "3", *map(str, new)]) == 0
    assert capsys.readouterr().out.startswith("resharded 3 files from 2 to 3 shards: alert_subscriptions 8,")
    after = guild_rows(new)
    assert comparable(after) == comparable(before)  # nothing lost, nothing duplicated
    for shard, path in enumerate(new):
        tables = after[path]
        polls = {p["message_id"]: p["guild_id"] for p in tables["sentiment_polls"]}
        for table, rows in tables.items():
            guilds = {polls[r["message_id"]] if table in ("sentiment_votes", "sentiment_forgotten") else r["guild_id"]
                      for r in rows}
            assert guilds == {g for g in GUILDS if shard_of(g, 3) == shard}, (path.name, table)
    assert stat.S_IMODE(new[2].stat().st_mode) == 0o600

    # Three processes now start, each serving its guilds; the old layout is refused.
    for shard, path in enumerate(new):
        async with open_resources(settings(path, shard, 3), render_processes=False) as resources:
            for guild in GUILDS:
                subs = await resources.alerts.subscriptions(guild)
                assert len(subs) == (2 if shard_of(guild, 3) == shard else 0)
                if subs:
                    [entry] = await resources.alerts.outbox(guild)
                    assert entry.subscription_id == subs[0].id and entry.status == "pending"
    with pytest.raises(ShardLayoutError, match=r"--from-count 3 --to-count 2"):
        async with open_resources(settings(old[1], 1, 2), render_processes=False):
            pass


def test_reshard_refuses_files_out_of_order_and_changes_nothing(tmp_path, capsys) -> None:
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    for shard, path in enumerate(paths):
        with closing(sqlite3.connect(path)) as conn, conn:
            migrate(conn)
            record(conn, Layout(2, (shard,)))
    assert bot.main(["reshard", "--from-count", "2", "--to-count", "3", str(paths[1]), str(paths[0]),
                     str(tmp_path / "c.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.db holds the guilds of shard 1 of SHARD_COUNT=2, not shard 0" in err
    assert bot.main(["reshard", "--from-count", "2", "--to-count", "3", *map(str, paths)]) == 2
    assert "give 3 database files" in capsys.readouterr().err


def test_the_bot_refuses_another_layout_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "shard0.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        migrate(conn)
        record(conn, Layout(2, (0,)))
    monkeypatch.chdir(tmp_path)
    for name, value in {"DATABASE_PATH": str(path), "SHARD_COUNT": "3", "SHARD_IDS": "0"}.items():
        monkeypatch.setenv(name, value)
    assert bot.main(["console", "/iwm levels"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "but this process runs shard 0 of SHARD_COUNT=3" in err
    assert "python bot.py reshard --from-count 2 --to-count 3" in err

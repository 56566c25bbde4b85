"""Resharding on PostgreSQL: two shard processes of the real bot (`python bot.py run`, the real discord.py client)
against one local Discord and one PostgreSQL; state made in guilds on both shards through slash commands; then the
same database served by three processes under SHARD_COUNT=3. Every subscription, level, poll, schedule and
community-log row is served by the process that now holds its guild (its answers, its posts, the poll it closes),
logging goes on there, and each post goes out once (counted in the local Discord's recorded requests).

Time passes while the bot is down: the test moves the poll deadlines and the schedules' creation back (a week
later, as far as the bot can tell), and Yahoo (the local provider server, in Yahoo's format) now has the bar of
the last completed session, on which the guilds' custom levels see a breakout.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from services import market_calendar
from services.market import read_bundled_csv
from services.timefmt import iso_utc
from tests.support.discord_helpers import MANAGER, POLL_MODERATOR, invoke
from tests.support.local_discord import FakeGuild, LocalDiscord
from tests.support.postgres import DATABASE, schema_url
from tests.support.provider_server import ProviderServer, Reply, yahoo_chart_body

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (260, 265, 275, 280, 283)  # on the real IWM bars to 2026-10-05, that day closes above 283: a breakout
LEVELS_TEXT = "support 260 · entry 265–275 · resistance 280–283"  # what /iwm subscriptions lists
BARS = 300  # the real IWM bars served, the last of them (2026-10-05) re-dated to the last completed session
CHART = "/v8/finance/chart/IWM"


def yahoo_bars(through: date) -> pd.DataFrame:
    """The last BARS real IWM daily bars to 2026-10-05, re-dated onto the NYSE sessions ending at `through`."""
    iwm = read_bundled_csv("IWM").loc[:"2026-10-05"].iloc[-BARS:]
    sessions = market_calendar.calendar().sessions_in_range(pd.Timestamp(through - timedelta(days=BARS * 2)),
                                                            pd.Timestamp(through))[-BARS:]
    return iwm.set_axis(pd.DatetimeIndex(sessions))


class Shard:
    """One `python bot.py run` process with SHARD_COUNT/SHARD_IDS, its stderr in its own log file."""

    def __init__(self, proc: asyncio.subprocess.Process, shard_id: int, count: int, log: Path) -> None:
        self.proc, self.shard_id, self.count, self.log = proc, shard_id, count, log

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def start_shard(env: dict[str, str], shard_id: int, count: int, logs: Path) -> Shard:
    log = logs / f"shard{shard_id}of{count}.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "tests" / "support" / "bot_process.py"), cwd=logs, stdout=fd, stderr=fd,
            env={**env, "SHARD_COUNT": str(count), "SHARD_IDS": str(shard_id)})
    finally:
        os.close(fd)
    return Shard(proc, shard_id, count, log)


@asynccontextmanager
async def shard_processes(discord_: LocalDiscord, env: dict[str, str], count: int,
                          logs: Path) -> AsyncIterator[list[Shard]]:
    """`count` shard processes, started together; ready (on_ready logged) when the block starts, SIGTERM'd (and
    checked to exit cleanly) when it ends."""
    shards = [await start_shard(env, i, count, logs) for i in range(count)]
    try:
        for shard in shards:
            await discord_.wait_until(lambda s=shard: "ready as " in s.text() or s.proc.returncode is not None,
                                      timeout=90, what=f"shard {shard.shard_id} of {count} to be ready")
            assert shard.proc.returncode is None, shard.text()[-3000:]
        yield shards
        for shard in shards:
            shard.proc.send_signal(signal.SIGTERM)
        for shard in shards:
            assert await asyncio.wait_for(shard.proc.wait(), 60) == 0, shard.text()[-3000:]
    finally:
        for shard in shards:
            if shard.proc.returncode is None:
                shard.proc.kill()
                await shard.proc.wait()


def guilds_for(discord_: LocalDiscord) -> dict[tuple[int, int], FakeGuild]:
    """One guild per (shard of 2, shard of 3): every way a guild can move when two shards become three."""
    guilds = {(old, new): discord_.add_guild(f"Guild {old}->{new}", shard=(next(
        k for k in range(6) if k % 2 == old and k % 3 == new), 6)) for old, new in product((0, 1), (0, 1, 2))}
    for (old, new), guild in guilds.items():  # Discord's rule: shard = (guild_id >> 22) % shard count
        assert ((guild.id >> 22) % 2, (guild.id >> 22) % 3) == (old, new)
    return guilds


async def say(discord_: LocalDiscord, guild: FakeGuild, text: str, member: str = "alice") -> None:
    await discord_.dispatch("MESSAGE_CREATE", discord_.user_message(text, guild=guild, channel="general",
                                                                    member=member))


async def forget_me(discord_: LocalDiscord, guild: FakeGuild, member: str) -> str:
    """`/iwm forget-me`, then its Delete button: what the bot says it deleted."""
    prompt = await discord_.dispatch_interaction(discord_.slash_command("iwm", "forget-me", guild=guild,
                                                                        member=member))
    (callback,) = await prompt.wait_for_responses(1, timeout=20)
    confirm = callback.json["data"]["components"][0]["components"][0]["custom_id"]
    for _ in range(3):
        # The bot listens to the button once Discord has answered its prompt; a click that comes in before goes
        # unanswered (Discord says "This interaction failed") and the member clicks again.
        click = await discord_.dispatch_interaction(discord_.component_click(confirm, member=member))
        try:
            await click.wait_for_responses(1, timeout=5)
        except TimeoutError:
            continue
        _, done = await click.wait_for_responses(2, timeout=20)
        return done.json["content"]
    raise AssertionError(f"three clicks on {member}'s forget-me button went unanswered")


async def make_state(discord_: LocalDiscord, guild: FakeGuild, now: datetime, said: list[str]) -> dict[str, Any]:
    """Through slash commands: a subscription, custom levels, a weekly poll schedule (due a minute ago, so not
    before next week), a one-hour poll with a vote, the community log on in #general, alice's `said` and a
    message of bob's there.
    Returns the poll message."""
    answer = await invoke(discord_, "subscribe", {"channel": "iwm-alerts", "events": "breakout"}, manage=True,
                          guild=guild)
    assert answer.content.startswith("✅"), answer.content
    support, entry_low, entry_high, res_low, res_high = LEVELS
    answer = await invoke(discord_, "setlevels", {"support": support, "entry_low": entry_low, "entry_high": entry_high,
                                                  "resistance_low": res_low, "resistance_high": res_high},
                          manage=True, guild=guild)
    assert answer.content.startswith("✅ Levels set: support 260, entry 265–275, resistance 280–283."), answer.content
    due = now - timedelta(minutes=1)
    answer = await invoke(discord_, "poll-schedule", {"weekday": due.weekday(), "time": f"{due:%H:%M}"},
                          guild=guild, channel="general", permissions=POLL_MODERATOR)
    assert answer.content.startswith("✅ A sentiment poll will open in"), answer.content
    handle = await discord_.dispatch_interaction(discord_.slash_command(
        "iwm", "poll", {"hours": 1}, guild=guild, channel="general", permissions=POLL_MODERATOR))
    callback = (await handle.wait_for_responses(1, timeout=20))[0]
    assert callback.status == 200, callback
    poll = discord_.find_message(callback.response["interaction"]["response_message_id"])
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(poll, 1, member="alice"))
    answer = await invoke(discord_, "log", {"state": "on", "channel": "general"}, guild=guild, permissions=MANAGER)
    assert answer.content.startswith("✅ The community log now records"), answer.content
    for text in said:
        await say(discord_, guild, text)
    await say(discord_, guild, f"bob was in {guild.name}", member="bob")
    return poll


async def exported(discord_: LocalDiscord, guild: FakeGuild) -> list[str]:
    """The text of every message `/iwm export` gives a moderator for the last week."""
    answer = await invoke(discord_, "export", {"days": 7}, guild=guild, permissions=MANAGER)
    (file,) = answer.files
    return [row["content"] for row in csv.DictReader(io.StringIO(file.data.decode("utf-8")))]


async def listed(discord_: LocalDiscord, guild: FakeGuild) -> dict[str, Any]:
    answer = await invoke(discord_, "subscriptions", guild=guild)
    (embed,) = answer.embeds
    return embed


async def watched_session() -> date:
    """The session the alert watcher checks after a close (the last completed one, 10 minutes on), the same for
    the next two minutes: if it is about to change, wait until it has, so every process sees the same one."""
    def watched(at: datetime) -> date:
        return market_calendar.last_completed_session(at - timedelta(minutes=10))

    now = datetime.now(UTC)
    if watched(now) != watched(now + timedelta(minutes=2)):  # a few minutes a day
        await asyncio.sleep(120)
    return watched(datetime.now(UTC))


def posts(discord_: LocalDiscord, channel: dict[str, Any], since: int) -> list[dict[str, Any]]:
    """The bodies of the messages the bot posted to a channel (not interaction answers) after request `since`."""
    return [r.json for r in discord_.requests[since:]
            if r.method == "POST" and r.path == f"/channels/{channel['id']}/messages" and r.status == 200]


async def test_two_shard_processes_become_three_on_one_postgres(
    discord_: LocalDiscord, postgres: str, server: ProviderServer, tmp_path: Path
) -> None:
    through = await watched_session()
    now = datetime.now(UTC)
    bars = yahoo_bars(through)
    server.script(CHART, Reply(body=yahoo_chart_body(bars.iloc[:-1], "IWM")))  # Yahoo lacks `through` for now
    guilds = guilds_for(discord_)
    with schema_url(postgres) as url:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DISCORD_TOKEN": discord_.token, "DATABASE_URL": url,
            "DEV_GUILD_ID": "", "MESSAGE_CONTENT_INTENT": "1", "LOG_LEVEL": "INFO",
            "MARKET_DATA_PROVIDER": "yahoo", "YAHOO_BASE_URL": server.url, "CACHE_TTL_SECONDS": "0",
            "FRED_BASE_URL": server.url, "IWM_HOLDINGS_URL": server.url + "/holdings.csv",
            "RENDER_COOLDOWN_SECONDS": "0",
            "LOCAL_DISCORD_API": discord_.api_url, "LOCAL_DISCORD_GATEWAY": discord_.gateway_url,
        }
        polls: dict[tuple[int, int], dict[str, Any]] = {}
        # a different number of messages in each guild, each naming its guild
        said = {key: [f"$IWM {guild.name} message {i}" for i in range(1 + n % 3)]
                for n, (key, guild) in enumerate(guilds.items())}
        async with shard_processes(discord_, env, 2, tmp_path) as two:
            await discord_.wait_until(lambda: discord_.commands.get(None), 30, "the global command sync")
            for key, guild in guilds.items():
                polls[key] = await make_state(discord_, guild, now, said[key])
            for guild in guilds.values():  # answered by the process of shard key[0] of 2, from PostgreSQL
                embed = await listed(discord_, guild)
                assert f"<#{guild.channel('iwm-alerts')['id']}>: breakout · active" in embed["description"]
        assert all(s.proc.returncode == 0 for s in two)
        posted_before = len(discord_.requests)
        # Nothing was due while two processes ran: no alert (Yahoo had no bar for `through`), no poll result.
        assert not any(posts(discord_, guild.channel(name), 0) for guild in guilds.values()
                       for name in ("general", "iwm-alerts"))

        # While the bot is down, the polls end and a week goes by; Yahoo gets the bar of `through`.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE sentiment_polls SET ends_at = %s", [iso_utc(now - timedelta(minutes=5))])
            conn.execute("UPDATE sentiment_schedules SET created_at = %s", [iso_utc(now - timedelta(days=7))])
        server.script(CHART, Reply(body=yahoo_chart_body(bars, "IWM")))

        async with shard_processes(discord_, env, 3, tmp_path) as three:
            async def served(key: tuple[int, int], guild: FakeGuild) -> None:
                """What shard key[0] of 2 made, served by the process of shard key[1] of 3 (its /iwm status says
                so); logging goes on there, nothing logged was lost, and forget-me reaches the old rows."""
                (embed,) = (await invoke(discord_, "status", guild=guild)).embeds
                process = next(f["value"] for f in embed["fields"] if f["name"] == "Process")
                assert process.startswith(f"shard {key[1]} of 3\npid {three[key[1]].proc.pid} on "), process
                assert process.endswith(f"\ndatabase PostgreSQL local socket/{DATABASE}"), process
                embed = await listed(discord_, guild)
                assert f"<#{guild.channel('iwm-alerts')['id']}>: breakout · active" in embed["description"]
                assert embed["fields"][0]["value"] == LEVELS_TEXT
                await say(discord_, guild, f"$IWM {guild.name} after resharding")
                after = f"$IWM {guild.name} after resharding"
                assert await exported(discord_, guild) == [*said[key], f"bob was in {guild.name}", after]
                # forget-me reaches what bob wrote under the old shard layout
                assert (await forget_me(discord_, guild, "bob")).startswith("✅ Deleted 1 message, 0 earlier versions")
                assert await exported(discord_, guild) == [*said[key], after]
                (embed,) = (await invoke(discord_, "community", {"days": 7}, guild=guild)).embeds
                assert f"**{len(said[key]) + 1}** messages from **1** members" in json.dumps(embed, ensure_ascii=False)

            await asyncio.gather(*(served(key, guild) for key, guild in guilds.items()))

            def settled() -> bool:
                return all(len(posts(discord_, g.channel("iwm-alerts"), posted_before)) >= 1
                           and len(posts(discord_, g.channel("general"), posted_before)) >= 2 for g in guilds.values())

            await discord_.wait_until(settled, 60, "a breakout, a poll result and a weekly poll in every guild")
            await asyncio.sleep(1)  # a duplicate from a slower process would land now
            logs = [shard.text() for shard in three]

        poll_of = {key: poll["id"] for key, poll in polls.items()}
        for key, guild in guilds.items():
            (alert,) = posts(discord_, guild.channel("iwm-alerts"), posted_before)  # once per channel
            assert alert["embeds"][0]["footer"]["text"] == f"smallcaps alert · {through} breakout"
            general = posts(discord_, guild.channel("general"), posted_before)
            results = [p for p in general if str((p.get("message_reference") or {}).get("message_id")) == poll_of[key]]
            weekly = [p for p in general if p.get("poll")]
            assert len(results) == 1 and len(weekly) == 1 and len(general) == 2, general
            # the poll was closed by the process that holds the guild now, and by no other
            closers = [i for i, text in enumerate(logs) if f"poll {poll_of[key]} closed" in text]
            assert closers == [key[1]], (key, closers)
        # and nothing else was posted anywhere: a breakout, a poll result and a weekly poll per guild
        assert len([r for r in discord_.requests[posted_before:] if r.matches("POST", "/channels/{c}/messages")
                    and r.status == 200]) == 3 * len(guilds)

"""Sentiment polls through the real bot and the local Discord: posting, votes from gateway events, closing against
Discord's final voter lists (exactly one result post, across restarts), schedules, refusals, the console."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import discord
import pytest

from app import open_resources
from console import answer, run_console
from services.config import Settings
from services.sentiment import BEARISH, BULLISH, MIN_VOTES, NEUTRAL, PollSpec, SentimentStore, Tally
from services.storage import Database
from services.timefmt import iso_utc
from tests.support.aaii import AAII_LAST, AAII_MEANS, AAII_SPREAD
from tests.support.discord_helpers import POLL_MODERATOR, command, ephemeral_error, post_poll
from tests.support.local_discord import LocalDiscord, user_payload
from tests.test_process import bot_process, terminate

VOTERS = "/channels/{c}/polls/{m}/answers/{a}"


def voters(discord_: LocalDiscord, count: int) -> list[dict[str, Any]]:
    """Users who voted without the bot ever seeing an event (they need not be cached members)."""
    return [user_payload(discord_.snowflake(), f"voter{i}") for i in range(count)]


def results_in(discord_: LocalDiscord, channel_id: int | str) -> list[dict[str, Any]]:
    return [m for m in discord_.channel_messages(channel_id)
            if any(e.get("title", "").startswith("📊 Poll closed") for e in m["embeds"])]


def embed_text(embed: dict[str, Any]) -> str:
    return json.dumps(embed, ensure_ascii=False)


async def count_rows(bot: Any, table: str) -> int:
    return await bot.resources.database.run(lambda d: d.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_poll_is_posted_and_registered(running_bot: Any) -> None:
    bot, discord_ = await running_bot()
    message = await post_poll(discord_, question="Where does IWM close the year?", hours=24)

    (callback,) = discord_.requests_to("POST", "/interactions/{i}/{t}/callback")
    poll = callback.json["data"]["poll"]
    assert callback.json["type"] == 4 and not callback.json["data"].get("flags")  # public
    assert poll["question"] == {"text": "Where does IWM close the year?"}
    assert poll["duration"] == 24 and poll["allow_multiselect"] is False
    assert [(a["poll_media"]["text"], a["poll_media"]["emoji"]["name"]) for a in poll["answers"]] == [
        ("Bullish", "🐂"), ("Neutral", "😐"), ("Bearish", "🐻")]
    assert [a["answer_id"] for a in message["poll"]["answers"]] == [BULLISH, NEUTRAL, BEARISH]

    stored = await bot.resources.sentiment.get_poll(int(message["id"]))
    assert stored is not None and stored.status == "open"
    assert (stored.guild_id, stored.channel_id) == (discord_.guild.id, int(message["channel_id"]))
    assert stored.question == "Where does IWM close the year?"
    assert stored.ends_at == datetime.fromisoformat(message["poll"]["expiry"])  # Discord's deadline
    assert abs(stored.ends_at - stored.created_at - timedelta(hours=24)) < timedelta(seconds=5)


async def test_votes_from_gateway_events(running_bot: Any) -> None:
    bot, discord_ = await running_bot()
    message = await post_poll(discord_)
    mid, store = int(message["id"]), bot.resources.sentiment

    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(message, BULLISH, member="alice"))
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(message, BEARISH, member="bob"))
    await discord_.wait_until(lambda: _tally_is(store, mid, Tally(1, 0, 1)))
    # bob changes his mind: Discord sends the remove, then the add
    await discord_.dispatch("MESSAGE_POLL_VOTE_REMOVE", discord_.poll_vote(message, BEARISH, member="bob"))
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(message, NEUTRAL, member="bob"))
    await discord_.wait_until(lambda: _tally_is(store, mid, Tally(1, 1, 0)))
    # a replayed event and a vote on a message that is not a registered poll change nothing
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(message, BULLISH, member="alice"))
    other = discord_.user_message("not a poll")
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(other, BULLISH, member="alice"))
    await discord_.dispatch("MESSAGE_POLL_VOTE_REMOVE", discord_.poll_vote(message, NEUTRAL, member="bob"))
    await discord_.wait_until(lambda: _tally_is(store, mid, Tally(1, 0, 0)))
    assert await count_rows(bot, "sentiment_polls") == 1


async def _tally_is(store: Any, message_id: int, expected: Tally) -> bool:
    return await store.tally(message_id) == expected


async def test_close_reconciles_missed_votes_and_posts_once_across_restarts(running_bot: Any) -> None:
    bot, discord_ = await running_bot()
    message = await post_poll(discord_, hours=1)
    mid, cid = int(message["id"]), int(message["channel_id"])
    alice, bob = discord_.guild.member("alice"), discord_.guild.member("bob")
    # seen by the bot: alice bullish, bob neutral
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(message, BULLISH, member="alice"))
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(message, NEUTRAL, member="bob"))
    await discord_.wait_until(lambda: _tally_is(bot.resources.sentiment, mid, Tally(1, 1, 0)))
    # what Discord ends up with while the bot missed the events: bob moved to bearish, 11 more voted
    discord_.set_poll_voters(message, BULLISH, [alice, *voters(discord_, 7)])
    discord_.set_poll_voters(message, NEUTRAL, voters(discord_, 2))
    discord_.set_poll_voters(message, BEARISH, [bob, *voters(discord_, 2)])

    cog = bot.get_cog("Sentiment")
    after_end = datetime.now(UTC) + timedelta(hours=1, minutes=1)
    assert await cog.close_polls(after_end) == 1
    assert await cog.close_polls(after_end) == 0  # run twice: nothing more
    assert await asyncio.gather(cog.close_polls(after_end), cog.close_polls(after_end)) == [0, 0]

    assert await bot.resources.sentiment.tally(mid) == Tally(8, 2, 3)
    assert {r.path.rsplit("/", 1)[1] for r in discord_.requests_to("GET", VOTERS)} == {"1", "2", "3"}
    (result,) = results_in(discord_, cid)
    assert int(result["message_reference"]["message_id"]) == mid  # a reply to the poll
    (embed,) = result["embeds"]
    assert "61.5%" in embed["description"] and "(8)" in embed["description"]  # 8 of 13 bullish
    assert f"spread **{(8 - 3) / 13 * 100:+.1f}**" in embed["description"]
    assert f"AAII long-run average {AAII_SPREAD:+.1f}" in embed["description"]
    # the poll's week is after the bundled survey: AAII's latest week, dated, with the source in the footer
    (week,) = embed["fields"]
    assert week["name"].startswith(f"AAII survey · latest week, reported {AAII_LAST[0]}")
    assert f"spread {(float(AAII_LAST[1]) - float(AAII_LAST[3])) * 100:+.1f}" in week["value"]
    assert "AAII Investor Sentiment Survey" in embed["footer"]["text"] and "2026-08-20" in embed["footer"]["text"]
    assert embed["image"]["url"] == "attachment://iwm-sentiment.png"
    assert result["attachments"][0]["filename"] == "iwm-sentiment.png" and result["attachments"][0]["width"] > 0
    poll = await bot.resources.sentiment.get_poll(mid)
    assert poll.status == "closed" and poll.result_message_id == int(result["id"])

    # restart on the same database: the start-up close step and another run post nothing new
    bot2, _ = await running_bot()
    cog2 = bot2.get_cog("Sentiment")
    await discord_.wait_until(lambda: cog2.last_watch is not None, what="the start-up close step")
    assert await cog2.close_polls(after_end) == 0
    assert len(results_in(discord_, cid)) == 1


async def test_bot_started_after_the_deadline_posts_the_result_and_the_minimum_rule(running_bot: Any) -> None:
    bot, discord_ = await running_bot()
    message = await post_poll(discord_, hours=1)
    mid, cid = int(message["id"]), int(message["channel_id"])
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(message, BULLISH, member="alice"))
    await discord_.wait_until(lambda: _tally_is(bot.resources.sentiment, mid, Tally(1, 0, 0)))
    await bot.close()  # offline; its database stays open until the restart below
    # while the bot is down, bob votes and the poll ends
    discord_.set_poll_voters(message, BEARISH, [discord_.guild.member("bob")])
    past = iso_utc(datetime.now(UTC) - timedelta(minutes=5))
    await bot.resources.database.run(
        lambda d: d.execute("UPDATE sentiment_polls SET ends_at = ? WHERE message_id = ?", [past, mid]))

    bot2, _ = await running_bot()
    (result,) = await discord_.wait_until(lambda: results_in(discord_, cid), what="the start-up close step")
    description = result["embeds"][0]["description"]
    assert f"Not enough votes for percentages: 2, at least {MIN_VOTES} needed" in description
    assert "%" not in description
    assert await bot2.resources.sentiment.tally(mid) == Tally(1, 0, 1)

    handle = await command(discord_, "sentiment", responses=2)
    assert handle.ack_seconds is not None and handle.ack_seconds < 3
    embed = handle.responses()[1].json["embeds"][0]
    assert f"not enough votes (2; at least {MIN_VOTES} needed)" in embed["description"]


async def test_sentiment_report_is_per_guild(running_bot: Any, discord_: LocalDiscord) -> None:
    other = discord_.add_guild("Other HQ")
    bot, _ = await running_bot(DEV_GUILD_ID="")  # global commands: usable in both guilds
    ours = await post_poll(discord_, hours=1)
    discord_.set_poll_voters(ours, BULLISH, voters(discord_, 6))
    discord_.set_poll_voters(ours, NEUTRAL, voters(discord_, 2))
    discord_.set_poll_voters(ours, BEARISH, voters(discord_, 4))
    assert await bot.get_cog("Sentiment").close_polls(datetime.now(UTC) + timedelta(hours=2)) == 1
    theirs = await post_poll(discord_, guild=other)
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(theirs, BEARISH, member="alice"))
    await discord_.wait_until(lambda: _tally_is(bot.resources.sentiment, int(theirs["id"]), Tally(0, 0, 1)))

    reports = {}
    for guild in (discord_.guild, other):
        handle = await command(discord_, "sentiment", {"weeks": 4}, guild=guild, responses=2)
        callback, followup = handle.responses()
        assert callback.json["type"] == 5 and handle.ack_seconds is not None and handle.ack_seconds < 3
        assert followup.files[0].filename == "iwm-sentiment.png" and followup.files[0].data[:4] == b"\x89PNG"
        reports[guild.name] = embed_text(followup.json["embeds"][0])
    assert "bullish 50.0%, neutral 16.7%, bearish 33.3%" in reports["Smallcaps HQ"]
    assert "Open poll" not in reports["Smallcaps HQ"]
    assert "no closed poll yet" in reports["Other HQ"] and "1 vote so far" in reports["Other HQ"]
    for text in reports.values():  # AAII's latest week and long-run averages, each dated
        assert f"AAII latest week · reported {AAII_LAST[0]}" in text
        assert (f"AAII long-run averages · 1987-07-24..{AAII_LAST[0]}" in text
                and f"bullish {AAII_MEANS['bullish']:.1f}%" in text)
    assert "AAII's survey ends 2026-08-20: no AAII week beside 1 poll" in reports["Smallcaps HQ"]


async def test_close_step_survives_403_and_404(running_bot: Any, caplog: pytest.LogCaptureFixture) -> None:
    bot, discord_ = await running_bot()
    forbidden = await post_poll(discord_, hours=1)
    deleted = await post_poll(discord_, hours=1)
    discord_.messages[int(deleted["channel_id"])].pop(int(deleted["id"]))  # a moderator deleted the poll
    discord_.fail_next("GET", "/channels/{c}/messages/{m}", 403)  # the oldest deadline is tried first
    cog, store = bot.get_cog("Sentiment"), bot.resources.sentiment
    after_end = datetime.now(UTC) + timedelta(hours=2)

    assert await cog.close_polls(after_end) == 0  # neither raises
    assert "no access to poll" in caplog.text and "is gone" in caplog.text
    gone = await store.get_poll(int(deleted["id"]))
    assert gone.status == "closed" and gone.result_message_id == 0 and gone.final == Tally()
    kept = await store.get_poll(int(forbidden["id"]))
    assert kept.status == "open" and kept.result_message_id is None
    fetches = len(discord_.requests_to("GET", "/channels/{c}/messages/{m}"))
    assert await cog.close_polls(after_end) == 0  # the 403 poll keeps its claim for a while: no retry storm
    assert len(discord_.requests_to("GET", "/channels/{c}/messages/{m}")) == fetches
    assert await cog.close_polls(after_end + timedelta(minutes=20)) == 1  # the claim went stale: retried
    assert len(results_in(discord_, forbidden["channel_id"])) == 1


@pytest.mark.parametrize("options", [{"hours": 0}, {"hours": 1000}, {"question": "   "}, {"question": ""}])
async def test_bad_poll_input_is_refused_before_anything_is_posted(running_bot: Any, options: dict) -> None:
    bot, discord_ = await running_bot()
    handle = await command(discord_, "poll", options, permissions=POLL_MODERATOR)
    assert ephemeral_error(handle).startswith("⚠️")
    assert not any("poll" in m for m in discord_.channel_messages(handle.payload["channel_id"]))
    assert await count_rows(bot, "sentiment_polls") == 0


async def test_schedule_validation_permissions_and_weekly_post(running_bot: Any) -> None:
    bot, discord_ = await running_bot()
    store, cog, guild = bot.resources.sentiment, bot.get_cog("Sentiment"), discord_.guild
    for bad in ("25:00", "noon", "14:00:30"):
        handle = await command(discord_, "poll-schedule", {"weekday": 0, "time": bad}, permissions=POLL_MODERATOR)
        assert "HH:MM" in ephemeral_error(handle)
    handle = await command(discord_, "poll-schedule", {"weekday": 0, "time": "14:00", "hours": 0},
                           permissions=POLL_MODERATOR)
    assert "hours" in ephemeral_error(handle)
    # members without Manage Messages are refused every state-changing command
    for name, options in [("poll", {}), ("poll-schedule", {"weekday": 0, "time": "14:00"}), ("poll-unschedule", {})]:
        handle = await command(discord_, name, options)
        assert ephemeral_error(handle) == "⛔ You need the Manage Messages permission to use this command."
    assert await store.schedules(guild.id) == [] and await count_rows(bot, "sentiment_polls") == 0

    at = (datetime.now(UTC) + timedelta(hours=2)).replace(second=0, microsecond=0)
    handle = await command(discord_, "poll-schedule", {"weekday": at.weekday(), "time": f"{at:%H:%M}",
                                                       "question": "Weekly IWM check", "hours": 3},
                           permissions=POLL_MODERATOR)
    confirmation = ephemeral_error(handle)
    assert confirmation.startswith("✅") and f"at {at:%H:%M} UTC" in confirmation
    (schedule,) = await store.schedules(guild.id)
    assert (schedule.channel_id, schedule.weekday, schedule.hours) == (int(handle.payload["channel_id"]),
                                                                       at.weekday(), 3)

    assert await cog.open_scheduled_polls(at - timedelta(minutes=1)) == 0  # not yet
    posts = len(discord_.requests_to("POST", "/channels/{c}/messages"))
    assert await cog.open_scheduled_polls(at + timedelta(minutes=1)) == 1
    assert await cog.open_scheduled_polls(at + timedelta(minutes=2)) == 0  # once a week
    post = discord_.requests_to("POST", "/channels/{c}/messages")[posts]
    assert post.json["poll"]["question"] == {"text": "Weekly IWM check"} and post.json["poll"]["duration"] == 3
    assert len(post.json["poll"]["answers"]) == 3
    registered = await store.get_poll(int(post.response["id"]))
    assert registered is not None and registered.question == "Weekly IWM check"

    # next week the channel refuses the post: logged, nothing raised, the week skipped
    discord_.fail_next("POST", "/channels/{c}/messages", 403)
    assert await cog.open_scheduled_polls(at + timedelta(days=7, minutes=1)) == 0
    assert await cog.open_scheduled_polls(at + timedelta(days=7, minutes=2)) == 0

    handle = await command(discord_, "poll-unschedule", permissions=POLL_MODERATOR)
    assert ephemeral_error(handle).startswith("✅ No more weekly polls")
    assert await store.schedules(guild.id) == []


async def test_schedule_rights_are_checked_in_the_channel_acted_on(running_bot: Any, discord_: LocalDiscord) -> None:
    """bob holds Manage Messages only in #general: he cannot remove #iwm-alerts' weekly poll from there. A
    schedule in a channel where the bot may not post polls is refused with what the bot lacks."""
    guild = discord_.guild
    guild.overwrite("general", guild.member("bob"), allow=discord.Permissions(manage_messages=True).value)
    guild.overwrite("iwm-alerts", guild.role("smallcaps"), deny=discord.Permissions(send_polls=True).value)
    bot, _ = await running_bot()
    store = bot.resources.sentiment
    alerts_id = int(guild.channel("iwm-alerts")["id"])
    await store.set_schedule(guild.id, alerts_id, 0, "14:00", datetime.now(UTC))
    before = await store.schedules(guild.id)
    handle = await command(discord_, "poll-unschedule", {"channel": "iwm-alerts"}, member="bob")
    assert ephemeral_error(handle) == (f"⛔ You need the Manage Messages permission in <#{alerts_id}> to use this "
                                       "command on it.")
    handle = await command(discord_, "poll-schedule", {"weekday": 1, "time": "15:00"}, channel="iwm-alerts",
                           permissions=POLL_MODERATOR)
    assert ephemeral_error(handle).startswith(f"⛔ I need the Send Polls permission in <#{alerts_id}>")
    assert await store.schedules(guild.id) == before
    handle = await command(discord_, "poll-unschedule", {}, member="bob")  # #general: his right holds there
    assert ephemeral_error(handle) == f"<#{guild.channel('general')['id']}> had no weekly poll."


async def test_the_daily_retention_run_purges_old_poll_votes(running_bot: Any) -> None:
    """The community cog's retention loop (first run at start-up) also deletes the votes of polls closed more
    than LOG_RETENTION_DAYS ago; the poll keeps its tally."""
    bot, discord_ = await running_bot()  # makes the database
    guild = discord_.guild
    await running_bot.stop()  # the old poll is written with no bot running: its poll closer would race the test
    opened = datetime.now(UTC) - timedelta(days=40)
    async with Database(running_bot.tmp_path / "smallcaps.db") as database:
        store = SentimentStore(database)
        await store.register_poll(guild.id, int(guild.channel()["id"]), 42, PollSpec("Old poll", 24), opened)
        await store.record_vote(42, 7, BULLISH, True, opened + timedelta(minutes=1))
        await store.reconcile(42, {BULLISH: {7}}, opened + timedelta(days=1))
        await store.mark_result_posted(42, 43)
    bot, _ = await running_bot(LOG_RETENTION_DAYS="30")  # a restart: retention runs once the bot is ready

    async def purged() -> bool:
        return await count_rows(bot, "sentiment_votes") == 0

    await discord_.wait_until(purged, 10.0, "the votes' retention")
    assert (await bot.resources.sentiment.get_poll(42)).final == Tally(1, 0, 0)


async def test_console_poll_prints_the_poll_payload(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(database_path=tmp_path / "console.db")
    async with open_resources(settings) as resources:
        status, messages = await answer(resources, '/iwm poll question:"Up or down?" hours:48')
        assert status == 0
        (message,) = messages
        poll = message.payload(tmp_path)["poll"]
        assert poll["question"] == {"text": "Up or down?"} and poll["duration"] == 48
        assert [a["poll_media"]["text"] for a in poll["answers"]] == ["Bullish", "Neutral", "Bearish"]
        status, (refusal,) = await answer(resources, "/iwm poll hours:1000")
        assert status == 2 and refusal.ephemeral and refusal.content.startswith("⚠️")

    assert await run_console(settings, "/iwm poll", as_json=True, out_dir=str(tmp_path)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["poll"]["question"]["text"] == "Where will IWM be in six months?"
    assert [a["poll_media"]["emoji"]["name"] for a in printed["poll"]["answers"]] == ["🐂", "😐", "🐻"]


async def test_a_crash_right_after_posting_a_result_does_not_repost_it(discord_: LocalDiscord, tmp_path: Path) -> None:
    """The bot as a process: it posts a poll's result and is killed (-9) before it hears Discord's answer, so the
    result is in the channel but not in the database. Members then write 150 messages (the result is more than
    a page back). The restarted bot gives the dead process's claim back, finds the result in the channel and
    records it: one result, never two."""
    db = tmp_path / "bot.db"
    async with bot_process(discord_, db) as proc:
        message = await post_poll(discord_, hours=1)
        mid, cid = int(message["id"]), message["channel_id"]
        await discord_.wait_until(lambda: poll_row(db, mid) is not None, what="the poll's row")
        await terminate(proc)
    ended = iso_utc(datetime.now(UTC) - timedelta(minutes=1))
    with closing(sqlite3.connect(db)) as conn, conn:  # the hour went by while the bot was down
        conn.execute("UPDATE sentiment_polls SET ends_at = ? WHERE message_id = ?", [ended, mid])
    discord_.set_poll_voters(message, BULLISH, voters(discord_, 6))
    discord_.set_poll_voters(message, BEARISH, voters(discord_, 5))

    hold = discord_.hold_next("POST", f"/channels/{cid}/messages")
    try:
        async with bot_process(discord_, db) as proc:
            await asyncio.wait_for(hold.reached.wait(), 60)  # the result is stored; its answer is held
            proc.kill()
            await asyncio.wait_for(proc.wait(), 30)
    finally:
        hold.release.set()
    (result,) = results_in(discord_, cid)
    assert hold.request is not None and hold.request.response["id"] == result["id"]
    assert poll_row(db, mid) == ("closed", None)  # the bot died before recording it
    for i in range(150):
        discord_.user_message(f"chatter {i}", channel=int(cid))

    posts = len(discord_.requests_to("POST", f"/channels/{cid}/messages"))
    async with bot_process(discord_, db) as proc:
        await discord_.wait_until(lambda: poll_row(db, mid) == ("closed", int(result["id"])), timeout=30,
                                  what="the result recorded")
        await terminate(proc)
    assert len(discord_.requests_to("POST", f"/channels/{cid}/messages")) == posts  # nothing posted again
    assert [r["id"] for r in results_in(discord_, cid)] == [result["id"]]


def poll_row(db: Path, message_id: int) -> tuple[str, int | None] | None:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            row = conn.execute("SELECT status, result_message_id FROM sentiment_polls WHERE message_id = ?",
                               [message_id]).fetchone()
        except sqlite3.OperationalError:  # not created yet
            return None
    return None if row is None else (row[0], row[1])

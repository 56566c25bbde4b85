"""The community log through the real bot and the local Discord: opt-in, gateway events into SQLite, forget-me
through its buttons, the CSV export, `/iwm community`, refusals, guild isolation, and slow work on a large log
acknowledged first."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import discord
import pytest

from services.privacy import forget_member
from services.sentiment import BEARISH, BULLISH
from tests.support.community_log import fill_log
from tests.support.discord_helpers import MANAGER, command, ephemeral_error, log_on, messages, post_poll, query, send
from tests.support.local_discord import EPHEMERAL, INTERACTION_ACK_SECONDS, LocalDiscord, now_iso


async def reactions(bot: Any) -> list[dict[str, Any]]:
    return await query(bot, "SELECT * FROM community_reactions ORDER BY added_at")


async def logged(discord_: LocalDiscord, bot: Any, message: dict[str, Any]) -> None:
    """Wait until the message is in the log. An edit dispatched sooner could reach discord.py while its
    on_message listener is still queued: discord.py updates the cached message in place, so the listener would
    log the edited text as the original and no revision would be kept."""

    async def present() -> bool:
        return int(message["id"]) in await messages(bot)

    await discord_.wait_until(present)


async def react(discord_: LocalDiscord, message: dict[str, Any], emoji: str, member: str) -> None:
    await discord_.dispatch("MESSAGE_REACTION_ADD", discord_.reaction_add(message, emoji, member=member))


def thread_in(discord_: LocalDiscord, parent: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(discord_.snowflake()), "type": 11, "guild_id": parent["guild_id"], "parent_id": parent["id"],
        "owner_id": discord_.guild.member("alice")["user"]["id"], "name": "IWM earnings week",
        "last_message_id": None, "rate_limit_per_user": 0, "message_count": 0, "member_count": 1, "flags": 0,
        "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": now_iso(),
                            "locked": False, "create_timestamp": now_iso()},
        "newly_created": True,
    }


async def test_gateway_events_land_in_the_log(running_bot: Any, engine_env: dict[str, str]) -> None:
    bot, discord_ = await running_bot(MESSAGE_CONTENT_INTENT="1", **engine_env)
    assert bot.resources.database.engine == ("postgresql" if engine_env else "sqlite")
    guild = discord_.guild
    general = guild.channel("general")
    reply_text = await log_on(discord_)
    assert reply_text.startswith("✅") and f"<#{general['id']}>" in reply_text and "Message Content" not in reply_text
    thread = thread_in(discord_, general)
    await discord_.dispatch("THREAD_CREATE", thread)

    first = await send(discord_, "Buying $IWM calls, breakout soon 🚀", member="alice")
    reply = await send(discord_, "$IWM puts, this will dump", member="bob", type=19,
                       message_reference={"message_id": first["id"], "channel_id": first["channel_id"],
                                          "guild_id": str(guild.id)})
    in_thread = await send(discord_, "thread talk about $TNA", member="bob", channel_id=thread["id"])
    elsewhere = await send(discord_, "not logged here", channel="iwm-alerts", member="alice")
    await send(discord_, "the bot itself", member="smallcaps-test-bot")
    await logged(discord_, bot, first)
    await discord_.dispatch("MESSAGE_UPDATE", discord_.message_update(first, content="Buying $IWM and $TNA calls"))
    await react(discord_, first, "🚀", "bob")
    await react(discord_, first, "iwmbull:123456", "alice")
    await react(discord_, reply, "🐻", "alice")
    await react(discord_, elsewhere, "🚀", "bob")
    await discord_.dispatch("MESSAGE_REACTION_REMOVE", discord_.reaction_remove(first, "🚀", member="bob"))
    await discord_.dispatch("MESSAGE_REACTION_REMOVE_EMOJI", {
        "channel_id": reply["channel_id"], "guild_id": str(guild.id), "message_id": reply["id"],
        "emoji": {"id": None, "name": "🐻"}})
    doomed = await send(discord_, "oops, wrong channel", member="alice")
    bulk = [await send(discord_, f"spam {i}", member="bob") for i in range(2)]
    await discord_.dispatch("MESSAGE_DELETE", discord_.message_delete(doomed))
    await discord_.dispatch("MESSAGE_DELETE_BULK", discord_.message_delete_bulk(bulk))

    ids = {name: int(m["id"]) for name, m in [("first", first), ("reply", reply), ("thread", in_thread),
                                              ("doomed", doomed), ("bulk0", bulk[0]), ("bulk1", bulk[1])]}

    async def settled() -> dict[int, dict[str, Any]] | None:
        rows = await messages(bot)
        return rows if all(rows.get(ids[b], {}).get("deleted") for b in ("bulk0", "bulk1")) else None

    rows = await discord_.wait_until(settled)
    assert set(rows) == set(ids.values())  # not the unlogged channel, not the bot's own message
    edited = rows[ids["first"]]
    assert edited["content"] == "Buying $IWM and $TNA calls" and edited["edited_at"]
    assert json.loads(edited["cashtags"]) == ["IWM", "TNA"]
    assert edited["author_id"] == int(guild.member("alice")["user"]["id"])
    assert rows[ids["reply"]]["reply_to"] == ids["first"] and rows[ids["reply"]]["bear"] == 2  # puts, dump
    assert rows[ids["thread"]]["channel_id"] == int(general["id"])  # a thread follows its parent's opt-in
    for name in ("doomed", "bulk0", "bulk1"):
        assert rows[ids[name]]["deleted"] == 1 and rows[ids[name]]["content"] == ""
    (revision,) = await query(bot, "SELECT * FROM community_revisions")
    assert revision["message_id"] == ids["first"] and revision["content"] == "Buying $IWM calls, breakout soon 🚀"
    live = {(r["message_id"], r["emoji_key"], r["removed_at"] is None) for r in await reactions(bot)}
    assert live == {(ids["first"], "🚀", False), (ids["first"], "123456", True), (ids["reply"], "🐻", False)}

    await discord_.dispatch("MESSAGE_REACTION_REMOVE_ALL", discord_.reaction_remove_all(first))
    off = ephemeral_error(await command(discord_, "log", {"state": "off"}, permissions=MANAGER))
    assert off.startswith("✅") and "no longer logged" in off
    late = await send(discord_, "after the opt-out", member="alice")
    # deletions of logged messages still apply after the opt-out
    await discord_.dispatch("MESSAGE_DELETE", discord_.message_delete(first))

    async def first_deleted() -> bool:
        return (await messages(bot))[ids["first"]]["deleted"] == 1

    await discord_.wait_until(first_deleted)
    assert int(late["id"]) not in await messages(bot)
    assert all(r["removed_at"] is not None for r in await reactions(bot))


async def test_without_the_content_intent_and_with_a_failing_event(running_bot: Any,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    bot, discord_ = await running_bot()  # MESSAGE_CONTENT_INTENT off
    assert "Message Content intent" in await log_on(discord_)
    community = bot.resources.community
    real = community.put
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    community.put = flaky  # type: ignore[method-assign]
    lost = await send(discord_, "first, hits the failure", member="alice")
    kept = await send(discord_, "Bullish $IWM", member="bob")

    async def logged() -> dict[int, dict[str, Any]]:
        return await messages(bot)

    rows = await discord_.wait_until(logged)
    assert list(rows) == [int(kept["id"])] and int(lost["id"]) not in rows
    assert rows[int(kept["id"])]["content"] == ""  # Discord blanks the text without the intent
    assert "listener" in caplog.text and "disk on fire" in caplog.text


async def test_forget_me_through_the_buttons_removes_only_that_members_rows(running_bot: Any,
                                                                           engine_env: dict[str, str]) -> None:
    bot, discord_ = await running_bot(MESSAGE_CONTENT_INTENT="1", **engine_env)
    guild = discord_.guild
    bob_id = int(guild.member("bob")["user"]["id"])
    await log_on(discord_)
    poll = await post_poll(discord_)
    a1 = await send(discord_, "IWM rally incoming", member="alice")
    await send(discord_, "$IWM breakout", member="alice")
    b1 = await send(discord_, "selling my $IWM", member="bob")
    await logged(discord_, bot, a1)
    await discord_.dispatch("MESSAGE_UPDATE", discord_.message_update(a1, content="IWM rally incoming 🚀"))
    await react(discord_, a1, "🚀", "bob")  # bob's reaction on alice's message
    await react(discord_, b1, "🐻", "alice")  # alice's reaction on bob's message
    await react(discord_, b1, "🐂", "bob")  # bob's own
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(poll, BULLISH, member="alice"))
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(poll, BEARISH, member="bob"))

    async def settled() -> bool:
        votes = await query(bot, "SELECT * FROM sentiment_votes")
        return len(votes) == 2 and len(await reactions(bot)) == 3

    await discord_.wait_until(settled)

    prompt = await command(discord_, "forget-me", member="alice")
    callback = prompt.callback
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL
    buttons = callback.json["data"]["components"][0]["components"]
    assert [b["label"] for b in buttons] == ["Delete my data", "Cancel"]
    confirm = buttons[0]["custom_id"]

    # only the member who asked may confirm
    stranger = await discord_.dispatch_interaction(discord_.component_click(confirm, member="bob"))
    (refusal,) = await stranger.wait_for_responses(1)
    assert refusal.json["data"]["flags"] & EPHEMERAL and "Only the member who asked" in refusal.json["data"]["content"]
    assert len(await messages(bot)) == 3

    click = await discord_.dispatch_interaction(discord_.component_click(confirm, member="alice"))
    ack, done = await click.wait_for_responses(2)  # acknowledged first, the prompt edited once the work is done
    assert ack.json == {"type": 6} and done.method == "PATCH" and done.path.endswith("/messages/@original")
    assert done.status == 200 and done.json["components"] == []
    assert done.json["content"].startswith("✅ Deleted 2 messages, 1 earlier version, 2 reactions and 1 poll vote.")
    assert discord_.find_message(callback.response["interaction"]["response_message_id"])["content"] == (
        done.json["content"])
    assert list(await messages(bot)) == [int(b1["id"])]
    assert await query(bot, "SELECT * FROM community_revisions") == []
    assert [(r["user_id"], r["emoji_key"]) for r in await reactions(bot)] == [(bob_id, "🐂")]
    assert [(v["user_id"], v["answer_id"]) for v in await query(bot, "SELECT * FROM sentiment_votes")] == [
        (bob_id, BEARISH)]

    # Cancel deletes nothing; each prompt is a one-shot view with buttons of its own, not a persistent one
    second = (await command(discord_, "forget-me", member="bob")).callback.json["data"]["components"][0]["components"]
    assert [b["label"] for b in second] == ["Delete my data", "Cancel"]
    assert {b["custom_id"] for b in second}.isdisjoint(b["custom_id"] for b in buttons)
    cancel = await discord_.dispatch_interaction(discord_.component_click(second[1]["custom_id"], member="bob"))
    (cancelled,) = await cancel.wait_for_responses(1)
    assert cancelled.json["data"]["content"] == "Cancelled: nothing was deleted."
    assert list(await messages(bot)) == [int(b1["id"])]


async def test_export_and_community_are_per_guild(running_bot: Any, discord_: LocalDiscord,
                                                  engine_env: dict[str, str]) -> None:
    other = discord_.add_guild("Other HQ")
    bot, _ = await running_bot(DEV_GUILD_ID="", MESSAGE_CONTENT_INTENT="1", **engine_env)
    ours = discord_.guild
    for guild in (ours, other):
        await log_on(discord_, guild=guild)
    rally = await send(discord_, "$IWM rally, buying", member="alice")
    await send(discord_, "selling, this looks red", member="bob")
    await react(discord_, rally, "🚀", "bob")
    theirs = await send(discord_, "$TNA to the moon", member="alice", guild=other)

    async def settled() -> bool:
        return len(await messages(bot)) == 3 and len(await reactions(bot)) == 1

    await discord_.wait_until(settled)

    # refusals: no Manage Server, bad days; nothing is stored or sent
    for name, options in [("log", {"state": "off"}), ("export", {})]:
        assert ephemeral_error(await command(discord_, name, options)) == (
            "⛔ You need the Manage Guild permission to use this command.")
    assert bot.resources.community.is_logged(ours.id, int(ours.channel("general")["id"]))
    assert ephemeral_error(await command(discord_, "community", {"days": 0})).startswith("⚠️ days 0")
    assert ephemeral_error(await command(discord_, "export", {"days": 5000}, permissions=MANAGER)).startswith("⚠️")

    exports = {}
    for guild in (ours, other):
        handle = await command(discord_, "export", {"days": 7}, guild=guild, permissions=MANAGER, responses=2)
        callback, followup = handle.responses()
        assert callback.json == {"type": 5, "data": {"flags": EPHEMERAL}} and handle.ack_seconds < 3
        assert followup.json["flags"] & EPHEMERAL
        (file,) = followup.files
        assert file.filename == f"community-{guild.id}-7d.csv"
        exports[guild.name] = list(csv.DictReader(io.StringIO(file.data.decode("utf-8"))))
    assert [r["content"] for r in exports["Smallcaps HQ"]] == ["$IWM rally, buying", "selling, this looks red"]
    assert exports["Smallcaps HQ"][0]["reactions"] == "1" and exports["Smallcaps HQ"][0]["cashtags"] == "IWM"
    assert [(r["message_id"], r["content"]) for r in exports["Other HQ"]] == [(theirs["id"], "$TNA to the moon")]

    # a guild whose attachment limit the file exceeds gets an explanation instead
    payload = discord_.slash_command("iwm", "export", {"days": 7}, permissions=MANAGER)
    payload["attachment_size_limit"] = 64
    handle = await discord_.dispatch_interaction(payload)
    _, followup = await handle.wait_for_responses(2)
    assert "attachment limit" in followup.json["content"] and not followup.files

    reports = {}
    for guild in (ours, other):
        handle = await command(discord_, "community", {"days": 7}, guild=guild, responses=2)
        callback, followup = handle.responses()
        assert callback.json["type"] == 5 and handle.ack_seconds is not None and handle.ack_seconds < 3
        assert followup.files[0].filename == "iwm-community.png" and followup.files[0].data[:4] == b"\x89PNG"
        (embed,) = followup.json["embeds"]
        assert embed["image"]["url"] == "attachment://iwm-community.png"
        reports[guild.name] = json.dumps(embed, ensure_ascii=False)
    assert "**2** messages from **2** members" in reports["Smallcaps HQ"] and "$IWM 1" in reports["Smallcaps HQ"]
    assert "🚀 1" in reports["Smallcaps HQ"] and "$TNA" not in reports["Smallcaps HQ"]
    assert "**1** messages from **1** members" in reports["Other HQ"] and "$TNA 1" in reports["Other HQ"]
    assert "$IWM" not in reports["Other HQ"]


async def test_community_and_export_show_only_channels_the_member_can_read(running_bot: Any,
                                                                          discord_: LocalDiscord) -> None:
    """#iwm-alerts is private (hidden from @everyone; Moderators, bob and the bot may read it): alice's
    `/iwm community` and `/iwm export` leave it out, a moderator's include it."""
    guild = discord_.guild
    reading = discord.Permissions(view_channel=True, read_message_history=True).value
    guild.overwrite("iwm-alerts", guild.role("@everyone"), deny=discord.Permissions(view_channel=True).value)
    for target in (guild.role("Moderator"), guild.role("smallcaps"), guild.member("bob")):
        guild.overwrite("iwm-alerts", target, allow=reading)
    bot, _ = await running_bot(MESSAGE_CONTENT_INTENT="1")
    await log_on(discord_)
    assert (await command(discord_, "log", {"state": "on", "channel": "iwm-alerts"}, roles=["Moderator"])
            ).callback.json["data"]["content"].startswith("✅")
    await send(discord_, "$IWM in the open", member="alice")
    await send(discord_, "$TSLA in private", member="bob", channel="iwm-alerts")

    async def logged() -> bool:
        return len(await messages(bot)) == 2

    await discord_.wait_until(logged)

    async def report(**who: Any) -> str:
        handle = await command(discord_, "community", {"days": 7}, responses=2, **who)
        return json.dumps(handle.responses()[1].json["embeds"], ensure_ascii=False)

    async def export(**who: Any) -> list[str]:
        handle = await command(discord_, "export", {"days": 7}, responses=2, **who)
        (file,) = handle.responses()[1].files
        return [r["content"] for r in csv.DictReader(io.StringIO(file.data.decode("utf-8")))]

    alice = await report()
    assert "**1** messages from **1** members in 1 logged channel" in alice and "$TSLA" not in alice
    moderator = await report(roles=["Moderator"])
    assert "**2** messages from **2** members in 2 logged channels" in moderator and "$TSLA 1" in moderator
    assert await export(permissions=MANAGER) == ["$IWM in the open"]
    assert await export(roles=["Moderator"]) == ["$IWM in the open", "$TSLA in private"]


async def test_debug_logs_carry_no_message_text(running_bot: Any, caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG discord.py logs every gateway event it receives; a member's message, its edit and a command's
    options reach the log as ids and lengths only."""
    caplog.set_level(logging.DEBUG)
    bot, discord_ = await running_bot(MESSAGE_CONTENT_INTENT="1")
    await log_on(discord_)
    secret = "my-secret-position-in-$IWM"
    message = await send(discord_, secret, member="alice")
    await discord_.dispatch("MESSAGE_UPDATE", discord_.message_update(message, content=secret + " (edited)"))

    async def logged() -> bool:
        rows = await messages(bot)
        return bool(rows) and rows[int(message["id"])]["content"].endswith("(edited)")

    await discord_.wait_until(logged)
    gateway = [r for r in caplog.records if r.name == "discord.gateway" and "WebSocket Event" in r.getMessage()]
    assert any(message["id"] in r.getMessage() and "content_length" in r.getMessage() for r in gateway)
    leaked = [r.getMessage() for r in caplog.records if "my-secret-position" in r.getMessage()]
    assert leaked == []


async def test_slow_work_on_a_large_log_is_acknowledged_first(running_bot: Any, discord_: LocalDiscord,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 50,000-message log, `/iwm export`, `/iwm community` and the forget-me Confirm button are acknowledged
    at once and answered when the work is done. The erasure is slowed here past Discord's 3 seconds: answered
    after the work (as before), the Confirm would get 404 "Unknown interaction" with the rows already gone."""
    guild, general = discord_.guild, int(discord_.guild.channel("general")["id"])
    alice = int(guild.member("alice")["user"]["id"])
    db = tmp_path / "smallcaps.db"  # the running bot's database
    fill_log(db, guild.id, general, 50_000, authors=50, days=30)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE community_messages SET author_id = ? WHERE author_id = 1007", [alice])
        mine = conn.execute("SELECT count(*) FROM community_messages WHERE author_id = ?", [alice]).fetchone()[0]
    bot, _ = await running_bot(MESSAGE_CONTENT_INTENT="1")

    for name, options, kwargs in [("export", {"days": 30}, {"permissions": MANAGER}), ("community", {"days": 30}, {})]:
        handle = await command(discord_, name, options, responses=2, **kwargs)
        callback, followup = handle.responses()
        assert callback.json["type"] == 5 and handle.ack_seconds < 1, (name, handle.ack_seconds)
        assert followup.status == 200 and followup.files, name
    assert len(followup.files[0].data) > 1000  # the community chart

    erase, finished = forget_member, []

    async def slow_erasure(*args: Any) -> Any:
        await asyncio.sleep(INTERACTION_ACK_SECONDS + 0.5)
        counts = await erase(*args)
        finished.append(time.monotonic())
        return counts

    monkeypatch.setattr(sys.modules["cogs.community"], "forget_member", slow_erasure)  # as the bot loaded it
    prompt = await command(discord_, "forget-me", member="alice")
    confirm = prompt.callback.json["data"]["components"][0]["components"][0]["custom_id"]
    click = await discord_.dispatch_interaction(discord_.component_click(confirm, member="alice"))
    ack, done = await click.wait_for_responses(2, timeout=30)
    assert ack.json == {"type": 6} and click.ack_seconds < 1
    assert ack.received_at < finished[0] <= done.received_at and done.status == 200
    assert done.json["content"].startswith(f"✅ Deleted {mine} messages")
    assert await query(bot, "SELECT * FROM community_messages WHERE author_id = ?", [alice]) == []

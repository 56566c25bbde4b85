"""Breakout posts through the real bot and the local Discord: the alert commands, the watcher's close check on the
bundled IWM history, and the delivery guarantee of services.alerts (each event posted once per channel) under
Discord's failures: 403, 404, 429, a crash between the send and its record, and a gateway reconnect mid fan-out.

The close check runs for 2025-10-03, IWM's first close above the resistance zone top (245) after the 2021 high
(close 245.83, a `breakout`; a record close too, but 10 sessions after the last one, so no `new_high`).
Market-calendar edge cases are unit-tested in tests/test_market_calendar.py, the detector and the outbox in
tests/test_alerts.py.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import discord
import pytest

import app
from app import SmallcapsBot
from services.alerts import AlertStore, OutboxEntry, post_nonce, replay
from services.config import Zones
from services.market import read_bundled_csv
from services.swing_levels import RULE, derived_zones
from tests.support.discord_helpers import MODERATOR, PNG_MAGIC, answer_of, assert_refused, invoke, levels, stored_rows
from tests.support.discord_schema import discord_schema
from tests.support.local_discord import FakeGuild, LocalDiscord, RecordedRequest
from tests.support.provider_server import ProviderServer, Reply, yahoo_chart_body

BREAKOUT_DAY = date(2025, 10, 3)
BREAKOUT_KEY = "2025-10-03 breakout"
BREAKOUT_FOOTER = f"smallcaps alert · {BREAKOUT_KEY}"
BREAKOUT_TITLE = "IWM broke out above 245.00"
FANOUT_CHANNELS = ("alerts-a", "alerts-b", "alerts-c")


# --- helpers --------------------------------------------------------------------------------------------------

def alerts_cog(bot: SmallcapsBot) -> Any:
    cog = bot.get_cog("Alerts")
    assert cog is not None
    return cog


async def watcher_settled(bot: SmallcapsBot, discord_: LocalDiscord) -> Any:
    """Wait until the watcher has run its start-up recovery and its first check (on today's session, which the
    bundled data does not have: nothing to post). Tests then drive `run_close_check` alone, as the loop would."""
    cog = alerts_cog(bot)
    await discord_.wait_until(lambda: cog._last_close_checked is not None, 15.0, "the watcher's first check")
    return cog


def posts_to(discord_: LocalDiscord, channel: dict[str, Any] | str) -> list[RecordedRequest]:
    cid = channel["id"] if isinstance(channel, dict) else channel
    return discord_.requests_to("POST", f"/channels/{cid}/messages")


def channel_posts(discord_: LocalDiscord, channel: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages stored in a channel that the bot posted itself (not answers to commands run there)."""
    return [m for m in discord_.channel_messages(channel) if "interaction_metadata" not in m]


def bot_posts(discord_: LocalDiscord, channel: dict[str, Any]) -> list[dict[str, Any]]:
    """`channel_posts` without the members' messages."""
    return [m for m in channel_posts(discord_, channel) if m["author"]["id"] == discord_.bot_user["id"]]


async def subscribe(discord_: LocalDiscord, guild: FakeGuild, channel: str, events: str = "breakout",
                    **options: Any) -> None:
    answer = await invoke(discord_, "subscribe", {"channel": channel, "events": events, **options}, manage=True,
                          guild=guild)
    assert answer.content.startswith("✅"), answer.content


async def listed(discord_: LocalDiscord, guild: FakeGuild) -> dict[str, Any]:
    """The embed `/iwm subscriptions` answers in `guild`."""
    answer = await invoke(discord_, "subscriptions", guild=guild)
    assert answer.ephemeral
    (embed,) = answer.embeds
    return embed


async def outbox(bot: SmallcapsBot, guild: FakeGuild) -> list[OutboxEntry]:
    return await bot.resources.alerts.outbox(guild.id)


def assert_breakout_post(request: RecordedRequest, channel_id: str, role_id: str | None = None) -> None:
    """One alert message as the bot sends it: multipart with the chart, the embed with its title and footer key."""
    assert request.status == 200 and request.multipart
    assert [(f.name, f.filename) for f in request.files] == [("files[0]", "iwm-alert.png")]
    assert request.files[0].data.startswith(PNG_MAGIC) and len(request.files[0].data) > 1000
    (embed,) = request.json["embeds"]
    assert embed["title"] == BREAKOUT_TITLE
    assert embed["footer"]["text"] == BREAKOUT_FOOTER
    assert embed["image"]["url"] == "attachment://iwm-alert.png"
    assert "245.83" in embed["description"]
    assert request.json["nonce"] == post_nonce(int(channel_id), BREAKOUT_KEY)
    if role_id:
        assert request.json["content"] == f"<@&{role_id}>"
        assert [str(r) for r in request.json["allowed_mentions"]["roles"]] == [role_id]
    else:
        assert not request.json.get("content")


@contextmanager
def alerts_today(today: date) -> Iterator[None]:
    """Bots started inside this block see `today` as the date in cogs.alerts (its recovery window), and nowhere
    else. load_extension executes a fresh copy of the module, so the copy is patched right after it loads."""
    original = SmallcapsBot.load_extension

    class Today(date):
        @classmethod
        def today(cls) -> date:
            return date(today.year, today.month, today.day)

    async def load_extension(self: SmallcapsBot, name: str, *, package: str | None = None) -> None:
        await original(self, name, package=package)
        if name == "cogs.alerts":
            sys.modules[name].date = Today  # type: ignore[attr-defined]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SmallcapsBot, "load_extension", load_extension)
        yield


@pytest.fixture
def fanout_guild(discord_: LocalDiscord) -> FakeGuild:
    """A second server with three alert channels; start the bot with DEV_GUILD_ID set to it."""
    return discord_.add_guild("Fan-out", channels=FANOUT_CHANNELS)


# --- the commands --------------------------------------------------------------------------------------------

def test_the_bundled_data_has_the_breakout() -> None:
    """The premise of the close-check tests, from the detector itself."""
    events = replay(read_bundled_csv("IWM"), Zones(), BREAKOUT_DAY, BREAKOUT_DAY)
    assert [(e.kind, round(e.close, 2)) for e in events] == [("breakout", 245.83)]
    assert [e.key for e in events if e.kind == "breakout"] == [BREAKOUT_KEY]


async def test_members_without_manage_channels_are_refused(running_bot: Any) -> None:
    """subscribe and unsubscribe need Manage Channels (in the channel they act on), setlevels Manage Server: an
    ephemeral refusal, nothing stored or removed; /iwm subscriptions is open to every member."""
    bot, discord_ = await running_bot()
    guild = discord_.guild
    before = await stored_rows(bot)
    for sub, options, text in [
        ("subscribe", {"channel": "iwm-alerts"}, f"⛔ You need the Manage Channels permission in "
                                                 f"<#{guild.channel('iwm-alerts')['id']}> to use this command on it."),
        ("subscribe", {}, "⛔ You need the Manage Channels permission to use this command."),
        ("setlevels", levels(190, 200, 215, 235, 240), "⛔ You need the Manage Guild permission to use this command."),
    ]:
        answer = await invoke(discord_, sub, options)
        assert_refused(answer)
        assert answer.content == text
    assert await stored_rows(bot) == before
    assert await bot.resources.alerts.subscriptions(guild.id) == []
    assert await bot.resources.alerts.levels(guild.id) == bot.settings.zones

    await subscribe(discord_, guild, "iwm-alerts")
    refused = await invoke(discord_, "unsubscribe", {"channel": "iwm-alerts"})
    assert_refused(refused)
    assert [s.channel_id for s in await bot.resources.alerts.subscriptions(guild.id)] == [
        int(guild.channel("iwm-alerts")["id"])]
    embed = await listed(discord_, guild)  # a plain member may look
    assert embed["description"] == f"<#{guild.channel('iwm-alerts')['id']}>: breakout · active"


async def test_rights_are_checked_in_the_channel_acted_on(running_bot: Any, discord_: LocalDiscord) -> None:
    """bob holds Manage Channels and Manage Server only in #general (a member overwrite there): from #general he
    may subscribe #general but not #iwm-alerts, nor unsubscribe it, nor have a role pinged without Mention
    Everyone, nor set the server's levels (guild-wide: Manage Server from his roles). The bot cannot attach its
    chart in #blocked: a moderator is told so. Each refusal is ephemeral and changes nothing."""
    guild = discord_.guild
    guild.channels.append({**guild.channel("iwm-alerts"), "id": str(discord_.snowflake()), "name": "blocked"})
    manage = discord.Permissions(manage_channels=True, manage_guild=True).value
    guild.overwrite("general", guild.member("bob"), allow=manage)
    guild.overwrite("blocked", guild.role("smallcaps"), deny=discord.Permissions(attach_files=True).value)
    for name in ("general", "blocked"):
        for overwrite in guild.channel(name)["permission_overwrites"]:
            assert discord_schema().validate_object("ChannelPermissionOverwriteResponse", overwrite) == []
    bot, _ = await running_bot()
    alerts_id = guild.channel("iwm-alerts")["id"]
    await subscribe(discord_, guild, "iwm-alerts")
    before = await stored_rows(bot)
    refusals = [
        ("subscribe", {"channel": "iwm-alerts"},
         f"⛔ You need the Manage Channels permission in <#{alerts_id}> to use this command on it."),
        ("unsubscribe", {"channel": "iwm-alerts"},
         f"⛔ You need the Manage Channels permission in <#{alerts_id}> to use this command on it."),
        ("subscribe", {"role": "Member"},
         f"⛔ You can't have <@&{guild.role('Member')['id']}> mentioned: the role is not mentionable and you lack "
         f"the Mention Everyone permission in <#{guild.channel('general')['id']}>."),
        ("setlevels", {"preset": "article"}, "⛔ You need the Manage Guild permission to use this command."),
    ]
    for sub, options, text in refusals:
        answer = await invoke(discord_, sub, options, member="bob")
        assert_refused(answer)
        assert answer.content == text
    blocked = await invoke(discord_, "subscribe", {"channel": "blocked"}, manage=True)
    assert_refused(blocked)
    assert blocked.content.startswith(f"⛔ I need the Attach Files permission in <#{guild.channel('blocked')['id']}>")
    assert await stored_rows(bot) == before

    allowed = await invoke(discord_, "subscribe", {}, member="bob")  # #general, where he holds the right
    assert allowed.content.startswith(f"✅ <#{guild.channel('general')['id']}> will get")


async def test_bad_input_is_refused_ephemerally_and_stores_nothing(running_bot: Any) -> None:
    """Unknown events, an empty events list, levels out of order (support >= entry low) and negative levels."""
    bot, discord_ = await running_bot()
    before = await stored_rows(bot)
    cases = [
        ("subscribe", {"channel": "iwm-alerts", "events": "breakout, moonshot"}, "⚠️ unknown alert event moonshot"),
        ("subscribe", {"channel": "iwm-alerts", "events": " , "}, "⚠️ choose at least one alert event"),
        ("setlevels", levels(205, 205, 220, 240, 245), "⚠️ levels must satisfy support < entry low"),
        ("setlevels", levels(230, 205, 220, 240, 245), "⚠️ levels must satisfy support < entry low"),
        ("setlevels", levels(-5, 205, 220, 240, 245), "⚠️ levels must all be positive"),
    ]
    for sub, options, start in cases:
        answer = await invoke(discord_, sub, options, manage=True)
        assert_refused(answer)
        assert answer.content.startswith(start), answer.content
    assert await stored_rows(bot) == before
    assert not discord_.requests_to("POST", "/channels/{channel_id}/messages")


async def test_subscriptions_lists_only_this_servers_channels(running_bot: Any, fanout_guild: FakeGuild) -> None:
    """Two servers with their own subscriptions and levels: each sees its own, never the other's."""
    _, discord_ = await running_bot(DEV_GUILD_ID="")  # global commands: usable in both servers
    home = discord_.guild
    await subscribe(discord_, home, "iwm-alerts", "breakout, new_high")
    await subscribe(discord_, fanout_guild, "alerts-b", "all", role="Member")
    await invoke(discord_, "setlevels", levels(190, 200, 215, 235, 240), manage=True, guild=fanout_guild)

    mine = await listed(discord_, home)
    assert mine["description"] == f"<#{home.channel('iwm-alerts')['id']}>: breakout, new_high · active"
    assert mine["fields"][0]["value"] == "support 200 · entry 205–220 · resistance 240–245"
    theirs = await listed(discord_, fanout_guild)
    role = fanout_guild.role("Member")["id"]
    assert theirs["description"] == (f"<#{fanout_guild.channel('alerts-b')['id']}>: breakout, breakdown, "
                                     f"entry_zone, new_high, streak, testing, breadth · mentions <@&{role}> · active")
    assert theirs["fields"][0]["value"] == "support 190 · entry 200–215 · resistance 235–240"


# --- the watcher ---------------------------------------------------------------------------------------------

async def test_close_check_posts_the_breakout_exactly_once(running_bot: Any) -> None:
    """After the 2025-10-03 close: one post (chart, embed, footer key, role ping) in the subscribed channel; the
    same check again posts nothing, and neither does it after a restart on the same database."""
    bot, discord_ = await running_bot()
    guild = discord_.guild
    channel, role = guild.channel("iwm-alerts"), guild.role("Member")["id"]
    await subscribe(discord_, guild, "iwm-alerts", role="Member")
    cog = await watcher_settled(bot, discord_)

    assert await cog.run_close_check(BREAKOUT_DAY) == 1
    (post,) = discord_.requests_to("POST", "/channels/{channel_id}/messages")
    assert post.path == f"/channels/{channel['id']}/messages"
    assert_breakout_post(post, channel["id"], role)
    (message,) = channel_posts(discord_, channel)
    assert message["attachments"][0]["filename"] == "iwm-alert.png" and message["attachments"][0]["width"] > 0
    (entry,) = await outbox(bot, guild)
    assert (entry.status, entry.message_id, entry.event.key) == ("sent", int(message["id"]), BREAKOUT_KEY)

    assert await cog.run_close_check(BREAKOUT_DAY) == 0
    restarted, _ = await running_bot()
    cog = await watcher_settled(restarted, discord_)
    assert await cog.run_close_check(BREAKOUT_DAY) == 0
    assert len(discord_.requests_to("POST", "/channels/{channel_id}/messages")) == 1
    assert len(channel_posts(discord_, channel)) == 1


async def test_fan_out_survives_forbidden_and_deleted_channels(running_bot: Any, fanout_guild: FakeGuild) -> None:
    """Three channels; Discord answers 403 for one and 404 for another: the third still gets its post, and the
    two subscriptions end disabled with the reason, as /iwm subscriptions shows."""
    bot, discord_ = await running_bot(DEV_GUILD_ID=str(fanout_guild.id))
    a, b, c = (fanout_guild.channel(name) for name in FANOUT_CHANNELS)
    for name in FANOUT_CHANNELS:
        await subscribe(discord_, fanout_guild, name)
    cog = await watcher_settled(bot, discord_)
    discord_.fail_next("POST", f"/channels/{a['id']}/messages", 403)
    discord_.fail_next("POST", f"/channels/{b['id']}/messages", 404)

    assert await cog.run_close_check(BREAKOUT_DAY) == 1
    assert [r.status for r in posts_to(discord_, a)] == [403]
    assert [r.status for r in posts_to(discord_, b)] == [404]
    (post,) = posts_to(discord_, c)
    assert_breakout_post(post, c["id"])
    assert [len(channel_posts(discord_, ch)) for ch in (a, b, c)] == [0, 0, 1]
    assert [e.status for e in await outbox(bot, fanout_guild)] == ["failed", "failed", "sent"]

    subs = {str(s.channel_id): s for s in await bot.resources.alerts.subscriptions(fanout_guild.id)}
    assert [subs[ch["id"]].enabled for ch in (a, b, c)] == [False, False, True]
    assert subs[a["id"]].disabled_reason == f"forbidden: Missing Permissions (channel {a['id']}, {BREAKOUT_KEY})"
    assert subs[b["id"]].disabled_reason == f"not_found: 404: Not Found (channel {b['id']}, {BREAKOUT_KEY})"
    lines = (await listed(discord_, fanout_guild))["description"].splitlines()
    assert lines == [
        f"<#{a['id']}>: breakout · disabled (forbidden: Missing Permissions (channel {a['id']}, {BREAKOUT_KEY}))",
        f"<#{b['id']}>: breakout · disabled (not_found: 404: Not Found (channel {b['id']}, {BREAKOUT_KEY}))",
        f"<#{c['id']}>: breakout · active",
    ]
    assert await cog.run_close_check(BREAKOUT_DAY) == 0
    assert len(discord_.requests_to("POST", "/channels/{channel_id}/messages")) == 3


async def test_rate_limited_post_is_sent_after_the_wait_once(running_bot: Any) -> None:
    """A 429 with retry_after on the post: discord.py waits it out and sends again; one message, recorded sent."""
    bot, discord_ = await running_bot()
    channel = discord_.guild.channel("iwm-alerts")
    await subscribe(discord_, discord_.guild, "iwm-alerts")
    cog = await watcher_settled(bot, discord_)
    discord_.fail_next("POST", f"/channels/{channel['id']}/messages", 429, retry_after=0.3)

    assert await cog.run_close_check(BREAKOUT_DAY) == 1
    limited, posted = posts_to(discord_, channel)
    assert (limited.status, limited.response["retry_after"]) == (429, 0.3)
    assert_breakout_post(posted, channel["id"])
    assert limited.json["nonce"] == posted.json["nonce"]  # the same message, retried
    (message,) = channel_posts(discord_, channel)
    (entry,) = await outbox(bot, discord_.guild)
    assert (entry.status, entry.message_id) == ("sent", int(message["id"]))


async def test_a_crash_between_send_and_record_is_recovered_without_a_resend(
    running_bot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The post reaches Discord but recording its message id fails (the process dies there): the outbox row stays
    pending. Members then write 150 messages, so the post is more than 100 (one page) back. On the next start,
    recovery reads the channel page by page back to the intent's time, finds the post by its footer key and
    records it; nothing is sent again, and the re-run close check finds the event already claimed."""
    bot, discord_ = await running_bot()
    guild, channel = discord_.guild, discord_.guild.channel("iwm-alerts")
    await subscribe(discord_, guild, "iwm-alerts")
    cog = await watcher_settled(bot, discord_)

    real_record = AlertStore.record
    crashed: list[int] = []

    async def record(self: AlertStore, outbox_id: int, status: str, **kwargs: Any) -> None:
        if status == "sent" and kwargs.get("message_id") and not crashed:
            crashed.append(outbox_id)
            raise RuntimeError("the process died before the message id was written")
        await real_record(self, outbox_id, status, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AlertStore, "record", record)
    with pytest.raises(RuntimeError, match="process died"):
        await cog.run_close_check(BREAKOUT_DAY)
    (post,) = posts_to(discord_, channel)
    assert_breakout_post(post, channel["id"])
    (entry,) = await outbox(bot, guild)
    assert (entry.id, entry.status, entry.message_id) == (crashed[0], "pending", None)

    for i in range(150):
        discord_.user_message(f"chatter {i}", channel="iwm-alerts")

    reads = len(discord_.requests_to("GET", "/channels/{channel_id}/messages"))
    with alerts_today(date(2025, 10, 6)):  # the next trading day: the pending post is recent enough to settle
        restarted, _ = await running_bot()
    cog = await watcher_settled(restarted, discord_)
    pages = discord_.requests_to("GET", "/channels/{channel_id}/messages")[reads:]
    assert len(pages) == 2 and "before" in pages[1].query  # 100 newest, then the page that reaches the post
    (message,) = bot_posts(discord_, channel)
    (entry,) = await outbox(restarted, guild)
    assert (entry.status, entry.message_id) == ("sent", int(message["id"]))

    assert await cog.run_close_check(BREAKOUT_DAY) == 0
    assert len(posts_to(discord_, channel)) == 1 and len(bot_posts(discord_, channel)) == 1


async def test_a_gateway_reconnect_mid_fan_out_loses_and_duplicates_nothing(
    running_bot: Any, fanout_guild: FakeGuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord asks the bot to reconnect (op 7) after the first of three posts; the bot RESUMEs (no new session),
    the fan-out finishes with one post per channel, and a command sent while it was disconnected is answered."""
    bot, discord_ = await running_bot(DEV_GUILD_ID=str(fanout_guild.id))
    channels = [fanout_guild.channel(name) for name in FANOUT_CHANNELS]
    for name in FANOUT_CHANNELS:
        await subscribe(discord_, fanout_guild, name)
    cog = await watcher_settled(bot, discord_)

    first, release = int(channels[0]["id"]), asyncio.Event()
    real_send = cog.send

    async def send(channel_id: int, role_id: int | None, event: Any, zones: Zones) -> int:
        if channel_id != first:  # the other posts wait until the gateway has come back
            await release.wait()
        return await real_send(channel_id, role_id, event, zones)

    monkeypatch.setattr(cog, "send", send)
    fan_out = asyncio.create_task(cog.run_close_check(BREAKOUT_DAY))
    await discord_.wait_for_request(lambda r: r.matches("POST", "/channels/{channel_id}/messages"))
    session = await discord_.force_reconnect(guild_id=fanout_guild.id)
    while_away = await discord_.dispatch_interaction(
        discord_.slash_command("iwm", "subscriptions", guild=fanout_guild))
    await discord_.wait_until(lambda: session.resumes == 1 and session.connected, 10.0, "the RESUME")
    release.set()

    assert await asyncio.wait_for(fan_out, 20) == 3
    assert len(discord_.sessions) == 1  # resumed, not re-identified
    for channel in channels:
        (post,) = posts_to(discord_, channel)
        assert_breakout_post(post, channel["id"])
        assert len(channel_posts(discord_, channel)) == 1
    entries = await outbox(bot, fanout_guild)
    assert [e.status for e in entries] == ["sent"] * 3 and len({e.message_id for e in entries}) == 3
    answer = await answer_of(while_away)
    assert answer.ephemeral and answer.embeds[0]["title"] == "IWM alert subscriptions"
    assert await cog.run_close_check(BREAKOUT_DAY) == 0
    assert len(discord_.requests_to("POST", "/channels/{channel_id}/messages")) == 3


async def test_moderator_commands_round_trip(running_bot: Any) -> None:
    """subscribe, setlevels, subscriptions and unsubscribe as a moderator, end to end."""
    bot, discord_ = await running_bot()
    guild = discord_.guild
    general = guild.channel("general")["id"]
    answer = await invoke(discord_, "subscribe", {}, manage=True)  # default: this channel, all events
    assert answer.ephemeral and answer.content.startswith(f"✅ <#{general}> will get: breakout, breakdown")
    answer = await invoke(discord_, "setlevels", levels(190, 200, 215, 235, 240), manage=True)
    assert answer.content == "✅ Levels set: support 190, entry 200–215, resistance 235–240."
    assert await bot.resources.alerts.levels(guild.id) == Zones(190, 200, 215, 235, 240)
    answer = await invoke(discord_, "unsubscribe", {}, manage=True)
    assert answer.content == f"✅ <#{general}> will get no more alerts."
    answer = await invoke(discord_, "unsubscribe", {}, manage=True)
    assert answer.content == f"<#{general}> had no alert subscription."
    embed = await listed(discord_, guild)
    assert embed["description"] == "No channel is subscribed. Use `/iwm subscribe`."


# --- presets ---------------------------------------------------------------------------------------------------

async def test_setlevels_presets_adopt_the_derived_or_the_article_levels(running_bot: Any) -> None:
    """preset:derived stores the zones derived from the latest bundled bar (2026-10-05), in cents, and says how
    they were derived; preset:article goes back to 200/205–220/240–245; /iwm subscriptions lists what was
    adopted."""
    bot, discord_ = await running_bot()
    guild = discord_.guild
    iwm = read_bundled_csv("IWM")
    zones = derived_zones(iwm)  # as of the latest bar
    assert zones.as_of == date(2026, 10, 5)
    expected = Zones(*(round(v, 2) for v in zones.values))

    answer = await invoke(discord_, "setlevels", {"preset": "derived"}, manage=True)
    assert answer.ephemeral
    assert answer.content.startswith(
        f"✅ Levels set: support {expected.support:g}, entry {expected.entry_low:g}–{expected.entry_high:g}, "
        f"resistance {expected.resistance_low:g}–{expected.resistance_high:g}. Derived from IWM's daily bars to "
        f"2026-10-05: {zones.method}"), answer.content
    assert answer.content.endswith(RULE) and len(answer.content) <= 2000
    assert await bot.resources.alerts.levels(guild.id) == expected
    assert (await listed(discord_, guild))["fields"][0]["value"] == expected.describe()

    answer = await invoke(discord_, "setlevels", {"preset": "article"}, manage=True)
    assert answer.content.startswith("✅ Levels set: support 200, entry 205–220, resistance 240–245. The article's")
    assert await bot.resources.alerts.levels(guild.id) == Zones(200, 205, 220, 240, 245)


async def test_setlevels_needs_a_preset_or_all_five_numbers(running_bot: Any) -> None:
    """Neither a preset nor all five numbers, or both at once: an ephemeral error, nothing stored; a member
    without Manage Channels is refused a preset too."""
    bot, discord_ = await running_bot()
    await invoke(discord_, "setlevels", levels(190, 200, 215, 235, 240), manage=True)
    before = await stored_rows(bot)
    cases = [
        ({}, "⚠️ give a preset (derived or article) or all five levels"),
        ({"support": 190, "entry_low": 200}, "⚠️ give a preset (derived or article) or all five levels"),
        ({"preset": "article", "support": 190}, "⚠️ give a preset or the five levels, not both"),
    ]
    for options, start in cases:
        answer = await invoke(discord_, "setlevels", options, manage=True)
        assert_refused(answer)
        assert answer.content.startswith(start), answer.content
    assert_refused(await invoke(discord_, "setlevels", {"preset": "derived"}))
    assert await stored_rows(bot) == before
    assert await bot.resources.alerts.levels(discord_.guild.id) == Zones(190, 200, 215, 235, 240)


async def test_alerts_follow_the_adopted_preset(running_bot: Any) -> None:
    """The close check reads the server's adopted levels: under the derived zones (resistance top 292.15 as of
    2026-10-05) the 245.83 close of 2025-10-03 is no breakout; after preset:article it is."""
    bot, discord_ = await running_bot()
    guild, channel = discord_.guild, discord_.guild.channel("iwm-alerts")
    await subscribe(discord_, guild, "iwm-alerts")
    cog = await watcher_settled(bot, discord_)
    await invoke(discord_, "setlevels", {"preset": "derived"}, manage=True)
    assert (await bot.resources.alerts.levels(guild.id)).resistance_high > 245.83
    assert await cog.run_close_check(BREAKOUT_DAY) == 0
    await invoke(discord_, "setlevels", {"preset": "article"}, manage=True)
    assert await cog.run_close_check(BREAKOUT_DAY) == 1
    (post,) = posts_to(discord_, channel)
    assert_breakout_post(post, channel["id"])


# --- live data, end to end ---------------------------------------------------------------------------------------

LIVE_DAY = date(2026, 10, 5)  # the last bundled bar, close 283.38
LIVE_LEVELS = (260, 265, 275, 280, 283)  # resistance top 283: 2026-10-05 closes above it


async def test_a_live_bar_above_the_servers_resistance_posts_one_breakout(
    running_bot: Any, server: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MARKET_DATA_PROVIDER=yahoo on the local provider server: the bot starts while Yahoo has the real IWM
    history to 2026-10-02; then Yahoo serves the real 2026-10-05 bar too, which closes above the server's
    resistance (set with /iwm setlevels). The close check posts one breakout; a second check posts nothing.

    The provider's idea of the last completed session (app.last_session, from the wall clock) is set by hand, so
    the real bars are current rather than behind today's date."""
    iwm = read_bundled_csv("IWM")
    history, upto = iwm.loc[: "2026-10-02"], iwm.loc[: LIVE_DAY.isoformat()]
    support, entry_low, entry_high, res_low, res_high = LIVE_LEVELS
    # the premise, from the bars: the breakout is armed (a close below the zone low since the last close above
    # its top), and 2026-10-05 is the first close above the top after that
    closes = upto["close"]
    last_above = closes[:-1][closes[:-1] > res_high].index[-1]
    assert (closes[last_above:][:-1] < res_low).any()
    assert closes.index[-1].date() == LIVE_DAY and closes.iloc[-1] > res_high >= closes[last_above:][1:-1].max()

    session = {"day": date(2026, 10, 2)}

    async def last_session() -> date:
        return session["day"]

    monkeypatch.setattr(app, "last_session", last_session)
    path = "/v8/finance/chart/IWM"
    server.script(path, Reply(body=yahoo_chart_body(history, "IWM")))
    bot, discord_ = await running_bot(MARKET_DATA_PROVIDER="yahoo", YAHOO_BASE_URL=server.url,
                                      CACHE_TTL_SECONDS="0")
    guild, channel = discord_.guild, discord_.guild.channel("iwm-alerts")
    await subscribe(discord_, guild, "iwm-alerts")
    answer = await invoke(discord_, "setlevels", levels(*LIVE_LEVELS), manage=True)
    assert answer.content == (f"✅ Levels set: support {support}, entry {entry_low}–{entry_high}, "
                              f"resistance {res_low}–{res_high}.")
    cog = await watcher_settled(bot, discord_)
    assert server.calls[path] >= 1  # the watcher's first check asked Yahoo
    assert (await bot.resources.market.bars("IWM")).as_of == date(2026, 10, 2)
    assert await cog.run_close_check(LIVE_DAY) == 0  # no 2026-10-05 bar yet
    assert not posts_to(discord_, channel)

    server.script(path, Reply(body=yahoo_chart_body(upto, "IWM")))
    session["day"] = LIVE_DAY
    calls = server.calls[path]
    assert await cog.run_close_check(LIVE_DAY) == 1
    assert server.calls[path] > calls  # the check (and the post's chart) read the new bars from Yahoo
    (post,) = posts_to(discord_, channel)
    (embed,) = post.json["embeds"]
    assert embed["title"] == f"IWM broke out above {res_high:.2f}"
    assert embed["footer"]["text"] == "smallcaps alert · 2026-10-05 breakout"
    assert f"{closes.iloc[-1]:.2f}" in embed["description"]
    assert post.json["nonce"] == post_nonce(int(channel["id"]), "2026-10-05 breakout")
    (entry,) = await outbox(bot, guild)
    assert (entry.status, entry.event.key, entry.event.close) == ("sent", "2026-10-05 breakout", closes.iloc[-1])

    calls = server.calls[path]
    assert await cog.run_close_check(LIVE_DAY) == 0
    assert server.calls[path] == calls + 1  # it looked again, and found the event already posted
    assert len(posts_to(discord_, channel)) == 1 and len(channel_posts(discord_, channel)) == 1


async def test_the_mute_button_is_for_moderators_and_delivery_honours_it(running_bot: Any) -> None:
    """Under the alert: a member without Manage Channels is refused; a moderator's press mutes that kind of event
    in that channel for 24 h, so the same event, detected again, is not posted there; once the mute ends it is."""
    bot, discord_ = await running_bot()
    guild, channel = discord_.guild, discord_.guild.channel("iwm-alerts")
    await subscribe(discord_, guild, "iwm-alerts")
    cog = await watcher_settled(bot, discord_)
    assert await cog.run_close_check(BREAKOUT_DAY) == 1
    (post,) = channel_posts(discord_, channel)
    (row,) = post["components"]
    (button,) = row["components"]
    assert (button["custom_id"], button["label"]) == ("smallcaps:mute:breakout", "Mute this event here for 24 h")

    refused = await answer_of(await discord_.dispatch_interaction(
        discord_.component_click("smallcaps:mute:breakout", post, member="bob")))
    assert_refused(refused)
    assert "Manage Channels" in refused.content
    muted = await answer_of(await discord_.dispatch_interaction(
        discord_.component_click("smallcaps:mute:breakout", post, member="alice", permissions=MODERATOR)))
    assert muted.ephemeral and muted.content.startswith("🔕") and "breakout" in muted.content
    store = bot.resources.alerts
    assert await store.muted_channels(guild.id, "breakout") == {int(channel["id"])}
    assert await store.muted_channels(guild.id, "new_high") == set()

    async def forget_the_post() -> None:  # as if the breakout were a new one: no outbox row, no detector state
        await bot.resources.database.run(lambda db: db.conn.executescript(
            "delete from alert_outbox; delete from alert_state;"))

    await forget_the_post()
    assert await cog.run_close_check(BREAKOUT_DAY) == 0
    assert len(channel_posts(discord_, channel)) == 1
    await bot.resources.database.run(lambda db: db.execute("update alert_mutes set until = '2000-01-01T00:00:00'"))
    await forget_the_post()
    assert await cog.run_close_check(BREAKOUT_DAY) == 1

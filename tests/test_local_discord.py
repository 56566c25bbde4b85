"""The local Discord, proven with a minimal discord.py bot defined here (the real bot has its own tests)."""

from __future__ import annotations

import io
import struct
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.support.discord_schema import SchemaViolation, discord_schema
from tests.support.local_discord import LocalDiscord, run_bot


def tiny_png() -> bytes:
    """A valid 2x1 RGB PNG, built by hand so the test needs no image library."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x20\xc0\x60\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


PNG = tiny_png()


def chart_embed(title: str = "IWM levels") -> discord.Embed:
    embed = discord.Embed(title=title, description="Russell 2000 ETF, daily", color=0x2ECC71)
    embed.add_field(name="Support", value="$200", inline=True)
    embed.add_field(name="Resistance", value="$240-245", inline=True)
    embed.set_image(url="attachment://chart.png")
    embed.set_footer(text="smallcaps")
    return embed


class RefreshView(discord.ui.View):
    """Persistent (no timeout, fixed custom_id), so clicks work on messages from before a restart."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Refresh", style=discord.ButtonStyle.primary, custom_id="iwm:refresh")
    async def refresh(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        interaction.client.seen["click"].append(button.custom_id)  # type: ignore[attr-defined]
        await interaction.response.edit_message(content="refreshed")


iwm = app_commands.Group(name="iwm", description="IWM small-cap tools")
alerts = app_commands.Group(name="alerts", description="Price alerts", parent=iwm)


@iwm.command(name="ping", description="Check that the bot answers")
async def ping(interaction: discord.Interaction) -> None:
    await interaction.response.defer(thinking=True)
    await interaction.followup.send(
        embed=chart_embed(), file=discord.File(io.BytesIO(PNG), "chart.png"), view=RefreshView()
    )


@iwm.command(name="broken", description="Send an embed Discord refuses (title over 256 characters)")
async def broken(interaction: discord.Interaction) -> None:
    await interaction.response.defer()
    try:
        await interaction.followup.send(embed=chart_embed("x" * 300))
    except discord.HTTPException as exc:
        interaction.client.seen["broken"].append(exc.status)  # type: ignore[attr-defined]


@iwm.command(name="steps", description="Edit the original response, then send, edit and delete a followup")
async def steps(interaction: discord.Interaction) -> None:
    await interaction.response.defer()
    await interaction.edit_original_response(content="working...")
    followup = await interaction.followup.send("step 1", wait=True)
    await followup.edit(content="step 2")
    original = await interaction.original_response()
    await followup.delete()
    interaction.client.seen["steps"].append(original.content)  # type: ignore[attr-defined]


@iwm.command(name="levels", description="Price levels for a ticker")
@app_commands.describe(ticker="Ticker symbol", days="How many days back")
@app_commands.choices(ticker=[app_commands.Choice(name=t, value=t) for t in ("IWM", "SPY")])
async def levels(
    interaction: discord.Interaction, ticker: str, days: int = 30, member: discord.Member | None = None
) -> None:
    interaction.client.seen["levels"].append((ticker, days, member and member.name))  # type: ignore[attr-defined]
    await interaction.response.send_message(f"{ticker} over {days} days")


@alerts.command(name="add", description="Alert when IWM crosses a price")
async def alerts_add(interaction: discord.Interaction, price: float, above: bool = True) -> None:
    interaction.client.seen["alert"].append((price, above))  # type: ignore[attr-defined]
    await interaction.response.send_message(f"alert at {price}", ephemeral=True)


class MiniBot(commands.AutoShardedBot):
    def __init__(self, guild_id: int, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned, intents=discord.Intents.default(), chunk_guilds_at_startup=False,
            guild_ready_timeout=0.1, **options,
        )
        self.guild_id = guild_id
        self.seen: defaultdict[str, list[Any]] = defaultdict(list)

    async def setup_hook(self) -> None:
        self.tree.add_command(iwm)
        self.add_view(RefreshView())
        await self.tree.sync()

        @app_commands.command(name="admin", description="Guild-only command")
        async def admin(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("ok")

        guild = discord.Object(self.guild_id)
        self.tree.add_command(admin, guild=guild)
        await self.tree.sync(guild=guild)

    async def on_message(self, message: discord.Message) -> None:
        self.seen["message"].append(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        self.seen["edit"].append(payload)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.seen["delete"].append(payload)

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        self.seen["bulk_delete"].append(payload)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.seen["reaction_add"].append(payload)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self.seen["reaction_remove"].append(payload)

    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        self.seen["reaction_clear"].append(payload)

    async def on_raw_poll_vote_add(self, payload: discord.RawPollVoteActionEvent) -> None:
        self.seen["vote_add"].append(payload)

    async def on_raw_poll_vote_remove(self, payload: discord.RawPollVoteActionEvent) -> None:
        self.seen["vote_remove"].append(payload)


@pytest.fixture
async def bot(discord_: LocalDiscord) -> AsyncIterator[MiniBot]:
    async with run_bot(MiniBot(discord_.guild.id), discord_) as running:
        yield running  # type: ignore[misc]


async def test_login_ready_and_command_sync(discord_: LocalDiscord, bot: MiniBot) -> None:
    for method, path in [
        ("GET", "/users/@me"),
        ("GET", "/oauth2/applications/@me"),
        ("GET", "/gateway/bot"),
        ("PUT", "/applications/{app}/commands"),
        ("PUT", "/applications/{app}/guilds/{guild}/commands"),
    ]:
        assert [r.status for r in discord_.requests_to(method, path)] == [200], (method, path)
    synced = discord_.requests_to("PUT", "/applications/{app}/commands")[0]
    assert [c["name"] for c in synced.json] == ["iwm"]
    assert {o["name"] for o in synced.json[0]["options"]} == {"ping", "broken", "steps", "levels", "alerts"}
    assert synced.response[0]["application_id"] == str(discord_.application_id)
    assert [c["name"] for c in discord_.synced_commands(discord_.guild)] == ["admin"]

    session = discord_.session_for()
    assert (session.shard_id, session.shard_count) == (0, 1)
    assert session.identify["intents"] == discord.Intents.default().value
    assert [f["t"] for f in session.events] == ["READY", "GUILD_CREATE"]
    connection = discord_.connections[0]
    assert connection.query["v"] == "10" and connection.query["encoding"] == "json"
    assert connection.zlib_stream  # discord.py asks for zlib-stream; the frames are sent compressed accordingly
    assert [f["op"] for f in connection.received][:2] == [1, 2]  # a heartbeat right after HELLO, then IDENTIFY
    assert {"op": 11, "d": None, "s": None, "t": None} in connection.sent
    assert bot.user is not None and bot.user.id == discord_.application_id
    guild = bot.get_guild(discord_.guild.id)
    assert guild is not None and guild.name == "Smallcaps HQ" and guild.member_count == 3
    assert [c.name for c in guild.text_channels] == ["general", "iwm-alerts"]


async def test_slash_command_defers_then_follows_up_with_png(discord_: LocalDiscord, bot: MiniBot) -> None:
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "ping"))
    callback, followup = await handle.wait_for_responses(2)

    assert callback.json == {"type": 5}
    assert callback.query == {"with_response": "1"} and callback.status == 200
    assert handle.ack_seconds is not None and handle.ack_seconds < 3.0

    assert followup.method == "POST" and followup.multipart and followup.status == 200
    assert [(f.name, f.filename, f.data) for f in followup.files] == [("files[0]", "chart.png", PNG)]
    embed = followup.json["embeds"][0]
    assert embed["title"] == "IWM levels" and embed["image"]["url"] == "attachment://chart.png"
    assert discord_schema().validate(followup.method, followup.path, followup.json) == []
    assert followup.json["components"][0]["components"][0]["custom_id"] == "iwm:refresh"

    stored = discord_.channel_messages(discord_.guild.channel())
    original, message = stored
    assert original["flags"] & 128  # the "thinking..." placeholder
    attachment = message["attachments"][0]
    assert (attachment["filename"], attachment["size"], attachment["width"]) == ("chart.png", len(PNG), 2)


async def test_options_are_typed_from_the_synced_tree(discord_: LocalDiscord, bot: MiniBot) -> None:
    payload = discord_.slash_command("iwm", "levels", {"ticker": "SPY", "days": 5, "member": "bob"})
    option = payload["data"]["options"][0]
    assert (option["type"], option["name"]) == (1, "levels")
    assert [(o["name"], o["type"], o["value"]) for o in option["options"]] == [
        ("ticker", 3, "SPY"), ("days", 4, 5), ("member", 6, discord_.guild.member("bob")["user"]["id"]),
    ]
    handle = await discord_.dispatch_interaction(payload)
    await handle.wait_for_responses(1)
    assert bot.seen["levels"] == [("SPY", 5, "bob")]
    assert handle.callback is not None and handle.callback.json["type"] == 4

    nested = discord_.slash_command("iwm", "alerts add", {"price": 200.5})
    group = nested["data"]["options"][0]
    assert (group["type"], group["name"], group["options"][0]["type"]) == (2, "alerts", 1)
    assert group["options"][0]["options"] == [{"type": 10, "name": "price", "value": 200.5}]
    handle = await discord_.dispatch_interaction(nested)
    (callback,) = await handle.wait_for_responses(1)
    assert bot.seen["alert"] == [(200.5, True)]
    assert callback.json["data"]["flags"] == 64  # ephemeral

    with pytest.raises(ValueError, match="choices"):
        discord_.slash_command("iwm", "levels", {"ticker": "QQQ"})
    with pytest.raises(ValueError, match="required"):
        discord_.slash_command("iwm", "levels", {"days": 5})
    with pytest.raises(LookupError):
        discord_.slash_command("iwm", "levels", {"ticker": "IWM", "nope": 1})


async def test_original_response_and_followup_edits(discord_: LocalDiscord, bot: MiniBot) -> None:
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "steps"))
    await discord_.wait_until(lambda: bot.seen["steps"])
    assert bot.seen["steps"] == ["working..."]
    token = handle.token
    calls = [(r.method, r.path.replace(token, "TOKEN"), r.status) for r in handle.responses()]
    app, followup_id = discord_.application_id, handle.responses()[2].response["id"]
    assert calls == [
        ("POST", f"/interactions/{handle.payload['id']}/TOKEN/callback", 200),
        ("PATCH", f"/webhooks/{app}/TOKEN/messages/@original", 200),
        ("POST", f"/webhooks/{app}/TOKEN", 200),
        ("PATCH", f"/webhooks/{app}/TOKEN/messages/{followup_id}", 200),
        ("DELETE", f"/webhooks/{app}/TOKEN/messages/{followup_id}", 204),
    ]
    got = await discord_.wait_for_request(lambda r: r.method == "GET" and r.path.endswith("/messages/@original"))
    assert got.response["content"] == "working..." and not got.response["flags"] & 128  # no longer "thinking"
    assert [m["content"] for m in discord_.channel_messages(handle.payload["channel_id"])] == ["working..."]


async def test_component_click_reaches_the_persistent_view(discord_: LocalDiscord, bot: MiniBot) -> None:
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "ping"))
    await handle.wait_for_responses(2)

    click = await discord_.dispatch_interaction(discord_.component_click("iwm:refresh"))
    (callback,) = await click.wait_for_responses(1)
    assert bot.seen["click"] == ["iwm:refresh"]
    assert callback.json["type"] == 7 and callback.json["data"]["content"] == "refreshed"
    clicked = discord_.find_message(click.payload["message"]["id"])
    assert clicked["content"] == "refreshed" and clicked["attachments"][0]["filename"] == "chart.png"


async def test_a_clicked_message_is_a_valid_message_response(discord_: LocalDiscord, bot: MiniBot) -> None:
    """What a component interaction carries is the message as Discord stores it: components numbered, a unicode
    emoji without an id; it validates as the OpenAPI description's MessageResponse."""
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "ping"))
    await handle.wait_for_responses(2)
    payload = discord_.component_click("iwm:refresh")
    assert payload["type"] == 3 and payload["data"] == {"custom_id": "iwm:refresh", "component_type": 2}
    (row,) = payload["message"]["components"]
    assert (row["id"], row["components"][0]["id"]) == (1, 2)
    assert discord_schema().validate_object("MessageResponse", payload["message"]) == []
    broken = {**payload["message"], "components": [{"type": 1, "components": [{"type": 2, "label": "x"}]}]}
    assert discord_schema().validate_object("MessageResponse", broken)


@pytest.mark.discord_invalid_requests
async def test_broken_embed_fails_schema_validation(discord_: LocalDiscord, bot: MiniBot) -> None:
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "broken"))
    _, followup = await handle.wait_for_responses(2)
    await discord_.wait_until(lambda: bot.seen["broken"])
    assert followup.status == 400 and bot.seen["broken"] == [400]  # refused like Discord would
    assert any("embeds[0].title" in p and "too long" in p for p in followup.problems)
    with pytest.raises(SchemaViolation, match=r"embeds\[0\]\.title"):
        discord_.assert_requests_valid()
    with pytest.raises(SchemaViolation):
        discord_schema().check(followup.method, followup.path, followup.json)


def test_schema_rules_beyond_the_openapi_description() -> None:
    schema = discord_schema()
    big = [{"description": "x" * 3500}, {"description": "y" * 3500}]
    assert any("6000" in p for p in schema.validate("POST", "/channels/1/messages", {"embeds": big}))
    assert any("attachment" in p for p in schema.validate("POST", "/channels/1/messages", {}, [("a.png", 26 << 20)]))
    command = {
        "name": "IWM", "description": "d",
        "options": [
            {"type": 3, "name": "t", "description": "d" * 101, "choices": [{"name": c, "value": c} for c in "a" * 26]}
        ],
    }
    problems = schema.validate("PUT", "/applications/1/commands", [command])
    assert any("lowercase" in p for p in problems)
    assert any("description" in p for p in problems)
    assert any("choices" in p for p in problems)
    callback = {"type": 4, "data": {"content": "ok", "embeds": [{"title": "t"}] * 11}}
    assert schema.validate("POST", "/interactions/1/tok/callback", callback)
    assert schema.validate("POST", "/interactions/1/tok/callback", {"type": 6}) == []


async def test_forced_reconnect_resumes_without_losing_a_dispatch(discord_: LocalDiscord, bot: MiniBot) -> None:
    session = await discord_.force_reconnect()
    assert not session.connected
    # dispatched while the bot is disconnected: it must arrive through the RESUME replay
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "levels", {"ticker": "IWM"}))
    await handle.wait_for_responses(1)
    assert bot.seen["levels"] == [("IWM", 30, None)]
    await discord_.wait_until(lambda: session.resumes == 1 and session.connected)
    resumed_on = session.connection
    assert resumed_on is not None and resumed_on.path == "/gateway/resume"
    resume = next(f for f in resumed_on.received if f["op"] == 6)
    assert resume["d"]["session_id"] == session.session_id and resume["d"]["seq"] == 2  # READY, GUILD_CREATE
    assert [f.get("t") for f in resumed_on.sent if f["op"] == 0] == ["INTERACTION_CREATE", "RESUMED"]
    assert len(discord_.sessions) == 1  # resumed, not re-identified


async def test_rate_limited_message_is_retried(discord_: LocalDiscord, bot: MiniBot) -> None:
    channel = bot.get_channel(int(discord_.guild.channel("iwm-alerts")["id"]))
    assert isinstance(channel, discord.TextChannel)
    discord_.fail_next("POST", "/channels/{channel_id}/messages", 429, retry_after=0.2)
    message = await channel.send("IWM crossed $220")
    attempts = discord_.requests_to("POST", "/channels/{channel_id}/messages")
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[0].response == {"message": "You are being rate limited.", "retry_after": 0.2, "global": False}
    assert discord_.channel_messages(channel.id)[-1]["id"] == str(message.id)
    assert (await channel.fetch_message(message.id)).content == "IWM crossed $220"
    assert (await bot.fetch_channel(channel.id)).name == "iwm-alerts"

    discord_.fail_next("POST", "/channels/{channel_id}/messages", 403)
    with pytest.raises(discord.Forbidden):
        await channel.send("not allowed")
    discord_.fail_next("GET", "/channels/{channel_id}/messages/{message_id}", 404)
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(message.id)


async def test_two_shards_each_get_only_their_guilds(discord_: LocalDiscord) -> None:
    discord_.shard_count = 2
    extra = [discord_.add_guild("Shard zero", shard=(0, 2)), discord_.add_guild("Shard one", shard=(1, 2))]
    async with run_bot(MiniBot(discord_.guild.id), discord_) as bot:
        assert sorted((s.shard_id, s.shard_count) for s in discord_.sessions) == [(0, 2), (1, 2)]
        for session in discord_.sessions:
            created = [int(f["d"]["id"]) for f in session.events if f["t"] == "GUILD_CREATE"]
            assert created and all((g >> 22) % 2 == session.shard_id for g in created)
            ready = session.events[0]["d"]
            assert ready["shard"] == [session.shard_id, 2]
            assert {int(g["id"]) for g in ready["guilds"]} == set(created)
        assert len(bot.guilds) == 3
        for guild in extra:
            assert bot.get_guild(guild.id).shard_id == (guild.id >> 22) % 2  # type: ignore[union-attr]

        shard_one = discord_.session_for(guild_id=extra[1].id)
        message = discord_.user_message("hello shard one", guild=extra[1])
        assert await discord_.dispatch("MESSAGE_CREATE", message) is not None
        await discord_.wait_until(lambda: bot.seen["message"])
        assert shard_one.events[-1]["t"] == "MESSAGE_CREATE"
        assert all(f["d"] is not message for s in discord_.sessions if s is not shard_one for f in s.events)
        assert bot.seen["message"][0].guild.id == extra[1].id


async def test_message_reaction_and_poll_events(discord_: LocalDiscord, bot: MiniBot) -> None:
    message = discord_.user_message("IWM to the moon")
    await discord_.dispatch("MESSAGE_CREATE", message)
    await discord_.dispatch("MESSAGE_UPDATE", discord_.message_update(message, content="IWM to $240"))
    await discord_.dispatch("MESSAGE_REACTION_ADD", discord_.reaction_add(message, "🚀", member="bob"))
    await discord_.dispatch("MESSAGE_REACTION_REMOVE", discord_.reaction_remove(message, "🚀", member="bob"))
    await discord_.dispatch("MESSAGE_REACTION_REMOVE_ALL", discord_.reaction_remove_all(message))
    await discord_.dispatch("MESSAGE_DELETE", discord_.message_delete(message))
    others = [discord_.user_message(f"m{i}") for i in range(2)]
    await discord_.dispatch("MESSAGE_DELETE_BULK", discord_.message_delete_bulk(others))

    channel = bot.get_channel(int(discord_.guild.channel()["id"]))
    assert isinstance(channel, discord.TextChannel)
    poll = discord.Poll("Where does IWM close Friday?", duration=timedelta(hours=1))
    poll.add_answer(text="Above $220").add_answer(text="Below $220")
    posted = await channel.send(poll=poll)
    stored = discord_.find_message(posted.id)
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(stored, 1, member="alice"))
    await discord_.dispatch("MESSAGE_POLL_VOTE_ADD", discord_.poll_vote(stored, 1, member="bob"))
    await discord_.dispatch("MESSAGE_POLL_VOTE_REMOVE", discord_.poll_vote(stored, 1, member="bob"))

    kinds = ["message", "edit", "reaction_add", "reaction_remove", "reaction_clear", "delete", "bulk_delete"]
    await discord_.wait_until(
        lambda: all(bot.seen[k] for k in kinds) and len(bot.seen["vote_add"]) == 2 and bot.seen["vote_remove"]
    )
    assert bot.seen["message"][0].content == ""  # no MESSAGE_CONTENT intent: Discord blanks it
    assert bot.seen["edit"][0].message_id == int(message["id"])
    assert str(bot.seen["reaction_add"][0].emoji) == "🚀" and bot.seen["reaction_add"][0].member.name == "bob"
    assert bot.seen["bulk_delete"][0].message_ids == {int(m["id"]) for m in others}
    assert {v.answer_id for v in bot.seen["vote_add"]} == {1}

    answer = posted.poll.get_answer(1)  # type: ignore[union-attr]
    assert [u.name async for u in answer.voters()] == ["alice"]  # type: ignore[union-attr]
    discord_.set_poll_voters(stored, 2, [discord_.guild.member("bob"), discord_.guild.member("alice")])
    voters = posted.poll.get_answer(2).voters()  # type: ignore[union-attr]
    assert sorted([u.name async for u in voters]) == ["alice", "bob"]
    ended = await posted.end_poll()
    assert ended.poll is not None and ended.poll.is_finalised()


async def test_real_bot_logs_in_and_syncs_its_commands(running_bot: Any) -> None:
    bot, discord_ = await running_bot()
    assert bot.is_ready() and bot.user.id == discord_.application_id
    (sync,) = discord_.requests_to("PUT", "/applications/{app}/guilds/{guild}/commands")
    assert sync.status == 200 and sync.path.endswith(f"/guilds/{discord_.guild.id}/commands")
    assert "iwm" in [c["name"] for c in discord_.synced_commands(discord_.guild)]
    assert bot.get_guild(discord_.guild.id) is not None

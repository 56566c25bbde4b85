"""The community log on Discord: per-channel opt-in (`/iwm log`), the gateway events that feed it,
`/iwm community`, `/iwm forget-me`, `/iwm export`, and the daily retention purge.

Listeners only queue events (services.community's writer batches them on the database thread), so a burst of
messages never holds up the event loop, and a failing event is logged and never reaches discord.py.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands, tasks

from cogs.common import (
    BLUE,
    GREY,
    IwmCog,
    add_iwm_cog,
    guild_of,
    in_guild,
    plural,
    png_file,
    readable_channels,
    renders_chart,
    require_in_channel,
    requires,
    requires_in_target,
    safe_listener,
)
from services.community import (
    MAX_EXPORT_DAYS,
    MAX_REPORT_DAYS,
    CommunityLog,
    CommunityReport,
    EmojiCleared,
    MessageCreated,
    MessageEdited,
    MessagesDeleted,
    ReactionAdded,
    ReactionRemoved,
    ReactionsCleared,
    validate_days,
)
from services.privacy import ForgetCounts, forget_member

if TYPE_CHECKING:
    from app import SmallcapsBot

log = logging.getLogger(__name__)

manage_guild = requires(manage_guild=True)
LOG_MANAGER = discord.Permissions(manage_guild=True, view_channel=True)  # in the channel turned on or off
CHART = "iwm-community.png"
LOGGED_TYPES = (discord.MessageType.default, discord.MessageType.reply)  # not joins, pins, boosts...
FORGET_TIMEOUT = 120.0  # seconds the forget-me buttons stay usable
FORGET_WHAT = ("your logged messages (and their earlier versions), your reactions, reactions on your messages and "
               "your sentiment poll votes")


def forget_text(counts: ForgetCounts) -> str:
    return (f"✅ Deleted {plural(counts.messages, 'message')}, {plural(counts.revisions, 'earlier version')}, "
            f"{plural(counts.reactions, 'reaction')} and {plural(counts.votes, 'poll vote')}. Poll results keep "
            "their counts, without names (a poll still open counts your vote when it closes, without your name).")


def community_embed(report: CommunityReport, logged_channels: int) -> discord.Embed:
    if logged_channels:
        where = f"in {plural(logged_channels, 'logged channel')}"
    else:
        where = "· no channel is logged now (a moderator turns it on with `/iwm log state:on`)"
    embed = discord.Embed(
        title=f"Community · last {report.days} days",
        description=(f"**{report.messages}** messages from **{report.members}** members {where}, "
                     f"{report.start} to {report.end} (UTC days)."),
        colour=BLUE if report.messages else GREY,
    )
    tone = report.tone
    embed.add_field(name="Tone", inline=True, value=(
        "n/a (no tone words)" if tone is None else
        f"{tone:+.2f} ({report.bullish} bullish / {report.bearish} bearish words)"))
    busiest = max(report.daily, key=lambda d: d.messages, default=None)
    if busiest is not None and busiest.messages:
        embed.add_field(name="Busiest day", inline=True, value=(
            f"{busiest.day}: {plural(busiest.messages, 'message')} from {plural(busiest.members, 'member')}"))
    if report.top_cashtags:
        embed.add_field(name="Top cashtags", inline=False,
                        value=" · ".join(f"${tag} {n}" for tag, n in report.top_cashtags)[:1024])
    if report.top_reactions:
        embed.add_field(name="Top reactions", inline=False,
                        value=" · ".join(f"{r.display} {r.count}" for r in report.top_reactions)[:1024])
    prices = f"⚠️ {report.market_note}" if report.market_note else \
        f"{report.market_days} days with an IWM close, data through {report.market_as_of}"
    embed.add_field(name="IWM on the chart", inline=False, value=prices[:1024])
    embed.set_image(url=f"attachment://{CHART}")
    embed.set_footer(text="Tone counts a short list of bullish and bearish words and ignores negation and sarcasm: "
                          "a rough mood gauge over many messages, never per message.")
    return embed


class ForgetView(discord.ui.View):
    """Confirm / Cancel for `/iwm forget-me`; only the member who asked may press. A one-shot confirmation
    (discord.py's `examples/views/confirm.py`), not a persistent view: it lives for FORGET_TIMEOUT on this one
    prompt, so discord.py generates its custom_ids."""

    def __init__(self, community: CommunityLog, guild_id: int, user_id: int) -> None:
        super().__init__(timeout=FORGET_TIMEOUT)
        self.community, self.guild_id, self.user_id = community, guild_id, user_id
        self.prompt: discord.Interaction | None = None  # to expire the buttons

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.user_id:
            return True
        await interaction.response.send_message("⛔ Only the member who asked can confirm this.", ephemeral=True)
        return False

    @discord.ui.button(label="Delete my data", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[ForgetView]) -> None:
        self.stop()
        # Acknowledge first: on a large log the erasure can outlast the 3 seconds Discord waits for an answer.
        await interaction.response.defer()
        counts = await forget_member(self.community, self.guild_id, self.user_id)
        log.info("forget-me: guild %s member %s: %s", self.guild_id, self.user_id, counts)
        await interaction.edit_original_response(content=forget_text(counts), view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button[ForgetView]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Cancelled: nothing was deleted.", view=None)

    async def on_timeout(self) -> None:
        if self.prompt is not None:
            with suppress(discord.HTTPException):
                await self.prompt.edit_original_response(
                    content="Expired: nothing was deleted. Run `/iwm forget-me` again if you want to.", view=None)


class Community(IwmCog):
    @property
    def community(self) -> CommunityLog:
        return self.bot.resources.community

    def background_loops(self) -> tuple[tasks.Loop[Any], ...]:
        return (self.retention,)

    # --- commands -----------------------------------------------------------------------------------------

    @app_commands.command(name="log", description="Turn the community log on or off for a channel (Manage Server)")
    @app_commands.describe(state="on: record messages and reactions from now on; off: stop (what was logged stays)",
                           channel="The channel (default: this channel; its threads follow it)")
    @in_guild()
    @requires_in_target(manage_guild=True)
    async def log_channel(self, interaction: discord.Interaction, state: Literal["on", "off"],
                          channel: discord.TextChannel | None = None) -> None:
        target = require_in_channel(interaction, channel, LOG_MANAGER)
        on = state == "on"
        changed = await self.community.set_logging(guild_of(interaction), target, on)
        if on:
            text = (f"✅ The community log now records messages and reactions in <#{target}>. Members see the "
                    "summary with `/iwm community` and remove their data with `/iwm forget-me`."
                    if changed else f"<#{target}> was already logged.")
            if not self.bot.intents.message_content:
                text += ("\nℹ️ Message text is not recorded: the bot runs without the Message Content intent "
                         "(see the README).")
        else:
            days = self.bot.settings.log_retention_days
            text = (f"✅ <#{target}> is no longer logged. What was recorded stays for the retention period "
                    f"({days} days) unless members remove it with `/iwm forget-me`."
                    if changed else f"<#{target}> was not logged.")
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="community", description="Activity and tone in this server's logged channels vs IWM")
    @app_commands.describe(days=f"Days to cover, 1-{MAX_REPORT_DAYS} (default 30)")
    @in_guild()
    @renders_chart()
    async def community_report(self, interaction: discord.Interaction,
                               days: app_commands.Range[int, 1, MAX_REPORT_DAYS] = 30) -> None:
        validate_days(days, MAX_REPORT_DAYS)
        assert interaction.guild_id is not None
        await interaction.response.defer(thinking=True)
        res = self.bot.resources
        readable = readable_channels(interaction)  # only what the member can read in the server now
        report, png = await res.community.report(res.market, res.renderer, interaction.guild_id, days,
                                                 channels=readable)
        logged = res.community.logged_channels(interaction.guild_id)
        embed = community_embed(report, len(logged if readable is None else logged & readable))
        await interaction.followup.send(embed=embed, file=png_file(png, CHART))

    @app_commands.command(name="forget-me", description="Delete everything the community log holds about you here")
    @in_guild()
    async def forget_me(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        view = ForgetView(self.community, interaction.guild_id, interaction.user.id)
        view.prompt = interaction
        await interaction.response.send_message(
            f"This deletes {FORGET_WHAT} in this server. It cannot be undone.", view=view, ephemeral=True)

    @app_commands.command(name="export", description="This server's community log as a CSV file (Manage Server)")
    @app_commands.describe(days=f"Days to include, 1-{MAX_EXPORT_DAYS} (default 30)")
    @in_guild()
    @manage_guild
    async def export(self, interaction: discord.Interaction,
                     days: app_commands.Range[int, 1, MAX_EXPORT_DAYS] = 30) -> None:
        validate_days(days, MAX_EXPORT_DAYS)
        assert interaction.guild_id is not None
        await interaction.response.defer(ephemeral=True, thinking=True)
        limit = interaction.filesize_limit
        async with self.community.export_csv(interaction.guild_id, days, max_bytes=limit,
                                              channels=readable_channels(interaction)) as export:
            if not export.complete:
                await interaction.followup.send(
                    f"⚠️ The export of the last {days} days is over this server's {limit / 2**20:.0f} MB attachment "
                    f"limit (the first {plural(export.messages, 'message')} fill it): ask for fewer days.",
                    ephemeral=True)
                return
            name = f"community-{interaction.guild_id}-{days}d.csv"
            await interaction.followup.send(f"Community log, last {days} days: {plural(export.messages, 'message')}.",
                                            file=discord.File(export.path, filename=name), ephemeral=True)

    # --- listeners ----------------------------------------------------------------------------------------

    def _opt_in_channel(self, channel_id: int, channel: Any = None) -> int:
        """The channel whose opt-in covers this one: a thread's parent, otherwise the channel itself."""
        channel = channel if channel is not None else self.bot.get_channel(channel_id)
        if isinstance(channel, discord.Thread) and channel.parent_id:
            return channel.parent_id
        return channel_id

    @staticmethod
    def _reply_to(message: discord.Message) -> int | None:
        return message.reference.message_id if message.type is discord.MessageType.reply and message.reference \
            else None

    @commands.Cog.listener()
    @safe_listener
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is None or message.author.bot or message.webhook_id or message.type not in LOGGED_TYPES:
            return
        channel_id = self._opt_in_channel(message.channel.id, message.channel)
        if self.community.is_logged(message.guild.id, channel_id):
            self.community.put(MessageCreated(message.guild.id, channel_id, message.id, message.author.id,
                                              message.created_at, message.content, self._reply_to(message)))

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        if payload.guild_id is None or "content" not in payload.data or message.author.bot or message.webhook_id:
            return
        # Passed even when the channel is no longer logged: an edit of a logged message must be honoured.
        self.community.put(MessageEdited(
            payload.guild_id, self._opt_in_channel(payload.channel_id, message.channel), payload.message_id,
            message.content, message.edited_at or datetime.now(UTC), author_id=message.author.id,
            created_at=message.created_at, reply_to=self._reply_to(message)))

    # Deletions and removed reactions are applied whatever the opt-in: they only remove what the log holds.

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            self.community.put(MessagesDeleted(payload.guild_id, (payload.message_id,), datetime.now(UTC)))

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            self.community.put(MessagesDeleted(payload.guild_id, tuple(sorted(payload.message_ids)),
                                               datetime.now(UTC)))

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is None or (payload.member is not None and payload.member.bot):
            return
        self.community.put(ReactionAdded(payload.guild_id, self._opt_in_channel(payload.channel_id),
                                         payload.message_id, payload.user_id, payload.emoji.name or "?",
                                         payload.emoji.id, datetime.now(UTC)))

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is not None:
            self.community.put(ReactionRemoved(payload.guild_id, payload.message_id, payload.user_id,
                                               payload.emoji.name or "?", payload.emoji.id, datetime.now(UTC)))

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        if payload.guild_id is not None:
            self.community.put(ReactionsCleared(payload.guild_id, payload.message_id, datetime.now(UTC)))

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_reaction_clear_emoji(self, payload: discord.RawReactionClearEmojiEvent) -> None:
        if payload.guild_id is not None:
            self.community.put(EmojiCleared(payload.guild_id, payload.message_id, payload.emoji.name or "?",
                                            payload.emoji.id, datetime.now(UTC)))

    # --- retention ----------------------------------------------------------------------------------------

    @tasks.loop(hours=24)
    async def retention(self) -> None:
        """Once a day (first at start-up): delete what is older than LOG_RETENTION_DAYS, the log's rows and the
        votes of polls closed before then (the polls keep their counts)."""
        try:
            days = self.bot.settings.log_retention_days
            purged = await self.community.purge_older_than(days)
            if purged.messages or purged.revisions or purged.reactions:
                log.info("community log retention: purged %s", purged)
            if votes := await self.bot.resources.sentiment.purge_votes_older_than(days):
                log.info("poll vote retention: purged %d votes of polls closed over %d days ago", votes, days)
        except Exception:
            log.exception("community log retention failed; next try in 24 hours")

    @retention.before_loop
    async def before_retention(self) -> None:
        await self.bot.wait_until_ready()


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Community(bot))

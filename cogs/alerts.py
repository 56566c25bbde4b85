"""Breakout posts: channel subscriptions, per-guild levels, and the watcher that posts each event once."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import tasks

from cogs.autocomplete import event_choices
from cogs.common import (
    BLUE,
    GREEN,
    GREY,
    POSTING,
    RED,
    IwmCog,
    add_iwm_cog,
    guild_of,
    in_guild,
    live_database,
    png_file,
    require_guild_wide,
    require_in_channel,
    require_mentionable,
    requires_in_target,
)
from cogs.errors import handle_command_error
from services import market_calendar
from services.alerts import (
    EVENT_KINDS,
    AlertPost,
    AlertStore,
    DeliveryError,
    Detections,
    Event,
    PostCache,
    breadth_alert,
    check_breadth,
    check_close,
    check_intraday,
    footer_for,
    parse_events,
    post_nonce,
    recover,
)
from services.config import ConfigError, Zones
from services.errors import InputError
from services.swing_levels import RULE, derived_answer

if TYPE_CHECKING:
    from app import SmallcapsBot

log = logging.getLogger(__name__)

COLOURS = {"up": GREEN, "down": RED, "neutral": BLUE}
MANAGE_CHANNELS = discord.Permissions(manage_channels=True)  # in the channel subscribed or unsubscribed
MANAGE_GUILD = discord.Permissions(manage_guild=True)  # the server's levels are guild-wide: a guild-wide right
GUILDS_AT_ONCE = 8  # close checks in flight: enough to keep the paced posts flowing while others read the database
Preset = Literal["derived", "article"]  # /iwm setlevels presets: services.swing_levels.RULE, or Zones()'s defaults


def alert_embed(post: AlertPost) -> discord.Embed:
    embed = discord.Embed(title=post.title, description=post.description, colour=COLOURS[post.colour])
    for name, value in post.fields:
        embed.add_field(name=name, value=value, inline=name != "Levels")
    embed.set_image(url="attachment://iwm-alert.png")
    embed.set_footer(text=post.footer)  # verbatim: recovery finds posts by it
    return embed


MUTE_HOURS = 24


class MuteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"smallcaps:mute:(?P<kind>[a-z_]+)"):
    """Under each alert: a moderator (Manage Channels in that channel) mutes this kind of event in the channel
    for 24 h (`AlertStore.mute`; delivery skips muted channels). Persistent: the kind is in the custom_id."""

    def __init__(self, kind: str) -> None:
        super().__init__(discord.ui.Button(label=f"Mute this event here for {MUTE_HOURS} h", emoji="🔕",
                                           style=discord.ButtonStyle.secondary, custom_id=f"smallcaps:mute:{kind}"))
        self.kind = kind

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> MuteButton:
        return cls(match["kind"])

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            if interaction.guild_id is None or interaction.channel_id is None:
                raise app_commands.NoPrivateMessage()
            if not interaction.permissions.manage_channels:
                raise app_commands.MissingPermissions(["manage_channels"])
            bot: SmallcapsBot = interaction.client  # type: ignore[assignment]
            until = await bot.resources.alerts.mute(interaction.guild_id, interaction.channel_id, self.kind,
                                                    MUTE_HOURS)
            await interaction.response.send_message(
                f"🔕 No `{self.kind}` alerts in <#{interaction.channel_id}> until "
                f"{discord.utils.format_dt(until, 'f')}.", ephemeral=True)
        except Exception as exc:
            await handle_command_error(interaction, exc, f"button smallcaps:mute:{self.kind}")


def mute_view(kind: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(MuteButton(kind))
    return view


class Alerts(IwmCog):
    def __init__(self, bot: SmallcapsBot) -> None:
        super().__init__(bot)
        self._last_close_checked: date | None = None
        self._last_breadth_checked: date | None = None

    @functools.cached_property
    def posts(self) -> PostCache:
        """Each event's post and chart, prepared once (made on first use: parsing commands needs no resources)."""
        return PostCache(self.bot.resources.market, self.bot.resources.renderer,
                         members_database=live_database(self.bot))

    @property
    def store(self) -> AlertStore:
        return self.bot.resources.alerts

    def background_loops(self) -> tuple[tasks.Loop[Any], ...]:
        return (self.watch,)

    # --- commands -----------------------------------------------------------------------------------------

    @app_commands.command(name="subscribe", description="Post IWM level alerts in a channel (Manage Channels)")
    @app_commands.describe(channel="Where to post (default: this channel)",
                           events="all, or some of: " + ", ".join(EVENT_KINDS),
                           role="A role to mention in each alert")
    @app_commands.autocomplete(events=event_choices)
    @in_guild()
    @requires_in_target(manage_channels=True)
    async def subscribe(self, interaction: discord.Interaction, channel: discord.TextChannel | None = None,
                        events: str = "all", role: discord.Role | None = None) -> None:
        target = require_in_channel(interaction, channel, MANAGE_CHANNELS, POSTING)
        if role is not None:
            require_mentionable(interaction, channel, role)
        kinds = parse_events(events)
        sub = await self.store.subscribe(guild_of(interaction), target, kinds, created_by=interaction.user.id,
                                         role_id=role.id if role else None)
        mention = f" and mention <@&{sub.role_id}>" if sub.role_id else ""
        await interaction.response.send_message(
            f"✅ <#{sub.channel_id}> will get: {', '.join(sub.events)}{mention}.", ephemeral=True)

    @app_commands.command(name="unsubscribe", description="Stop IWM level alerts in a channel (Manage Channels)")
    @app_commands.describe(channel="The channel (default: this channel)")
    @in_guild()
    @requires_in_target(manage_channels=True)
    async def unsubscribe(self, interaction: discord.Interaction,
                          channel: discord.TextChannel | None = None) -> None:
        target = require_in_channel(interaction, channel, MANAGE_CHANNELS)
        removed = await self.store.unsubscribe(guild_of(interaction), target)
        text = f"✅ <#{target}> will get no more alerts." if removed else f"<#{target}> had no alert subscription."
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="subscriptions", description="This server's alert subscriptions and levels")
    @in_guild()
    async def subscriptions(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        subs = await self.store.subscriptions(interaction.guild_id)
        zones = await self.store.levels(interaction.guild_id)
        embed = discord.Embed(title="IWM alert subscriptions", colour=GREY)
        lines = []
        for sub in subs:
            state = "active" if sub.enabled else f"disabled ({sub.disabled_reason})"
            role = f" · mentions <@&{sub.role_id}>" if sub.role_id else ""
            lines.append(f"<#{sub.channel_id}>: {', '.join(sub.events)}{role} · {state}"[:300])
        embed.description = "\n".join(lines) if lines else "No channel is subscribed. Use `/iwm subscribe`."
        embed.add_field(name="Levels", value=zones.describe())
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="setlevels", description="Set this server's IWM levels (Manage Server)")
    @app_commands.describe(preset="Adopt a set of levels instead of typing them: derived from the data, or the "
                                  "article's 200/205–220/240–245",
                           support="Support, e.g. 200", entry_low="Entry zone low, e.g. 205",
                           entry_high="Entry zone high, e.g. 220", resistance_low="Resistance zone low, e.g. 240",
                           resistance_high="Resistance zone high, e.g. 245")
    @in_guild()
    @requires_in_target(manage_guild=True)
    async def setlevels(self, interaction: discord.Interaction, preset: Preset | None = None,
                        support: float | None = None, entry_low: float | None = None,
                        entry_high: float | None = None, resistance_low: float | None = None,
                        resistance_high: float | None = None) -> None:
        require_guild_wide(interaction, MANAGE_GUILD)
        numbers = (support, entry_low, entry_high, resistance_low, resistance_high)
        given = [n for n in numbers if n is not None]
        if preset is not None and given:
            raise InputError("give a preset or the five levels, not both")
        if preset is None and len(given) < len(numbers):
            raise InputError("give a preset (derived or article) or all five levels: support, entry_low, "
                             "entry_high, resistance_low, resistance_high")
        method = ""
        if preset == "derived":
            await interaction.response.defer(ephemeral=True, thinking=True)  # market data may be fetched live
            derived = (await derived_answer(self.bot.resources.market)).zones
            zones = derived.as_zones()
            method = f" Derived from IWM's daily bars to {derived.as_of}: {derived.method} Rule: {RULE}"
        elif preset == "article":
            zones = Zones()
            method = " The article's levels (the bot's defaults), fixed: they do not follow the price."
        else:
            try:
                zones = Zones(*given)
            except ConfigError as exc:
                raise InputError(str(exc)) from None
        assert interaction.guild_id is not None
        await self.store.set_levels(interaction.guild_id, zones, updated_by=interaction.user.id)
        text = (f"✅ Levels set: support {zones.support:g}, entry {zones.entry_low:g}–{zones.entry_high:g}, "
                f"resistance {zones.resistance_low:g}–{zones.resistance_high:g}.{method}")
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    # --- delivery (the Discord side of services.alerts' send/find) -------------------------------------

    async def _channel(self, channel_id: int) -> discord.abc.Messageable:
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(channel_id)
            except discord.NotFound as exc:
                raise DeliveryError("not_found", "channel deleted") from exc
            except discord.Forbidden as exc:
                raise DeliveryError("forbidden", "cannot see the channel") from exc
        if not isinstance(channel, discord.abc.Messageable):
            raise DeliveryError("not_found", "not a text channel")
        return channel

    async def send(self, channel_id: int, role_id: int | None, event: Event, zones: Zones) -> int:
        channel = await self._channel(channel_id)
        prepared = await self.posts.get(event, zones)  # paced under Discord's global limit with every request: app.py
        try:
            message = await channel.send(
                content=f"<@&{role_id}>" if role_id else None,
                embed=alert_embed(prepared.post),
                file=png_file(prepared.chart, "iwm-alert.png"),
                nonce=post_nonce(channel_id, event.key),
                view=mute_view(event.kind),
                allowed_mentions=discord.AllowedMentions(everyone=False, users=False,
                                                         roles=[discord.Object(role_id)] if role_id else False),
            )
        except discord.Forbidden as exc:
            raise DeliveryError("forbidden", exc.text or "missing permissions") from exc
        except discord.NotFound as exc:
            raise DeliveryError("not_found", exc.text or "channel deleted") from exc
        except discord.HTTPException as exc:  # discord.py already waited out 429s and retried 5xx
            raise DeliveryError("rate_limited" if exc.status == 429 else "other", f"HTTP {exc.status}") from exc
        return message.id

    async def find(self, channel_id: int, key: str, since: datetime) -> int | None:
        """The bot's post with this event key's footer, looked for in every message since `since`, newest first,
        page by page (a busy channel may have hundreds since the post)."""
        channel = await self._channel(channel_id)
        footer = footer_for(key)
        try:
            async for message in channel.history(limit=None, after=since, oldest_first=False):
                if self.bot.user and message.author.id == self.bot.user.id and any(
                        e.footer.text == footer for e in message.embeds):
                    return message.id
        except discord.Forbidden as exc:
            raise DeliveryError("forbidden", "cannot read the channel history") from exc
        except discord.NotFound as exc:
            raise DeliveryError("not_found", "channel deleted") from exc
        return None

    # --- the watcher ------------------------------------------------------------------------------------

    def my_guild_ids(self, guild_ids: list[int]) -> list[int]:
        """Only the guilds this process serves (with several shard processes, each posts to its own)."""
        return [g for g in guild_ids if self.bot.get_guild(g) is not None]

    async def run_close_check(self, through: date) -> int:
        """Post the events of the session `through` to every subscribed channel of this process's guilds."""
        frame = (await self.bot.resources.market.bars("IWM")).frame
        memo: Detections = {}
        guilds = iter(self.my_guild_ids(await self.store.guild_ids()))
        posted = 0

        async def worker() -> None:
            # GUILDS_AT_ONCE workers take the guilds in turn, rather than a task per guild waiting on a semaphore:
            # 2,000 tasks live for the whole fan-out are garbage for every collection to walk.
            nonlocal posted
            for guild_id in guilds:
                results = await check_close(self.store, guild_id, frame, through, self.send, memo=memo)
                posted += sum(r.status == "sent" for r in results)

        await asyncio.gather(*(worker() for _ in range(GUILDS_AT_ONCE)))
        self._last_close_checked = through
        return posted

    async def run_breadth_check(self, through: date) -> int:
        """Post a `breadth` crossing of the session `through` once the member closes reach it (with a live
        provider, the daily member refresh brings them after the close); checked once per session."""
        frame = (await self.bot.resources.market.bars("IWM")).frame
        event = await breadth_alert(live_database(self.bot), frame, through)
        if event is None:
            return 0
        self._last_breadth_checked = through
        posted = 0
        for guild_id in self.my_guild_ids(await self.store.guild_ids()):
            results = await check_breadth(self.store, guild_id, event, self.send)
            posted += sum(r.status == "sent" for r in results)
        return posted

    async def run_intraday_check(self, day: date) -> int:
        bars = (await self.bot.resources.market.bars("IWM")).frame.dropna(subset=["close"])
        if len(bars) < 2 or bars.index[-1].date() != day:
            return 0  # no live bar for today (offline data, or the provider has not caught up)
        price, prev_close = float(bars["close"].iloc[-1]), float(bars["close"].iloc[-2])
        posted = 0
        for guild_id in self.my_guild_ids(await self.store.guild_ids()):
            results = await check_intraday(self.store, guild_id, day, price, prev_close, self.send)
            posted += sum(r.status == "sent" for r in results)
        return posted

    @tasks.loop(minutes=5)
    async def watch(self) -> None:
        """Every 5 minutes: while NYSE is open, look for intraday tests of a level; once after each close,
        confirm the day's events on the final bar."""
        now = datetime.now(UTC)
        try:
            if await asyncio.to_thread(market_calendar.is_open, now):
                await self.run_intraday_check(now.astimezone(market_calendar.NEW_YORK).date())
            session = await asyncio.to_thread(market_calendar.last_completed_session, now - timedelta(minutes=10))
            if session != self._last_close_checked:
                await self.run_close_check(session)
            if session != self._last_breadth_checked:
                await self.run_breadth_check(session)
        except Exception:
            log.exception("alerts: watcher check failed; next try in 5 minutes")

    @watch.before_loop
    async def before_watch(self) -> None:
        await self.bot.wait_until_ready()
        await market_calendar.warm_up()
        oldest = date.today() - timedelta(days=3)
        results = await recover(self.store, self.send, self.find, oldest=oldest,
                                guilds={guild.id for guild in self.bot.guilds})
        if results:
            log.info("alerts: recovery settled %d pending posts", len(results))


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Alerts(bot))

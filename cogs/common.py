"""What every cog shares: the `/iwm` group wiring, input parsing, embed and file helpers (errors: `cogs.errors`)."""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Awaitable, Callable
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands, tasks

from cogs.errors import Refused
from services.errors import InputError
from services.market import DataAge

if TYPE_CHECKING:
    from app import SmallcapsBot
    from services.storage import Database

log = logging.getLogger(__name__)

GREEN = discord.Colour(0x23A55A)
RED = discord.Colour(0xF23F43)
BLUE = discord.Colour(0x5865F2)
YELLOW = discord.Colour(0xF0B232)
GREY = discord.Colour(0x949BA4)


class IwmCog(commands.Cog):
    """A cog whose app commands are subcommands of the bot's one `/iwm` group.

    Discord allows 25 subcommands per group, shared by all features, so the group lives on the bot and each
    cog attaches its commands to it when loaded and detaches them when unloaded.
    """

    def __init__(self, bot: SmallcapsBot) -> None:
        self.bot = bot
        for command in self.__cog_app_commands__:
            command.parent = bot.iwm
            bot.iwm.add_command(command)

    def background_loops(self) -> tuple[tasks.Loop[Any], ...]:
        """The cog's `tasks` loops: started on load when the bot runs on Discord (not in the console), cancelled
        on unload. Each waits for the bot to be ready in its own `before_loop`."""
        return ()

    async def cog_load(self) -> None:
        if self.bot.background:
            for loop in self.background_loops():
                loop.start()

    async def cog_unload(self) -> None:
        for loop in self.background_loops():
            loop.cancel()
        for command in self.__cog_app_commands__:
            self.bot.iwm.remove_command(command.name)


Listener = TypeVar("Listener", bound=Callable[..., Awaitable[None]])
Decorated = TypeVar("Decorated")


def requires(**permissions: bool) -> Callable[[Decorated], Decorated]:
    """`app_commands.checks.has_permissions`, with the permissions recorded on its check (`permissions`), so
    `/iwm help` and the README say who may use a command from the command itself."""
    check = app_commands.checks.has_permissions(**permissions)

    def apply(func: Any) -> Any:
        func = check(func)
        checks: list[Any] = (func.checks if isinstance(func, app_commands.Command)
                             else func.__discord_app_commands_checks__)
        checks[-1].permissions = tuple(permissions)
        return func

    return apply


def requires_in_target(**permissions: bool) -> Callable[[Decorated], Decorated]:
    """For a command that checks the member's permissions in the channel it acts on, inside its callback
    (`require_in_channel`, `require_guild_wide`): records them for `/iwm help` and the README, checking nothing
    itself (a check here would test the channel the command was typed in)."""

    def apply(func: Any) -> Any:
        func.__smallcaps_permissions__ = tuple(permissions)
        return func

    return apply


def required_permissions(command: app_commands.Command[Any, ..., Any]) -> tuple[str, ...]:
    """The permissions a member needs for `command`: its checks made with `requires`, those its callback checks
    (`requires_in_target`), and Discord's default member permissions of its top-level command."""
    needed = [name for check in command.checks for name in getattr(check, "permissions", ())]
    needed += getattr(command.callback, "__smallcaps_permissions__", ())
    root = command.root_parent or command
    if root.default_permissions is not None:
        needed += [name for name, value in root.default_permissions if value]
    return tuple(dict.fromkeys(needed))


PRUNE_AT = 10_000  # members remembered before those whose wait is over are forgotten


class RenderCooldown:
    """One chart every `per` seconds per member in a server, shared by every command and button that draws one
    (`renders_chart`, `cogs.buttons.press`); faster, the member is told "try again in N s" ephemerally and
    nothing is computed or drawn. Every such command counts, also one the chart cache answers: the check runs
    before the command, so the member sees one rule, whatever others asked before. `per=0`: no limit."""

    def __init__(self, per: float) -> None:
        self.per = per
        self._buckets: dict[tuple[int | None, int], app_commands.Cooldown] = {}

    def check(self, interaction: discord.Interaction) -> None:
        """Count one chart for the member; CommandOnCooldown if they drew one less than `per` seconds ago."""
        if self.per <= 0:
            return
        key = (interaction.guild_id, interaction.user.id)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= PRUNE_AT:
                self._buckets = {k: b for k, b in self._buckets.items() if b.get_tokens() < b.rate}
            bucket = self._buckets[key] = app_commands.Cooldown(1, self.per)
        if retry_after := bucket.update_rate_limit():
            raise app_commands.CommandOnCooldown(bucket, retry_after)


def renders_chart() -> Callable[[Decorated], Decorated]:
    """A check for a command that draws a chart: the member's render cooldown (`RenderCooldown`)."""

    def predicate(interaction: discord.Interaction) -> bool:
        bot: SmallcapsBot = interaction.client  # type: ignore[assignment]
        bot.render_cooldown.check(interaction)
        return True

    return app_commands.check(predicate)


def in_guild() -> Callable[[Any], Any]:
    """A check for `/iwm` subcommands that need a server: `app_commands.guild_only()` only affects top-level
    commands (Discord hides them in DMs), so a subcommand must refuse a DM invocation itself."""

    def predicate(interaction: discord.Interaction) -> bool:
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage()
        return True

    return app_commands.check(predicate)


def safe_listener(listener: Listener) -> Listener:
    """Wrap a gateway event listener so an error is logged with its traceback and never reaches discord.py
    (one bad event must not disturb the others)."""

    @functools.wraps(listener)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            await listener(*args, **kwargs)
        except Exception:
            log.exception("listener %s failed", listener.__qualname__)

    return wrapper  # type: ignore[return-value]


async def add_iwm_cog(bot: SmallcapsBot, cog: IwmCog) -> None:
    """Add a cog whose commands hang under `/iwm`. discord.py registers each command's root with the tree when
    a cog is added; that root is the bot's own `/iwm` group, so `override` only re-registers the same object."""
    await bot.add_cog(cog, override=True)


def parse_day(text: str | None, option: str = "as_of") -> date | None:
    """A YYYY-MM-DD option; InputError with the expected format otherwise."""
    if text is None or not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{option} {text!r} is not a date: use YYYY-MM-DD, e.g. 2025-09-26") from None


def png_file(png: bytes, name: str) -> discord.File:
    return discord.File(io.BytesIO(png), filename=name)


def attach_chart(embed: discord.Embed, png: bytes, name: str) -> discord.File:
    """The chart as the file `name`, set as `embed`'s image: the one place a command writes its chart's name."""
    embed.set_image(url=f"attachment://{name}")
    return png_file(png, name)


def plural(n: int, word: str) -> str:
    """`1 vote`, `3 votes`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def guild_of(interaction: discord.Interaction) -> int:
    """The server a command runs in (after `in_guild()`, which refuses DMs)."""
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    return interaction.guild_id


def target_channel(interaction: discord.Interaction, channel: discord.abc.Snowflake | None) -> int:
    """The channel a command's `channel` option names, or the one it was run in (after `in_guild()`)."""
    target = channel.id if channel else interaction.channel_id
    assert interaction.guild_id is not None and target is not None
    return target


# --- permissions in the channel a command acts on ---------------------------------------------------------
#
# `interaction.permissions` are the member's rights in the channel the command was typed in. A command that acts
# on another channel (its `channel` option) checks the member's, and the bot's, rights in that channel instead;
# a guild-wide setting needs a guild-wide right. In the console the user is not a `discord.Member` (it is the
# operator, holding every permission): the interaction's own permissions (all) stand for every channel.

# What the bot needs to post its alerts and poll results (an embed with a chart) in a channel.
POSTING = discord.Permissions(view_channel=True, send_messages=True, embed_links=True, attach_files=True)
READING = discord.Permissions(view_channel=True, read_message_history=True)


def _names(permissions: list[str]) -> str:
    return ", ".join(p.replace("_", " ").title() for p in permissions)


def _missing(have: discord.Permissions, need: discord.Permissions) -> list[str]:
    return [name for name, wanted in need if wanted and not getattr(have, name)]


def channel_permissions(interaction: discord.Interaction, channel: discord.abc.GuildChannel | None
                        ) -> tuple[discord.Permissions, discord.Permissions]:
    """(the member's, the bot's) permissions in `channel` (None: the channel the command was typed in): Discord's
    own figures for that channel, `permissions_for` (cached roles and overwrites) for any other."""
    if channel is None or channel.id == interaction.channel_id:
        return interaction.permissions, interaction.app_permissions
    member = interaction.user
    if isinstance(member, discord.User):  # not a member of this server: no rights in its channels
        return discord.Permissions.none(), discord.Permissions.none()
    if not isinstance(member, discord.Member):  # the console's operator
        return interaction.permissions, interaction.app_permissions
    return channel.permissions_for(member), channel.permissions_for(channel.guild.me)


def require_in_channel(interaction: discord.Interaction, channel: discord.abc.GuildChannel | None,
                       member: discord.Permissions, bot: discord.Permissions | None = None) -> int:
    """The id of the channel a command acts on, once the member holds `member` there and the bot `bot`; otherwise
    a refusal (ephemeral, nothing changed) naming what is missing and where."""
    target = target_channel(interaction, channel)
    mine, bots = channel_permissions(interaction, channel)
    if missing := _missing(mine, member):
        if target == interaction.channel_id:
            raise app_commands.MissingPermissions(missing)
        raise Refused(f"You need the {_names(missing)} permission in <#{target}> to use this command on it.")
    if bot is not None and (missing := _missing(bots, bot)):
        raise Refused(f"I need the {_names(missing)} permission in <#{target}>: ask a server admin to grant it to "
                      "the bot (its role, or the channel's permissions), then try again.")
    return target


def require_mentionable(interaction: discord.Interaction, channel: discord.abc.GuildChannel | None,
                        role: discord.Role) -> None:
    """A role the bot will ping in `channel` for the member: mentionable by everyone, or the member may mention
    every role there (Mention Everyone); the bot itself then needs Mention Everyone for a role that is not."""
    mine, bots = channel_permissions(interaction, channel)
    target = target_channel(interaction, channel)
    if not (mine.mention_everyone or role.mentionable):
        raise Refused(f"You can't have <@&{role.id}> mentioned: the role is not mentionable and you lack the "
                      f"Mention Everyone permission in <#{target}>.")
    if not (bots.mention_everyone or role.mentionable):
        raise Refused(f"I can't mention <@&{role.id}> in <#{target}>: the role is not mentionable and I lack the "
                      "Mention Everyone permission there. Ask a server admin to grant it or make the role "
                      "mentionable.")


def require_guild_wide(interaction: discord.Interaction, need: discord.Permissions) -> None:
    """A guild-wide right, from the member's roles (`guild_permissions`): channel overwrites cannot grant it."""
    member = interaction.user
    have = member.guild_permissions if isinstance(member, discord.Member) else (
        discord.Permissions.none() if isinstance(member, discord.User) else interaction.permissions)
    if missing := _missing(have, need):
        raise app_commands.MissingPermissions(missing)


def readable_channels(interaction: discord.Interaction) -> frozenset[int] | None:
    """The server's channels the member can read now (View Channel and Read Message History); None in the
    console, where the operator reads everything. Threads are logged under their parent, so channels suffice."""
    member, guild = interaction.user, interaction.guild
    if not isinstance(member, discord.Member | discord.User):
        return None
    if guild is None or isinstance(member, discord.User):
        return frozenset()
    return frozenset(c.id for c in guild.channels if not _missing(c.permissions_for(member), READING))


def signed(value: float, digits: int = 2, suffix: str = "") -> str:
    return f"{value:+,.{digits}f}{suffix}"


def data_footer(source: str, as_of: date, stale: bool = False, extra: str = "", age: DataAge | None = None) -> str:
    """`Source: … · as of …`, marked STALE for a live-data fallback and with `age` when the data is behind."""
    text = f"Source: {source} · as of {as_of}"
    if stale:
        text += " · STALE (live data unavailable)"
    if age is not None and (behind := age.describe()):
        text += f" · ⚠️ {behind}"
    return f"{text} · {extra}" if extra else text


def age_line(age: DataAge | None) -> str:
    """The description line for data that is behind the last close ("" when it is not)."""
    behind = age.describe() if age is not None else None
    return f"⚠️ {behind}" if behind else ""


def live_database(bot: SmallcapsBot) -> Database | None:
    """The database the member answers (and the breadth alert) read the live member data from; None with the
    bundled provider."""
    return None if bot.settings.provider == "bundled" else bot.resources.database

"""`/iwm help`: every command, one line each, grouped by feature, with who may use it.

Made from the command tree (each command's name, options, description, and the permissions of its `requires`
checks), so it cannot drift from the commands; the README's command list is the same text (`help_markdown`,
compared by tests/test_help.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from cogs.common import GREY, IwmCog, add_iwm_cog, required_permissions

if TYPE_CHECKING:
    from app import SmallcapsBot

EVERYONE = "everyone"
NAMES = {"manage_guild": "Manage Server"}  # as Discord's client names the permission


def usage(command: app_commands.Command[Any, ..., Any]) -> str:
    """`/iwm levels [period] [as_of]`: required options bare, optional ones in brackets."""
    options = [p.name if p.required else f"[{p.name}]" for p in command.parameters]
    return " ".join([f"/{command.qualified_name}", *options])


def who(command: app_commands.Command[Any, ..., Any]) -> str:
    needed = required_permissions(command)
    names = [NAMES.get(name, name.replace("_", " ").title()) for name in needed]
    return " + ".join(names) if names else EVERYONE


def help_line(command: app_commands.Command[Any, ..., Any]) -> str:
    return f"`{usage(command)}` · {who(command)}: {command.description}"


def help_groups(bot: SmallcapsBot) -> list[tuple[str, list[str]]]:
    """(feature, its command lines), in the order the cogs were loaded and the commands defined."""
    groups = []
    for cog in bot.cogs.values():
        lines = [help_line(c) for c in cog.walk_app_commands() if isinstance(c, app_commands.Command)]
        if lines:
            groups.append((cog.qualified_name, lines))
    return groups


def help_markdown(groups: list[tuple[str, list[str]]]) -> str:
    """The README's command list: a heading per feature and its lines."""
    return "\n\n".join(f"**{name}**\n\n" + "\n".join(f"- {line}" for line in lines) for name, lines in groups)


def help_embed(groups: list[tuple[str, list[str]]]) -> discord.Embed:
    embed = discord.Embed(title="/iwm commands", colour=GREY, description=(
        "Every command, with who may use it (\"everyone\", or the permission it needs in the channel). "
        "Options in [brackets] are optional."))
    for name, lines in groups:
        embed.add_field(name=name, value="\n".join(lines)[:1024], inline=False)
    return embed


class Help(IwmCog):
    @app_commands.command(name="help", description="Every /iwm command, one line each, with who may use it")
    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(embed=help_embed(help_groups(self.bot)), ephemeral=True)


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Help(bot))

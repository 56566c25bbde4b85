"""Console mode: answer a slash command offline by running the same cog callback Discord runs.

The console builds the real bot and its cogs (without logging in), parses `/iwm levels period:1y` the way
Discord's client would (option names, types, choices and ranges come from the command tree itself), and hands
the callback a `ConsoleInteraction` that records what the bot would send.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import discord
from discord import AppCommandOptionType as OptionType
from discord import app_commands

from app import EXTENSIONS, Resources, SmallcapsBot, open_resources
from cogs.errors import handle_command_error, is_expected
from services.config import ConfigError, Settings, Zones
from services.errors import InputError

CONSOLE_GUILD_ID = 1
CONSOLE_CHANNEL_ID = 2
CONSOLE_USER_ID = 3
# The console's state (levels, subscriptions, schedules it sets) stays apart from the bot's `smallcaps.db`, so a
# try-out in the terminal never changes what the bot on Discord does; DATABASE_PATH chooses another file.
CONSOLE_DATABASE = Path("smallcaps-console.db")


@dataclass
class SentMessage:
    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None
    poll: discord.Poll | None = None
    ephemeral: bool = False

    def payload(self, out_dir: Path) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "content": self.content,
            "embeds": [embed.to_dict() for embed in self.embeds],
            "attachments": [{"filename": f.filename, "path": str(out_dir / f.filename)} for f in self.files],
            "components": self.view.to_components() if self.view else [],
            "ephemeral": self.ephemeral,
        }
        if self.poll is not None:
            payload["poll"] = self.poll._to_dict()
        return payload


def _message(content: str | None = None, *, embed: discord.Embed | None = None,
             embeds: list[discord.Embed] | None = None, file: discord.File | None = None,
             files: list[discord.File] | None = None, view: discord.ui.View | None = None,
             poll: discord.Poll | None = None, ephemeral: bool = False, **_: Any) -> SentMessage:
    return SentMessage(content, ([embed] if embed else []) + list(embeds or []),
                       ([file] if file else []) + list(files or []), view, poll, ephemeral)


class ConsoleResponse:
    def __init__(self, interaction: ConsoleInteraction) -> None:
        self._interaction = interaction
        self._done = False
        self.type: discord.InteractionResponseType | None = None

    def is_done(self) -> bool:
        return self._done

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        self._done = True
        self.type = discord.InteractionResponseType.deferred_channel_message

    async def send_message(self, content: str | None = None, **kwargs: Any) -> None:
        self._done = True
        self._interaction.sent.append(_message(content, **kwargs))


class ConsoleFollowup:
    def __init__(self, interaction: ConsoleInteraction) -> None:
        self._interaction = interaction

    async def send(self, content: str | None = None, **kwargs: Any) -> None:
        self._interaction.sent.append(_message(content, **kwargs))


class ConsoleInteraction:
    """Stands in for `discord.Interaction` in the console: the operator, with every permission, in a
    console guild and channel of their own."""

    def __init__(self, bot: SmallcapsBot) -> None:
        self.client = bot
        self.guild_id = CONSOLE_GUILD_ID
        self.channel_id = CONSOLE_CHANNEL_ID
        self.guild = None
        self.user = discord.Object(CONSOLE_USER_ID)
        self.permissions = discord.Permissions.all()
        self.app_permissions = discord.Permissions.all()
        self.filesize_limit = 10 * 1024 * 1024  # Discord's attachment limit for a server without boosts
        self.response = ConsoleResponse(self)
        self.followup = ConsoleFollowup(self)
        self.sent: list[SentMessage] = []

    async def delete_original_response(self) -> None:
        """Nothing to delete: the console shows no "thinking" placeholder."""


def _leaf_commands(group: app_commands.Group) -> list[str]:
    names = []
    for child in group.commands:
        if isinstance(child, app_commands.Group):
            names += _leaf_commands(child)
        else:
            names.append(f"/{child.qualified_name}")
    return names


def _convert(param: app_commands.Parameter, raw: str) -> Any:
    """Check and convert one option value as Discord's client would before sending it."""
    name = param.display_name
    if param.choices:
        values = {str(c.value): c.value for c in param.choices}
        if raw not in values:
            raise InputError(f"{name}: {raw!r} is not one of {', '.join(values)}")
        return values[raw]
    try:
        if param.type is OptionType.integer:
            value: Any = int(raw)
        elif param.type is OptionType.number:
            value = float(raw)
        elif param.type is OptionType.boolean:
            if raw.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError
            value = raw.lower() in ("true", "yes", "1")
        elif param.type is OptionType.string:
            value = raw
            if param.min_value is not None and len(raw) < param.min_value:
                raise InputError(f"{name}: at least {param.min_value} characters")
            if param.max_value is not None and len(raw) > param.max_value:
                raise InputError(f"{name}: at most {param.max_value} characters")
            return value
        elif param.type in (OptionType.channel, OptionType.role, OptionType.user, OptionType.mentionable):
            return discord.Object(int(raw.strip("<#@&!>")))
        else:
            raise InputError(f"{name}: {param.type.name} options are not supported in the console")
    except ValueError:
        raise InputError(f"{name}: {raw!r} is not a valid {param.type.name}") from None
    if param.min_value is not None and value < param.min_value:
        raise InputError(f"{name}: must be at least {param.min_value}")
    if param.max_value is not None and value > param.max_value:
        raise InputError(f"{name}: must be at most {param.max_value}")
    return value


def parse_command(tree: app_commands.CommandTree, text: str) -> tuple[app_commands.Command, dict[str, Any]]:
    """`/iwm levels period:1y` -> (the command, converted keyword arguments); InputError listing what is valid."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise InputError(f"cannot read {text!r}: {exc}") from None
    words = [t for t in tokens if ":" not in t]
    options = [t for t in tokens if ":" in t]
    roots = {f"/{c.name}": c for c in tree.get_commands()}
    valid = [name for c in roots.values() for name in
             (_leaf_commands(c) if isinstance(c, app_commands.Group) else [f"/{c.name}"])]
    listing = "valid commands:\n  " + "\n  ".join(sorted(valid))
    if not words or not words[0].startswith("/") or words[0] not in roots:
        raise InputError(f"unknown command {text!r}; {listing}")
    node: app_commands.Command[Any, ..., Any] | app_commands.Group | app_commands.ContextMenu = roots[words[0]]
    for word in words[1:]:
        child = node.get_command(word) if isinstance(node, app_commands.Group) else None
        if child is None:
            raise InputError(f"unknown command {text!r}; {listing}")
        node = child
    if not isinstance(node, app_commands.Command):
        raise InputError(f"{text!r} needs a subcommand; {listing}")
    params = {p.display_name: p for p in node.parameters}
    usage = f"/{node.qualified_name} " + " ".join(
        f"{p.display_name}:<{p.type.name}>" if p.required else f"[{p.display_name}:<{p.type.name}>]"
        for p in node.parameters)
    kwargs: dict[str, Any] = {}
    for option in options:
        name, _, raw = option.partition(":")
        if name not in params:
            raise InputError(f"unknown option {name!r}; usage: {usage}")
        kwargs[params[name].name] = _convert(params[name], raw)
    missing = [p.display_name for p in node.parameters if p.required and p.name not in kwargs]
    if missing:
        raise InputError(f"missing option {', '.join(missing)}; usage: {usage}")
    return node, kwargs


def describe(message: SentMessage, out_dir: Path) -> str:
    """A message as readable text."""
    lines = ["(only you can see this)"] if message.ephemeral else []
    if message.content:
        lines.append(message.content)
    for embed in message.embeds:
        if embed.title:
            lines.append(f"== {embed.title} ==")
        if embed.description:
            lines.append(embed.description)
        for embed_field in embed.fields:
            lines.append(f"\n[{embed_field.name}]\n{embed_field.value}")
        if embed.footer.text:
            lines.append(f"\n-- {embed.footer.text}")
    if message.poll is not None:
        lines.append(f"[poll] {message.poll.question}: " + " / ".join(a.text for a in message.poll.answers))
    for file in message.files:
        lines.append(f"[attachment] {out_dir / file.filename}")
    if message.view is not None:
        items = [getattr(item, "item", item) for item in message.view.children]  # a DynamicItem wraps its button
        labels = [getattr(item, "label", None) or type(item).__name__ for item in items]
        lines.append("[buttons] " + " | ".join(str(label) for label in labels))
    return "\n".join(lines)


async def answer(resources: Resources, text: str) -> tuple[int, list[SentMessage]]:
    """Run one command; (exit status, messages the bot sent). Status 2: unknown command or bad input."""
    bot = SmallcapsBot(resources.settings, resources, background=False)
    for extension in EXTENSIONS:
        await bot.load_extension(extension)
    interaction = ConsoleInteraction(bot)
    status = 0
    try:
        try:
            command, kwargs = parse_command(bot.tree, text)
        except InputError as exc:
            return 2, [SentMessage(content=f"⚠️ {exc}", ephemeral=True)]
        try:
            await command.callback(command.binding, interaction, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:
            await handle_command_error(interaction, exc, text)  # type: ignore[arg-type]
            status = 2 if is_expected(exc) else 1
    finally:
        for extension in EXTENSIONS:
            await bot.unload_extension(extension)
    return status, interaction.sent


def save_attachments(message: SentMessage, out: Path) -> None:
    for f in message.files:
        out.mkdir(parents=True, exist_ok=True)
        f.fp.seek(0)
        (out / f.filename).write_bytes(f.fp.read())


def console_settings(settings: Settings, env: Mapping[str, str]) -> Settings:
    """The console's settings: its own database (CONSOLE_DATABASE) unless DATABASE_PATH names one."""
    return settings if env.get("DATABASE_PATH", "").strip() else replace(
        settings, database_path=CONSOLE_DATABASE)


async def run_console(settings: Settings, text: str, *, as_json: bool, out_dir: str) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(out_dir)
    settings = console_settings(settings, os.environ)
    async with open_resources(settings, render_processes=False) as resources:
        before = await resources.database.run(lambda d: d.total_changes)
        status, messages = await answer(resources, text)
        changed = await resources.database.run(lambda d: d.total_changes) != before
    if changed:  # rows written: say where, so nobody looks for them in the bot's database
        if settings.database_url:
            place, where = f"PostgreSQL {resources.database.location}", "DATABASE_URL"
        else:
            place, where = str(settings.database_path), (
                "the console's own database; DATABASE_PATH chooses another"
                if settings.database_path == CONSOLE_DATABASE else "DATABASE_PATH")
        print(f"state saved to {place} ({where})", file=sys.stderr)
    for message in messages:
        save_attachments(message, out)
        stream = sys.stdout if status == 0 else sys.stderr
        print(json.dumps(message.payload(out), ensure_ascii=False) if as_json else describe(message, out),
              file=stream)
    return status


async def run_replay_command(settings: Settings, start: str, end: str, levels: str | None) -> int:
    from services.alerts import run_replay

    try:
        zones = Zones.parse(levels) if levels else settings.zones
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except (ConfigError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    async with open_resources(settings, render_processes=False) as resources:
        try:
            print(await run_replay(resources.market, first, last, zones))
        except InputError as exc:
            print(f"replay: {exc}", file=sys.stderr)
            return 2
    return 0

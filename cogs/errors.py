"""The one error policy for app commands: what the member sees, what is logged. The bot's command tree
(`app.SmallcapsTree.on_error`) and the console both hand every failed command to `handle_command_error`.

Order of handling, first match wins (`error_text`):

1. `CommandInvokeError` is unwrapped: the exception the callback raised is the one judged.
2. `InputError` (a bad option value, refused by a service): "⚠️ <what is wrong>".
3. Check failures: `Refused` ("⛔ <what is missing, where>"), `MissingPermissions` ("⛔ You need the ...
   permission"), `NoPrivateMessage` ("⛔ only in a server"), `CommandOnCooldown` ("⏳ try again in Ns"), any
   other `CheckFailure` ("⛔ can't use this here").
4. `ProviderError` (no live source answered and no cached copy exists): "⚠️ Market data is unavailable".
5. Anything else is a bug: "❌ Something went wrong on our side", never the exception's own text.

The member's message is always ephemeral (after a public defer, the "thinking" placeholder is deleted first).
Logging (`is_expected`): 2 and 3 are the member's input or permissions, logged at INFO without a traceback;
4 and 5 are logged at ERROR with the traceback. If the error message itself cannot be delivered (Discord answers
with an HTTP error), that is logged as a WARNING and swallowed: an error handler must not raise.
"""

from __future__ import annotations

import logging
import math

import discord
from discord import app_commands
from discord.ext import commands

from services.errors import InputError
from services.http import ProviderError

log = logging.getLogger("smallcaps")  # the name the bot's own log lines carry (start-up, sync, errors)


class Refused(app_commands.CheckFailure):
    """A permission refusal whose text names what is missing and where (`cogs.common` raises it for the channel
    a command acts on, when that is not the channel it was typed in, and for the bot's own permissions)."""


def error_text(error: Exception) -> str:
    """The short message a member sees for a failed command (the full traceback goes to the log)."""
    if isinstance(error, app_commands.CommandInvokeError | commands.CommandInvokeError):
        error = error.original
    if isinstance(error, InputError):
        return f"⚠️ {error}"
    if isinstance(error, Refused):
        return f"⛔ {error}"
    if isinstance(error, app_commands.MissingPermissions):
        needed = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"⛔ You need the {needed} permission to use this command."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "⛔ This command only works in a server."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"⏳ Slow down: try again in {math.ceil(error.retry_after)}s."
    if isinstance(error, app_commands.CheckFailure):
        return "⛔ You can't use this command here."
    if isinstance(error, ProviderError):
        return "⚠️ Market data is unavailable right now and no cached copy exists. Try again later."
    return "❌ Something went wrong on our side. It has been logged; try again in a moment."


def is_expected(error: Exception) -> bool:
    """Errors that are the member's input or permissions, not bugs: logged without a traceback."""
    original = getattr(error, "original", error)
    return isinstance(original, InputError) or isinstance(error, app_commands.CheckFailure)


async def reply_error(interaction: discord.Interaction, error: Exception) -> None:
    """Answer a failed command with a short message only its author sees.

    After a (public) defer, Discord turns the first followup into the "thinking" message, ignoring the
    ephemeral flag; so that placeholder is deleted first and the error follows as a new, ephemeral message.
    """
    text = error_text(error)
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True)
        return
    if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            log.debug("could not delete the deferred response", exc_info=True)
    await interaction.followup.send(text, ephemeral=True)


async def handle_command_error(interaction: discord.Interaction, error: Exception, command: str) -> None:
    """Log a failed command (`command` names it in the log line) and answer its author, as the docstring
    above orders it; never raises for an undeliverable answer."""
    if is_expected(error):
        log.info("%s refused: %s", command, error_text(error))
    else:
        log.error("%s failed", command, exc_info=error)
    try:
        await reply_error(interaction, error)
    except discord.HTTPException:
        log.warning("could not deliver the error message for %s", command, exc_info=True)

"""Autocomplete for options whose valid values come from data: trading days (`as_of`, `since`; the member closes'
sessions for `/iwm breadth`), `compare`'s symbols, alert event kinds.

Discord gives an autocomplete answer 3 seconds, so these read only what is in memory or bundled (the bars last
fetched, the bundled history), never the network. Choices only help: the value a member submits is checked by
the command as if typed (`parse_day`, `parse_symbols`, `parse_events`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from cogs.common import live_database
from services.alerts import EVENT_KINDS
from services.compare import SYMBOLS
from services.members import member_data

if TYPE_CHECKING:
    from app import SmallcapsBot

MAX_CHOICES = 25  # Discord's limit for one autocomplete answer


def recent_days(days: Sequence[str], typed: str) -> list[str]:
    """The most recent `days` (ISO dates, oldest first) that start with what was typed, newest first."""
    prefix = typed.strip()
    matching = [d for d in reversed(days) if d.startswith(prefix)]
    return matching[:MAX_CHOICES]


def list_completions(names: Iterable[str], typed: str, separator: str = ",") -> list[str]:
    """Completions of the last item of a comma-separated list: `"IWM,s"` -> `"IWM,SPY"`, ... (names already
    in the list are not offered again)."""
    canonical = {n.upper(): n for n in names}
    parts = re.split(r"[\s,;]+", typed)
    done = [canonical.get(p.upper().lstrip("^"), p) for p in parts[:-1] if p]
    last = parts[-1].upper().lstrip("^")
    head = separator.join(done)
    choices = [f"{head}{separator}{n}" if head else n for key, n in canonical.items()
               if key.startswith(last) and n not in done]
    return choices[:MAX_CHOICES]


def _choices(values: Iterable[str]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=v, value=v) for v in values]


async def session_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Recent IWM sessions (from the bars in memory, else the bundled history) starting with what was typed."""
    bot: SmallcapsBot = interaction.client  # type: ignore[assignment]
    bars = await bot.resources.market.cached_bars("IWM")
    days = [d.isoformat() for d in bars.frame.index.date]
    return _choices(recent_days(days, current))


async def member_session_choices(interaction: discord.Interaction,
                                 current: str) -> list[app_commands.Choice[str]]:
    """Sessions of the member closes `/iwm breadth` answers from (the bundled ones, and the live ones after them
    with a live provider) starting with what was typed."""
    bot: SmallcapsBot = interaction.client  # type: ignore[assignment]
    data, _ = await member_data(live_database(bot))  # built once per refresh, then shared
    return _choices(recent_days([str(day) for day in data.dates], current))


async def symbol_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """`compare`'s symbols, completing the last one typed."""
    return _choices(list_completions(SYMBOLS, current))


async def event_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Alert event kinds (and `all`), completing the last one typed."""
    return _choices(list_completions(("all", *EVENT_KINDS), current))

"""Buttons under chart answers: one per chart period and a refresh, persistent across restarts.

Each button is a `discord.ui.DynamicItem` whose custom_id carries the whole state, so a press on a message from
before a restart still works (the class is registered once at start-up, `app.SmallcapsBot.setup_hook`):

    smallcaps:<command>:<period>:<asked>:<shown>

`asked` is the as_of the member asked for (`live`: the latest data), `shown` the day the answer shows (the data's
last session on or before `asked`), or `refresh` on the refresh button. A period button re-renders only the chart,
as of `shown`, and keeps the embed, where the period changes only the chart (levels, breadth); where it changes the
embed too (sectors' return period), it builds the answer as of `shown`. Refresh builds the whole answer again
from the data as it is now. Pressed by the member the answer was for, the message is edited in place; by anyone
else, they get their own ephemeral copy. The button of the period shown is disabled and highlighted.

A chart command registers its answer here (`register_chart`) when its cog module is imported.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import discord

from cogs.common import attach_chart
from cogs.errors import handle_command_error

if TYPE_CHECKING:
    from app import SmallcapsBot

LIVE, REFRESH = "live", "refresh"
DAY = r"\d{4}-\d{2}-\d{2}"
CHART_TEMPLATE = (rf"smallcaps:(?P<command>[a-z]+):(?P<period>[0-9a-z]+):(?P<asked>{LIVE}|{DAY}):"
                  rf"(?P<shown>{REFRESH}|{DAY})")


@dataclass(frozen=True)
class ChartState:
    """What a chart button carries: the command, the period it shows, the day asked (None: live) and the day
    the answer shows (None on the refresh button)."""

    command: str
    period: str
    asked: date | None
    shown: date | None

    @property
    def custom_id(self) -> str:
        asked = self.asked.isoformat() if self.asked else LIVE
        shown = self.shown.isoformat() if self.shown else REFRESH
        return f"smallcaps:{self.command}:{self.period}:{asked}:{shown}"

    @classmethod
    def parse(cls, match: re.Match[str]) -> ChartState:
        """The state in a matched custom_id; ValueError for a day that is not a date."""
        asked, shown = match["asked"], match["shown"]
        return cls(match["command"], match["period"], None if asked == LIVE else date.fromisoformat(asked),
                   None if shown == REFRESH else date.fromisoformat(shown))


@dataclass(frozen=True)
class ChartAnswer:
    embed: discord.Embed
    png: bytes
    shown: date  # the data's day the answer shows


@dataclass(frozen=True)
class ChartCommand:
    """A chart command's buttons: its periods, its chart's file name, and how to answer.

    `answer(bot, guild_id, period, as_of)` builds the whole answer (the command itself and refresh use it);
    `chart(bot, guild_id, period, shown)` renders only the chart for a period as of the day shown (None: the
    period changes the embed too, so a period button builds the whole answer as of the day shown);
    `latest(bot)` is the newest day the data has now, to tell a live answer that newer data exists (None: the
    answer's day is not one series' last day, so there is no such note).
    """

    name: str
    periods: tuple[str, ...]
    filename: str
    answer: Callable[[SmallcapsBot, int | None, str, date | None], Awaitable[ChartAnswer]]
    chart: Callable[[SmallcapsBot, int | None, str, date], Awaitable[bytes]] | None = None
    latest: Callable[[SmallcapsBot], Awaitable[date]] | None = None

    def view(self, period: str, asked: date | None, shown: date) -> discord.ui.View:
        """The period buttons (the one shown disabled and highlighted) on the first row, refresh on the second."""
        view = discord.ui.View(timeout=None)
        for choice in self.periods:
            current = choice == period
            view.add_item(ChartButton(ChartState(self.name, choice, asked, shown), label=choice, current=current))
        view.add_item(ChartButton(ChartState(self.name, period, asked, None), label="Refresh", current=False))
        return view

    def message(self, answer: ChartAnswer, period: str, asked: date | None) -> dict[str, Any]:
        """The keyword arguments of the message that carries `answer`: embed, chart, buttons."""
        return {"embed": answer.embed, "file": attach_chart(answer.embed, answer.png, self.filename),
                "view": self.view(period, asked, answer.shown)}


CHARTS: dict[str, ChartCommand] = {}


def register_chart(command: ChartCommand) -> ChartCommand:
    CHARTS[command.name] = command
    return command


def answered_for(interaction: discord.Interaction) -> bool:
    """Whether the member pressing a button is the one the message answered (its interaction's user)."""
    message = interaction.message
    metadata = message.interaction_metadata if message is not None else None
    return metadata is not None and metadata.user.id == interaction.user.id


class ChartButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CHART_TEMPLATE):
    def __init__(self, state: ChartState, *, label: str | None = None, current: bool = False) -> None:
        refresh = state.shown is None
        style = discord.ButtonStyle.primary if current else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(
            label=label or ("Refresh" if refresh else state.period), style=style, custom_id=state.custom_id,
            disabled=current, emoji="🔄" if refresh else None, row=1 if refresh else 0))
        self.state = state

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> ChartButton:
        return cls(ChartState.parse(match))

    async def callback(self, interaction: discord.Interaction) -> None:
        name = f"button {self.state.custom_id}"
        try:
            await press(interaction, self.state)
        except Exception as exc:  # the commands' one error policy: a short ephemeral message, logged
            await handle_command_error(interaction, exc, name)


async def press(interaction: discord.Interaction, state: ChartState) -> None:
    """Answer a chart button: the new period's chart (or, for refresh, the whole answer again), edited in place
    for the member the message answered, as an ephemeral copy for anyone else."""
    command = CHARTS.get(state.command)
    if command is None or state.period not in command.periods:
        await interaction.response.send_message("⚠️ This button belongs to an answer the bot no longer gives: "
                                                "run the command again.", ephemeral=True)
        return
    bot: SmallcapsBot = interaction.client  # type: ignore[assignment]
    bot.render_cooldown.check(interaction)  # a press draws a chart too: the same per-member cooldown as commands
    in_place = answered_for(interaction)
    if in_place:
        await interaction.response.defer()  # an update of the message that carries the button
    else:
        await interaction.response.defer(ephemeral=True, thinking=True)
    note = None
    if state.shown is None:
        answer = await command.answer(bot, interaction.guild_id, state.period, state.asked)
    else:
        embeds = interaction.message.embeds if interaction.message else []
        if command.chart is None or not embeds:  # the embed changes too (or is gone): the answer as of that day
            answer = await command.answer(bot, interaction.guild_id, state.period, state.shown)
        else:
            png = await command.chart(bot, interaction.guild_id, state.period, state.shown)
            answer = ChartAnswer(embeds[0].copy(), png, state.shown)
        if state.asked is None and command.latest and (latest := await command.latest(bot)) > state.shown:
            note = f"ℹ️ Newer data than this answer: {latest}. Press Refresh for it."
    message = command.message(answer, state.period, state.asked)
    if in_place:
        await interaction.edit_original_response(content=note, embed=message["embed"],
                                                 attachments=[message["file"]], view=message["view"])
    else:
        await interaction.followup.send(note or discord.utils.MISSING, ephemeral=True, **message)

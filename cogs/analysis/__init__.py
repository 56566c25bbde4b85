"""`/iwm valuation`, `/iwm sectors`, `/iwm breadth`, `/iwm rates`, `/iwm compare`: the analysis commands, each an
embed + chart.

Every figure is shown with its source and date; a missing one is "n/a" with the reason, never estimated, and data
that is a stale fallback is marked ⚠️. Lists that could outgrow Discord's embed limits are cut on purpose
(`lines_within`), saying how many entries were left out.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, time
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import discord
from discord import app_commands
from discord.ext import tasks

from cogs.analysis._breadth import breadth_embed
from cogs.analysis._compare import compare_embed
from cogs.analysis._format import AS_OF_HELP, lines_within, not_future
from cogs.analysis._rates import rates_embed
from cogs.analysis._sectors import sectors_embed
from cogs.analysis._valuation import valuation_embed
from cogs.autocomplete import member_session_choices, session_choices, symbol_choices
from cogs.buttons import ChartAnswer, ChartCommand, register_chart
from cogs.common import IwmCog, add_iwm_cog, attach_chart, live_database, parse_day, renders_chart
from services import market_calendar
from services.breadth import breadth_answer, check_breadth_input
from services.compare import compare_answer, parse_symbols
from services.errors import InputError
from services.members import daily_refresh, load_member_data
from services.rates import rates_answer
from services.sectors import sectors_answer
from services.valuation import valuation_answer

if TYPE_CHECKING:
    from app import SmallcapsBot

__all__ = ["Analysis", "lines_within", "sectors_embed", "setup"]

SectorPeriod = Literal["1m", "3m", "ytd", "1y"]
BreadthPeriod = Literal["3mo", "6mo", "1y", "2y", "max"]
REFRESH_AT = time(17, 30, tzinfo=ZoneInfo("America/New_York"))  # the member refresh: after the 16:00 close

log = logging.getLogger(__name__)


async def breadth_chart_answer(bot: SmallcapsBot, guild_id: int | None, period: str,
                               day: date | None) -> ChartAnswer:
    res = bot.resources
    answer, png = await breadth_answer(res.market, res.renderer, period, day, live_database(bot))
    return ChartAnswer(breadth_embed(answer), png, answer.report.as_of)


async def breadth_chart(bot: SmallcapsBot, guild_id: int | None, period: str, shown: date) -> bytes:
    """The chart for another window as of the day an answer shows (from the member data in memory)."""
    return (await breadth_chart_answer(bot, guild_id, period, shown)).png


async def latest_breadth(bot: SmallcapsBot) -> date:
    data = await asyncio.to_thread(load_member_data)
    return data.day(data.session())


async def sectors_chart_answer(bot: SmallcapsBot, guild_id: int | None, period: str,
                               day: date | None) -> ChartAnswer:
    res = bot.resources
    report, png = await sectors_answer(res.market, res.documents, res.renderer, period, day,
                                       holdings_url=res.settings.holdings_url, database=live_database(bot))
    return ChartAnswer(sectors_embed(report, await res.market.age(report.as_of, day)), png, report.as_of)


# The sectors' period ranks the funds (the embed changes too); their data ends on different days: no "newer" note.
SECTORS_CHART = register_chart(ChartCommand("sectors", ("1m", "3m", "ytd", "1y"), "iwm-sectors.png",
                                            sectors_chart_answer))
BREADTH_CHART = register_chart(ChartCommand("breadth", ("3mo", "6mo", "1y", "2y", "max"), "iwm-breadth.png",
                                            breadth_chart_answer, breadth_chart, latest_breadth))


class Analysis(IwmCog):
    """Thin callbacks: check the options, defer, ask the service, answer with the embed and the chart."""

    def background_loops(self) -> tuple[tasks.Loop[Any], ...]:
        return () if self.bot.settings.provider == "bundled" else (self.member_refresh,)

    @tasks.loop(time=REFRESH_AT)
    async def member_refresh(self) -> None:
        """Once a day after the close (live providers only): archive the IWM holdings file, refresh the members'
        fundamentals snapshot (services.members.daily_refresh); a failed run is resumed the next day."""
        res = self.bot.resources
        try:
            day = await asyncio.to_thread(market_calendar.last_session_now)
            data = await asyncio.to_thread(load_member_data)
            await daily_refresh(res.documents, res.database, list(data.members.index), day,
                                holdings_url=res.settings.holdings_url, yahoo_base_url=res.settings.yahoo_base_url)
        except Exception:
            log.exception("member refresh failed; next try tomorrow after the close")

    @member_refresh.before_loop
    async def before_member_refresh(self) -> None:
        await self.bot.wait_until_ready()

    @app_commands.command(name="valuation", description="Russell 2000 vs S&P 500 valuation: P/E, forward P/E, "
                                                        "P/S, P/B, each with its source and date")
    @app_commands.describe(as_of=AS_OF_HELP)
    @app_commands.autocomplete(as_of=session_choices)
    @renders_chart()
    async def valuation(self, interaction: discord.Interaction, as_of: str | None = None) -> None:
        day = not_future(parse_day(as_of))
        await interaction.response.defer(thinking=True)
        res = self.bot.resources
        settings = res.settings
        report, png = await valuation_answer(
            res.documents, res.renderer, day,
            yahoo_base_url=settings.yahoo_base_url if settings.provider == "yahoo" else None,
            operator_file=settings.valuation_file, database=live_database(self.bot),
        )
        embed = valuation_embed(report)
        await interaction.followup.send(embed=embed, file=attach_chart(embed, png, "iwm-valuation.png"))

    @app_commands.command(name="sectors", description="IWM by sector: weights, sector funds vs IWM, leaders, "
                                                      "laggards, rate sensitivity")
    @app_commands.describe(period="Return period for the ranking and chart (default 3m)", as_of=AS_OF_HELP)
    @app_commands.autocomplete(as_of=session_choices)
    @renders_chart()
    async def sectors(self, interaction: discord.Interaction, period: SectorPeriod = "3m",
                      as_of: str | None = None) -> None:
        day = not_future(parse_day(as_of))
        await interaction.response.defer(thinking=True)
        answer = await sectors_chart_answer(self.bot, interaction.guild_id, period, day)
        await interaction.followup.send(**SECTORS_CHART.message(answer, period, day))

    @app_commands.command(name="breadth", description="Russell 2000 breadth from its members: % above 50/200-day "
                                                      "averages, A/D line, 52-week highs/lows")
    @app_commands.describe(period="Chart window (default 1y)", as_of=AS_OF_HELP)
    @app_commands.autocomplete(as_of=member_session_choices)
    @renders_chart()
    async def breadth(self, interaction: discord.Interaction, period: BreadthPeriod = "1y",
                      as_of: str | None = None) -> None:
        day = not_future(parse_day(as_of))
        # refused before deferring: the answer is one ephemeral message
        await check_breadth_input(period, day, live_database(self.bot))
        await interaction.response.defer(thinking=True)
        answer = await breadth_chart_answer(self.bot, interaction.guild_id, period, day)
        await interaction.followup.send(**BREADTH_CHART.message(answer, period, day))

    @app_commands.command(name="rates", description="Fed funds rate and how IWM did vs SPY after the first cut "
                                                    "of each easing cycle")
    @app_commands.describe(as_of=AS_OF_HELP)
    @app_commands.autocomplete(as_of=session_choices)
    @renders_chart()
    async def rates(self, interaction: discord.Interaction, as_of: str | None = None) -> None:
        day = not_future(parse_day(as_of))
        await interaction.response.defer(thinking=True)
        res = self.bot.resources
        report, png = await rates_answer(res.market, res.documents, res.renderer, day,
                                         fred_base_url=res.settings.fred_base_url)
        embed = rates_embed(report, await res.market.age(report.as_of, day))
        await interaction.followup.send(embed=embed, file=attach_chart(embed, png, "iwm-rates.png"))

    @app_commands.command(name="compare", description="Total return of IWM vs SPY and QQQ (or RUT) since a date, "
                                                      "start = 100")
    @app_commands.describe(
        since="Start day, YYYY-MM-DD (default: IWM's November 2021 closing high)",
        symbols="Comma-separated, from IWM, SPY, QQQ, RUT (default IWM,SPY,QQQ)",
        as_of="End day, YYYY-MM-DD (default: latest data)",
    )
    @app_commands.autocomplete(since=session_choices, symbols=symbol_choices, as_of=session_choices)
    @renders_chart()
    async def compare(self, interaction: discord.Interaction, since: str | None = None,
                      symbols: app_commands.Range[str, 1, 50] | None = None, as_of: str | None = None) -> None:
        start = not_future(parse_day(since, "since"), "since")
        end = not_future(parse_day(as_of))
        if start and end and start >= end:
            raise InputError(f"since {start} must be before as_of {end}")
        wanted = parse_symbols(symbols)
        await interaction.response.defer(thinking=True)
        res = self.bot.resources
        report, png = await compare_answer(res.market, res.renderer, wanted, start, end)
        ends = [s.data_end for s in report.series if s.data_end is not None]
        embed = compare_embed(report, await res.market.age(max(ends), end) if ends else None)
        await interaction.followup.send(embed=embed, file=attach_chart(embed, png, "iwm-compare.png"))


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Analysis(bot))

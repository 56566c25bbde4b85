"""`/iwm levels`: IWM against the levels members watch."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands

from cogs.autocomplete import session_choices
from cogs.buttons import ChartAnswer, ChartCommand, register_chart
from cogs.common import GREEN, RED, YELLOW, IwmCog, add_iwm_cog, age_line, data_footer, parse_day, renders_chart, signed
from services.errors import InputError
from services.levels import LevelsReport, levels_answer
from services.market import DataAge
from services.swing_levels import RULE, DerivedLevels, derived_answer

if TYPE_CHECKING:
    from app import SmallcapsBot

Period = Literal["3mo", "6mo", "1y", "2y", "5y", "max"]


async def levels_chart_answer(bot: SmallcapsBot, guild_id: int | None, period: str, day: date | None) -> ChartAnswer:
    """The whole `/iwm levels` answer: the report, the derived levels, the embed and the chart."""
    res = bot.resources
    zones = await res.zones(guild_id)
    report, png = await levels_answer(res.market, res.renderer, zones, period, day)
    try:
        derived: DerivedLevels | str = await derived_answer(res.market, report.as_of)
    except InputError as exc:  # too little history before an early as_of: the rest of the answer stands
        derived = str(exc)
    return ChartAnswer(levels_embed(report, derived, await res.market.age(report.as_of, day)), png, report.as_of)


async def levels_chart(bot: SmallcapsBot, guild_id: int | None, period: str, shown: date) -> bytes:
    """Only the chart, for another period as of the day an answer shows."""
    res = bot.resources
    _, png = await levels_answer(res.market, res.renderer, await res.zones(guild_id), period, shown)
    return png


async def latest_iwm(bot: SmallcapsBot) -> date:
    return (await bot.resources.market.bars("IWM")).as_of


LEVELS_CHART = register_chart(ChartCommand("levels", ("3mo", "6mo", "1y", "5y", "max"), "iwm-levels.png",
                                           levels_chart_answer, levels_chart, latest_iwm))


class Levels(IwmCog):
    @app_commands.command(name="levels", description="IWM vs. the levels that matter: zones, highs, averages, RS")
    @app_commands.describe(period="Chart span (default 1y)", as_of="Answer as of this trading day, YYYY-MM-DD")
    @app_commands.autocomplete(as_of=session_choices)
    @renders_chart()
    async def levels(self, interaction: discord.Interaction, period: Period = "1y", as_of: str | None = None) -> None:
        day = parse_day(as_of)
        await interaction.response.defer(thinking=True)
        answer = await levels_chart_answer(self.bot, interaction.guild_id, period, day)
        await interaction.followup.send(**LEVELS_CHART.message(answer, period, day))


def _distance(report: LevelsReport, level: float) -> str:
    away = report.distance(level)
    where = "above" if away.dollars > 0 else "below"
    return f"{level:,.2f} ({abs(away.dollars):,.2f} / {abs(away.pct):.1f}% {where})"


def _derived_fields(embed: discord.Embed, d: DerivedLevels | str) -> None:
    """The levels derived from the data (services.swing_levels): the nearest above and below, the zones, the
    method."""
    if isinstance(d, str):
        embed.add_field(name="Derived levels", value=f"Not available: {d}"[:1024], inline=False)
        return
    lines = [f"▲ {level.describe()}" for level in reversed(d.above)] or ["▲ none above: at record highs"]
    lines.append(f"— close {d.close:,.2f} —")
    lines += [f"▼ {level.describe()}" for level in reversed(d.below)] or ["▼ none below"]
    embed.add_field(name=f"Derived levels (swing highs and lows, as of {d.zones.as_of})", value="\n".join(lines),
                    inline=False)
    z = d.zones.as_zones()
    embed.add_field(name="Derived zones (`/iwm setlevels preset:derived` adopts them)",
                    value=f"**{z.describe()}**\n{d.zones.method}"[:1024], inline=False)
    embed.add_field(name="Method", value=RULE, inline=False)


def levels_embed(r: LevelsReport, derived: DerivedLevels | str, age: DataAge | None = None) -> discord.Embed:
    colour = GREEN if r.close > r.zones.resistance_high else RED if r.close < r.zones.support else YELLOW
    z = r.zones
    embed = discord.Embed(
        title=f"IWM {r.close:,.2f} ({signed(r.change)}, {signed(r.change_pct, suffix='%')}) · {r.verdict}",
        description=(
            f"Close of **{r.as_of}**. Levels use traded prices; returns use dividend-adjusted closes."
            + (f"\n⚠️ {r.note}" if r.stale else "")
            + (f"\n{behind}" if (behind := age_line(age)) else "")
        ),
        colour=colour,
    )
    embed.add_field(
        name="Zones",
        value="\n".join([
            f"Resistance {z.resistance_low:g}–{z.resistance_high:g}: top at {_distance(r, z.resistance_high)}",
            f"Entry zone {z.entry_low:g}–{z.entry_high:g}: top at {_distance(r, z.entry_high)}",
            f"Support: {_distance(r, z.support)}",
            f"Closes above {z.resistance_high:g} in the last year: {r.closes_above_resistance}"
            + (f" (last {r.last_close_above_resistance})" if r.last_close_above_resistance else " (none yet)"),
        ]),
        inline=False,
    )
    _derived_fields(embed, derived)
    embed.add_field(
        name="All-time high",
        value=(
            f"Close {r.ath_close.value:,.2f} ({r.ath_close.day}) · intraday {r.ath_intraday.value:,.2f} "
            f"({r.ath_intraday.day})\nDrawdown from closing high: {r.drawdown_pct:+.2f}%"
        ),
        inline=False,
    )
    if r.high_2021_close and r.high_2021_intraday:
        gap = r.close / r.high_2021_close.value * 100 - 100
        embed.add_field(
            name="2021 high",
            value=(
                f"Close {r.high_2021_close.value:,.2f} ({r.high_2021_close.day}) · intraday "
                f"{r.high_2021_intraday.value:,.2f} ({r.high_2021_intraday.day})\n"
                f"Price is {abs(gap):.1f}% {'above' if gap > 0 else 'below'} the 2021 closing high"
                + (
                    f"; exceeded since: close {r.ath_close.value:,.2f} ({r.ath_close.day}), "
                    f"intraday {r.ath_intraday.value:,.2f} ({r.ath_intraday.day})"
                    if r.ath_close.day > r.high_2021_close.day else ""
                )
            ),
            inline=False,
        )
    averages = []
    for label, value in (("50-day", r.sma50), ("200-day", r.sma200)):
        averages.append(f"{label} {value:,.2f} (price {r.close / value * 100 - 100:+.1f}%)" if value else
                        f"{label}: not enough history")
    embed.add_field(name="Moving averages", value="\n".join(averages), inline=True)
    embed.add_field(
        name="52-week range",
        value=f"{r.week52_low.value:,.2f} ({r.week52_low.day}) – {r.week52_high.value:,.2f} ({r.week52_high.day})",
        inline=True,
    )
    recent = r.monthly_returns.tail(6)
    months = []
    for i, (period, value) in enumerate(recent.items()):
        label = str(period)
        if i == len(recent) - 1 and r.month_in_progress:
            label += " (month to date)"
        elif i == len(recent) - 1 and r.month_data_ends:
            label += f" (to {r.as_of:%m-%d}, data ends)"
        months.append(f"{label}: {value:+.1f}%")
    streak = f"**{r.up_streak}** up month{'s' if r.up_streak != 1 else ''} in a row"
    if r.month_in_progress and r.up_streak:
        streak += ", counting the month to date"
    embed.add_field(name="Monthly streak", value=streak + "\n" + "\n".join(months), inline=False)
    if r.rs_ratio is not None:
        changes = " · ".join(
            f"{m}m {v:+.1f}%" if v is not None else f"{m}m n/a" for m, v in r.rs_changes.items()
        )
        early = r.rs_as_of is not None and r.rs_as_of < r.as_of
        embed.add_field(
            name=f"Relative strength vs {r.benchmark}" + (f" (to {r.rs_as_of})" if early else ""),
            value=f"IWM/{r.benchmark} {r.rs_ratio:.4f} · {changes}\n(adjusted closes, as of {r.rs_as_of}"
                  + (f", the last day both have: {r.benchmark} data ends there; IWM runs to {r.as_of})"
                     if early else ")"),
            inline=False,
        )
    else:
        embed.add_field(name=f"Relative strength vs {r.benchmark}", value="No overlapping data", inline=False)
    embed.set_footer(text=data_footer(r.source, r.as_of, r.stale, age=age))
    return embed


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Levels(bot))

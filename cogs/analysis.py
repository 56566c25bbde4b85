"""`/iwm valuation`, `/iwm sectors`, `/iwm breadth`, `/iwm rates`, `/iwm compare`: the analysis commands, each an
embed + chart.

Every figure is shown with its source and date; a missing one is "n/a" with the reason, never estimated, and data
that is a stale fallback is marked ⚠️. Lists that could outgrow Discord's embed limits are cut on purpose
(`lines_within`), saying how many entries were left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import date, time
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import discord
from discord import app_commands
from discord.ext import tasks

from cogs.common import (
    BLUE,
    GREEN,
    RED,
    YELLOW,
    IwmCog,
    add_iwm_cog,
    age_line,
    attach_chart,
    data_footer,
    parse_day,
    signed,
)
from services import market_calendar
from services.breadth import RULE, BreadthAnswer, breadth_answer, check_breadth_input
from services.compare import CompareReport, compare_answer, display, parse_symbols
from services.errors import InputError
from services.market import DataAge
from services.members import IndexValuation, MemberValuation, daily_refresh, load_member_data
from services.rates import (
    CURVE_BACKGROUND,
    STANCE_MONTHS,
    CycleWindow,
    Decision,
    EasingCycle,
    RatesReport,
    WindowStats,
    YieldCurve,
    rates_answer,
    stance_text,
)
from services.sectors import MemberReturns, SectorLine, SectorsReport, sectors_answer
from services.valuation import SHILLER, Observation, ValuationReport, valuation_answer

if TYPE_CHECKING:
    from app import SmallcapsBot

SectorPeriod = Literal["1m", "3m", "ytd", "1y"]
BreadthPeriod = Literal["3mo", "6mo", "1y", "2y", "max"]
PERIOD_NAMES = {"1m": "1 month", "3m": "3 months", "ytd": "the year to date", "1y": "1 year"}
FIELD_LIMIT = 1024  # Discord: characters in a field value
NOTES_LIMIT = 700  # free text from operators and upstream errors: kept short so the embed stays under 6000
DESCRIPTION_LIMIT = 1200  # with <= 20 fields of <= ~300 characters, the embed stays under 6000
NOTE_LIMIT, SOURCE_LIMIT = 300, 80  # one note; one source name
MAX_FUNDS = 12  # sector funds shown one field each (11 today); more would risk the 6000-character total
MAX_CYCLES = 8  # easing cycles shown one field each (the averages cover all of them)
OLD_FIGURE_MONTHS = 3  # a valuation figure this many months older than the day asked about is flagged
SHORT_METRICS = {"forward_pe": "fwd P/E", "trailing_pe": "P/E", "trailing_pe_all": "P/E incl. losses",
                 "price_to_book": "P/B", "price_to_sales": "P/S"}
AS_OF_HELP = "Answer as of this day, YYYY-MM-DD (default: latest data)"
REFRESH_AT = time(17, 30, tzinfo=ZoneInfo("America/New_York"))  # the member refresh: after the 16:00 close

log = logging.getLogger(__name__)


def lines_within(lines: Sequence[str], limit: int = FIELD_LIMIT, empty: str = "none") -> str:
    """Join lines, keeping as many whole lines as fit in `limit` characters and ending with "… and K more"
    when some were left out; a first line longer than the limit is itself cut with "…"."""
    text = "\n".join(lines)
    if len(text) <= limit:
        return text or empty
    for keep in range(len(lines) - 1, 0, -1):
        text = "\n".join(lines[:keep]) + f"\n… and {len(lines) - keep} more"
        if len(text) <= limit:
            return text
    more = f"\n… and {len(lines) - 1} more" if len(lines) > 1 else ""
    return clip(lines[0], limit - len(more)) + more


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with "…" when longer (for free text: operator notes, upstream errors)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pct(value: float | None) -> str:
    return "n/a" if value is None else signed(value, 1, "%")


def pp(value: float | None) -> str:
    return "n/a" if value is None else signed(value, 1, "pp")


def not_future(day: date | None, option: str = "as_of") -> date | None:
    """A day option that cannot be answered because it has not happened yet is refused before deferring."""
    if day is not None and day > date.today():
        raise InputError(f"{option} {day} is in the future")
    return day


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
    async def valuation(self, interaction: discord.Interaction, as_of: str | None = None) -> None:
        day = not_future(parse_day(as_of))
        await interaction.response.defer(thinking=True)
        res = self.bot.resources
        settings = res.settings
        report, png = await valuation_answer(
            res.documents, res.renderer, day,
            yahoo_base_url=settings.yahoo_base_url if settings.provider == "yahoo" else None,
            operator_file=settings.valuation_file,
        )
        embed = valuation_embed(report)
        await interaction.followup.send(embed=embed, file=attach_chart(embed, png, "iwm-valuation.png"))

    @app_commands.command(name="sectors", description="IWM by sector: weights, sector funds vs IWM, leaders, "
                                                      "laggards, rate sensitivity")
    @app_commands.describe(period="Return period for the ranking and chart (default 3m)", as_of=AS_OF_HELP)
    async def sectors(self, interaction: discord.Interaction, period: SectorPeriod = "3m",
                      as_of: str | None = None) -> None:
        day = not_future(parse_day(as_of))
        await interaction.response.defer(thinking=True)
        res = self.bot.resources
        report, png = await sectors_answer(res.market, res.documents, res.renderer, period, day,
                                           holdings_url=res.settings.holdings_url)
        embed = sectors_embed(report, await res.market.age(report.as_of, day))
        await interaction.followup.send(embed=embed, file=attach_chart(embed, png, "iwm-sectors.png"))

    @app_commands.command(name="breadth", description="Russell 2000 breadth from its members: % above 50/200-day "
                                                      "averages, A/D line, 52-week highs/lows")
    @app_commands.describe(period="Chart window (default 1y)", as_of=AS_OF_HELP)
    async def breadth(self, interaction: discord.Interaction, period: BreadthPeriod = "1y",
                      as_of: str | None = None) -> None:
        day = not_future(parse_day(as_of))
        await check_breadth_input(period, day)  # refused before deferring: the answer is one ephemeral message
        await interaction.response.defer(thinking=True)
        res = self.bot.resources
        answer, png = await breadth_answer(res.market, res.renderer, period, day)
        embed = breadth_embed(answer)
        await interaction.followup.send(embed=embed, file=attach_chart(embed, png, "iwm-breadth.png"))

    @app_commands.command(name="rates", description="Fed funds rate and how IWM did vs SPY after the first cut "
                                                    "of each easing cycle")
    @app_commands.describe(as_of=AS_OF_HELP)
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


# --- valuation ------------------------------------------------------------------------------------------------

def _months_between(earlier: date, later: date) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def _figure(o: Observation | None, reference: date) -> str:
    if o is None:
        return "**n/a**: missing, no source has it"
    when = f"{o.as_of:%Y-%m}" if o.kind == SHILLER else str(o.as_of)  # Shiller's figures are monthly
    age = _months_between(o.as_of, reference)
    old = f" ⚠️ {age} months old" if age > OLD_FIGURE_MONTHS else ""
    return f"**{o.value:.1f}** · {clip(o.source, SOURCE_LIMIT)}, {when}{old}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _multiple(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _losses(side: IndexValuation) -> str:
    return (f"{side.index} {_share(side.loss_share_members)} of members, {_share(side.loss_share_value)} of "
            f"value ({side.loss_makers:,} companies)")


def _members_field(m: MemberValuation) -> str:
    """The bottom-up figures: every multiple with its ratio, loss-makers, coverage, source and method."""
    lines = [f"{m.small.multiples[k].label}: **{_multiple(m.small.multiples[k].value)}** / "
             f"**{_multiple(m.large.multiples[k].value)}** ({'n/a' if m.ratios[k] is None else f'{m.ratios[k]:.2f}'})"
             for k in m.ratios]
    lines.insert(0, f"{m.small.name} / {m.large.name} (small/large):")
    lines.append("Losing money (negative 12-month margin): " + _losses(m.small) + "; " + _losses(m.large) + ".")
    for side in (m.small, m.large):
        counted = " · ".join(f"{SHORT_METRICS[k]} {a.coverage:.0%}" for k, a in side.multiples.items())
        lines.append(f"Coverage {side.index}: {side.with_data:,}/{side.members:,} with data "
                     f"({side.coverage:.0%} by {side.coverage_basis}); counted {counted}.")
    lines.append(f"*Source:* {clip(m.source, 170)}")
    method = "\n*Method:* "
    lines.append(method.lstrip() + clip(m.method, FIELD_LIMIT - len("\n".join(lines)) - len(method)))
    return lines_within(lines)


def valuation_embed(r: ValuationReport) -> discord.Embed:
    reference = r.as_of or date.today()
    description = [
        f"{r.small_label} against {r.large_label}, "
        + (f"as of **{r.as_of}**." if r.as_of else "latest figures.")
        + " Each figure with its source and date; **n/a** = no source has it (nothing is estimated).",
        "Small-cap P/E depends heavily on how loss-makers are treated (left out, or netted in an aggregate): "
        "each source's method is under *Method*.",
    ]
    if r.stale:
        description.append("⚠️ Some live figures are a stale copy (the live source failed): see *Notes*.")
    embed = discord.Embed(title=f"Valuation: {r.small_label} vs {r.large_label}",
                          description=lines_within(description, DESCRIPTION_LIMIT),
                          colour=YELLOW if r.stale else BLUE)
    for row in r.rows:
        if row.ratio is not None:
            ratio = f"**{row.ratio:.2f}** · {clip(row.ratio_source or '', SOURCE_LIMIT)}, {row.ratio_as_of}"
        elif row.small is None or row.large is None:
            ratio = "n/a: needs both figures"
        else:
            ratio = f"n/a: {row.note}"
        embed.add_field(name=row.label, inline=False, value=lines_within([
            f"{r.small_label}: {_figure(row.small, reference)}",
            f"{r.large_label}: {_figure(row.large, reference)}",
            f"Small/large: {ratio}",
        ]))
    h = r.history
    if h is not None:
        low_line = (f"last lower reading {h.lowest_since}" if h.lowest_since else "the lowest in this history")
        history = (f"Now **{h.current:.2f}** ({h.last}), {low_line}; {h.percentile:.0f}% of the {h.points} readings "
                   f"{h.first} to {h.last} were at or below it. Low {h.low:.2f} on {h.low_date}. "
                   f"Source: {clip(h.source, SOURCE_LIMIT)}.")
    else:
        history = r.history_note + " The chart shows the S&P 500 trailing P/E instead."
    embed.add_field(name="Relative forward P/E (IWM/SPY) over time", value=history, inline=False)
    if r.members is not None:
        embed.add_field(name=f"Bottom-up from members · as of {r.members.as_of}", inline=False,
                        value=_members_field(r.members))
    embed.add_field(name="Method", inline=False, value=lines_within(
        [f"**{clip(who, SOURCE_LIMIT)}**: {clip(method, NOTE_LIMIT)}" for who, method in r.methods], NOTES_LIMIT))
    if r.notes:
        embed.add_field(name="Notes", value=lines_within([f"· {clip(n, NOTE_LIMIT)}" for n in r.notes], NOTES_LIMIT),
                        inline=False)
    figures = [o for row in r.rows for o in (row.small, row.large) if o is not None]
    sources = clip(", ".join(sorted({o.source for o in figures})) or "none", NOTE_LIMIT)
    newest = max((o.as_of for o in figures), default=reference)
    embed.set_footer(text=data_footer(sources, r.as_of or newest, r.stale))
    return embed


# --- breadth --------------------------------------------------------------------------------------------------

def breadth_embed(a: BreadthAnswer) -> discord.Embed:
    r, d = a.report, a.report.latest
    above = " · ".join(f"{n}-day **{'n/a' if v is None else f'{v:.0f}%'}** (of {d.counted[n]:,})"
                       for n, v in d.pct_above.items())
    iwm = "n/a" if a.iwm_close is None else f"{a.iwm_close:.2f}"
    description = [
        f"{r.name}, {r.members:,} members with closes, on **{r.as_of}**"
        + (f" (asked: {r.requested})" if r.requested and r.requested != r.as_of else "") + f". IWM close {iwm}.",
        a.divergence,
        f"⚠️ {r.caveat}",
    ]
    embed = discord.Embed(title=f"Russell 2000 breadth · {r.as_of}", colour=YELLOW if "⚠️" in a.divergence else BLUE,
                          description=lines_within(description, DESCRIPTION_LIMIT))
    embed.add_field(name="Above their averages", value=above, inline=False)
    embed.add_field(name="Advances / declines", inline=False, value=(
        f"**{d.advances:,}** up · **{d.declines:,}** down · {d.unchanged:,} unchanged; A/D line **{d.ad_line:+,}** "
        f"(running sum from {r.series.dates[0]})"))
    embed.add_field(name="New 52-week highs / lows", inline=False, value=(
        f"**{d.new_highs:,}** highs · **{d.new_lows:,}** lows "
        f"(of {d.high_low_counted:,} members with a year of closes)"))
    embed.add_field(name="Method", value=lines_within([clip(r.method, NOTE_LIMIT), RULE]), inline=False)
    embed.set_footer(text=data_footer(f"{r.source}; IWM {a.price_source}", r.as_of))
    return embed


# --- sectors --------------------------------------------------------------------------------------------------

def _sector_field(x: SectorLine, period: str, as_of: date) -> tuple[str, str]:
    weight = f"{x.weight:.1f}% of IWM" if x.weight is not None else "industry fund, no weight of its own"
    others = " · ".join(f"{p} {signed(v, 1) if v is not None else 'n/a'}" for p, v in x.relative.items()
                        if p != period)
    if x.returns[period] is None:
        main = f"{period} **n/a**: missing ({x.note or 'no data'})"
    else:
        main = f"{period} **{pct(x.returns[period])}** · **{pp(x.relative[period])}** vs IWM"
        if x.note:
            main += f" ({x.note})"
    lines = [main, f"vs IWM, pp: {others}", f"*Rates: {x.rate_sensitivity}*"]
    early = f" (to {x.data_end})" if x.data_end is not None and x.data_end < as_of else ""
    return f"{x.symbol} {x.name}{early} · {weight}", lines_within(lines)


def _ranked(r: SectorsReport, symbols: Sequence[str]) -> str:
    by_symbol = {x.symbol: x for x in r.lines}
    return "\n".join(f"**{s}** {by_symbol[s].name} {pp(by_symbol[s].relative[r.period])} "
                     f"({pct(by_symbol[s].returns[r.period])})" for s in symbols) or "none (too few funds with data)"


def _member_sectors_field(m: MemberReturns, period: str) -> str:
    """Each holdings sector's return from its members against IWM over the same sessions, leaders and laggards."""
    ranked = [f"Leaders: {', '.join(m.leaders) or 'none ahead of IWM'} · Laggards: "
              f"{', '.join(m.laggards) or 'none behind IWM'}"]
    for x in m.sectors.sectors:
        counted = f" ({x.coverage[period]:.0%} of weight counted)" if x.coverage[period] < 0.95 else ""
        ranked.append(f"{x.sector} {x.weight:.1f}%: {pct(x.returns[period])} · **{pp(m.relative[x.sector][period])}**"
                      + counted)
    start = m.sectors.period_starts[period]
    ranked.append(f"IWM {pct(m.benchmark_returns[period])} from {start}; {m.sectors.caveat}")
    return lines_within(ranked)


def sectors_embed(r: SectorsReport, age: DataAge | None = None) -> discord.Embed:
    p, h = r.period, r.holdings
    bench = r.benchmark_returns[p]
    description = [
        f"Total returns (dividend-adjusted) over {PERIOD_NAMES[p]}, from the close of {r.period_starts[p]} to "
        f"{r.as_of}; each fund against IWM in percentage points. {r.alignment_note}",
        f"Weights: {h.fund} holdings as of **{h.as_of}** ({h.source}): {h.equity_count:,} stocks, "
        f"{h.equity_weight:.1f}% of the fund in equities.",
        "Funds: S&P SmallCap 600 sector ETFs (PSC*), plus KRE and XBI (equal-weighted industry funds that also hold "
        "mid and large caps): proxies, not the Russell 2000's own sectors.",
        f"*Rates:* lines are {r.background_label[0].lower()}{r.background_label[1:]}.",
    ]
    if h.stale:
        description.append(f"⚠️ Holdings are a stale copy: {clip(h.note, NOTE_LIMIT)}")
    description += [f"{'⚠️' if 'stale' in n else 'ℹ️'} {clip(n, NOTE_LIMIT)}" for n in r.notes]
    if behind := age_line(age):
        description.append(behind)
    embed = discord.Embed(
        title=f"IWM sectors · {p} to {r.as_of} · IWM {pct(bench)}",
        description=lines_within(description, DESCRIPTION_LIMIT),
        colour=YELLOW if r.stale else GREEN if (bench or 0) >= 0 else RED,
    )
    embed.add_field(name=f"Leaders ({p}, vs IWM)", value=_ranked(r, r.leaders), inline=True)
    embed.add_field(name=f"Laggards ({p}, vs IWM)", value=_ranked(r, r.laggards), inline=True)
    for line in r.lines[:MAX_FUNDS]:
        name, value = _sector_field(line, p, r.as_of)
        embed.add_field(name=name, value=value, inline=False)
    if len(r.lines) > MAX_FUNDS:
        embed.add_field(name=f"… and {len(r.lines) - MAX_FUNDS} more funds", value="on the chart", inline=False)
    if r.members is not None:
        embed.add_field(name=f"Russell 2000's own sectors (members) · {p} to {r.members.sectors.as_of}",
                        value=_member_sectors_field(r.members, p), inline=False)
    if r.unmatched_sectors:
        missing = [f"{s} {h.weight(s) or 0:.1f}% of IWM: no fund in the data, performance missing"
                   for s in r.unmatched_sectors]
        embed.add_field(name="Not covered", value=lines_within(missing), inline=False)
    source = f"prices {r.market_source}; weights {h.source} ({h.as_of})"
    embed.set_footer(text=data_footer(source, r.as_of, r.stale, age=age))
    return embed


# --- rates ----------------------------------------------------------------------------------------------------

def _window(w: CycleWindow, data_end: date) -> str:
    if w.end is None:
        return f"{w.months}m: n/a, not complete (the window ends after the last close, {data_end})"
    return f"{w.months}m: IWM {pct(w.iwm_pct)} · SPY {pct(w.spy_pct)} · gap **{pp(w.gap_pp)}**"


def _cut(d: Decision) -> str:
    """e.g. "5.50% → 5.00% (−50bp, upper bound)"."""
    bound = "upper bound" if d.source.startswith("FRED") else "target"
    extra = f", {d.note}" if d.note and d.note != "scheduled meeting" else ""
    return f"{d.before:.2f}% → {d.after:.2f}% ({round(d.change_pp * 100):+d}bp {bound}{extra})"


def _cycle_field(c: EasingCycle, data_end: date, kind: str = "First cut") -> tuple[str, str]:
    name = f"{kind} {c.cut.day} · {_cut(c.cut)}"
    if not c.complete:
        name += " · in progress (incomplete)"
    close = f"from the {c.start} close" + ("" if c.start == c.cut.day else " (the last before the decision)")
    lines = [close, *(_window(w, data_end) for w in c.windows)]
    return name, lines_within(lines)


def _stance_lines(r: RatesReport) -> list[str]:
    p = r.policy
    lines = []
    if p.target is not None:
        lines.append(f"Target range **{p.target[0]:.2f}–{p.target[1]:.2f}%** (FRED DFEDTARL/DFEDTARU, "
                     f"{p.target_as_of}) · effective rate **{p.effective:.2f}%** (DFF, {p.effective_as_of}).")
    else:
        lines.append(f"Effective rate **{p.effective:.2f}%** (DFF, {p.effective_as_of}); the target range is not in "
                     f"the data before {p.target_from}.")
    if p.last_change is not None:
        d = p.last_change
        lines.append(f"Last change: decided **{d.day}** (effective {d.effective}), "
                     f"{round(d.change_pp * 100):+d}bp to {d.after:.2f}% (upper bound).")
    lines.append(f"Stance: **{stance_text(p)}** (easing/tightening = a change within {STANCE_MONTHS} months).")
    return lines


def _curve_lines(c: YieldCurve | None) -> list[str]:
    if c is None:
        return ["n/a: no Treasury yields in the data up to this day"]
    changes = " · ".join(f"{x.months}m {pp_2(x.change_pp)} ({x.direction}, from {x.since})" if x.since
                         else f"{x.months}m n/a (before the data)" for x in c.changes)
    return [f"2-year **{c.dgs2:.2f}%** · 10-year **{c.dgs10:.2f}%** · 2s10s **{pp_2(c.spread_pp)}**"
            f"{' (inverted)' if c.spread_pp < 0 else ''} on {c.as_of} (FRED DGS2, DGS10)",
            f"Change in the spread: {changes}", f"*{CURVE_BACKGROUND}*"]


def pp_2(value: float | None) -> str:
    return "n/a" if value is None else signed(round(value, 2) + 0.0, 2, "pp")


def _stats_line(a: WindowStats) -> str:
    if not a.n:
        return f"{a.months}m: n/a, no cycle has this window yet"
    return (f"{a.months}m (n={a.n}): mean IWM {pct(a.iwm_mean)} · SPY {pct(a.spy_mean)} · gap mean "
            f"**{pp(a.gap_mean)}**, median {pp(a.gap_median)} · IWM ahead in {a.iwm_ahead} of {a.n}")


def rates_embed(r: RatesReport, age: DataAge | None = None) -> discord.Embed:
    p = r.policy
    description = _stance_lines(r)
    description.append("After each first cut: IWM and SPY total returns (dividend-adjusted) from the close of the "
                       "FOMC decision day; gap = IWM − SPY in percentage points.")
    if r.stale:
        description.append("⚠️ Part of the data is a stale fallback (a live source failed): see *Notes* and the "
                           "sources below.")
    if behind := age_line(age):
        description.append(behind)
    head = f"Fed funds {p.target[0]:.2f}–{p.target[1]:.2f}%" if p.target else f"Fed funds {p.effective:.2f}%"
    embed = discord.Embed(title=f"{head} · {stance_text(p)} · IWM vs SPY after first cuts",
                          description=lines_within(description, DESCRIPTION_LIMIT), colour=YELLOW if r.stale else BLUE)
    embed.add_field(name="Yield curve", value=lines_within(_curve_lines(r.curve)), inline=False)
    shown = r.cycles[-MAX_CYCLES:]
    for cycle in shown:
        name, value = _cycle_field(cycle, r.as_of)
        embed.add_field(name=name, value=value, inline=False)
    if not r.cycles:
        embed.add_field(name="Easing cycles", value=f"none found from 2000 to {r.as_of}", inline=False)
    stats = [_stats_line(a) for a in r.stats]
    if len(r.cycles) > len(shown):
        stats.append(f"(over all {len(r.cycles)} cycles; the {len(r.cycles) - len(shown)} earliest not listed)")
    stats.append(f"⚠️ {r.warning}")
    embed.add_field(name="Across cycles (complete windows)", value=lines_within(stats), inline=False)
    choice = [f"Rule: {r.rule}. Choice: {r.resume_rule}."]
    if any(c.cut.day.year == 2020 for c in r.resumptions):
        choice[0] += (" So 2019–2020 is one cycle: the 2019-07-31 cut (the Fed called 2019's cuts a mid-cycle "
                      "adjustment) starts it, the March 2020 emergency cuts continue it.")
    for c in r.resumptions:
        pause = f", {(c.cut.day - c.cut.previous).days} days after the {c.cut.previous} cut" if c.cut.previous else ""
        choice.append(f"{c.cut.day}, {_cut(c.cut)}{pause}: " + " · ".join(
            f"{w.months}m {pp(w.gap_pp)}" if w.end else f"{w.months}m n/a" for w in c.windows))
    if r.resumptions:
        choice.append("(gap IWM − SPY from each resumption's decision-day close; counted as first cuts they would "
                      "change the figures above)")
    embed.add_field(name="Choice: resumed easing (2019–2020, 2025)", value=lines_within(choice), inline=False)
    method = ["Decision day = the day before the target range changes (the change takes effect the next day); "
              f"first cuts before {r.policy.target_from} from the Fed's press releases (bundled list).",
              f"Rates: {r.daily_source}; monthly line {r.monthly_source}."]
    embed.add_field(name="Method", value=lines_within(method), inline=False)
    if r.notes:
        embed.add_field(name="Notes", value=lines_within([f"· {clip(n, NOTE_LIMIT)}" for n in r.notes], NOTES_LIMIT),
                        inline=False)
    embed.set_footer(text=data_footer(f"{r.daily_source}; prices {r.market_source}", r.as_of, r.stale, age=age))
    return embed


# --- compare --------------------------------------------------------------------------------------------------

def compare_embed(r: CompareReport, age: DataAge | None = None) -> discord.Embed:
    description = [
        f"Start **{r.since}**: {r.since_note}."
        + (f" {r.start_note} (**{r.start}**)." if r.start_note else ""),
        "Total return (dividend-adjusted closes; price only where marked) from the last close on or before the "
        f"start to **{r.end}**.",
        f"{r.alignment} The chart starts every line at 100.",
    ]
    stale = [s for s in r.series if s.stale]
    if stale:
        description.append("⚠️ Stale fallback data for " + ", ".join(s.symbol for s in stale) + ": "
                           + clip(stale[0].note or "live data unavailable", NOTE_LIMIT))
    if behind := age_line(age):
        description.append(behind)
    first_gap = r.gaps[0].gap_pp if r.gaps else 0.0
    embed = discord.Embed(title=r.headline, description=lines_within(description, DESCRIPTION_LIMIT),
                          colour=YELLOW if r.stale else GREEN if first_gap >= 0 else RED)
    for s in r.series:
        if s.total_return_pct is None:
            value = f"**n/a**: {s.note or 'no data'}"
        else:
            kind = "price return (no dividends)" if s.price_only else "total return"
            value = f"**{pct(s.total_return_pct)}** {kind}\n{s.start} → {s.end}"
            if s.latest_pct is not None:
                value += f"\nto its last close {s.data_end}: {pct(s.latest_pct)}"
        value += f"\nsource {s.source}" + (" ⚠️ stale" if s.stale else "")
        name = s.label + (f" (to {s.data_end})" if s.ends_early else "")
        embed.add_field(name=name, value=value, inline=True)
    if r.gaps:
        embed.add_field(name=f"Gap ({r.base} minus the other, pp, to {r.end})", inline=False, value=lines_within([
            f"vs {display(g.other)}: **{pp(g.gap_pp)}** ({g.symbol} {pct(g.symbol_pct)} vs {display(g.other)} "
            f"{pct(g.other_pct)}, "
            f"both to {g.as_of})" for g in r.gaps]))
    ends = [s.data_end for s in r.series if s.data_end is not None and s.total_return_pct is not None]
    sources = ", ".join(sorted({s.source for s in r.series}))
    embed.set_footer(text=data_footer(sources, max(ends) if ends else r.since, r.stale, age=age))
    return embed


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Analysis(bot))

"""The /iwm sectors embed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import discord

from cogs.analysis._format import DESCRIPTION_LIMIT, MAX_FUNDS, NOTE_LIMIT, PERIOD_NAMES, clip, lines_within, pct, pp
from cogs.common import GREEN, RED, YELLOW, age_line, data_footer, signed
from services.market import DataAge
from services.sectors import MemberReturns, SectorLine, SectorsReport

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
    if r.members is not None and r.members.sectors.source.endswith("archived"):
        source += f"; member weights iShares {r.members.sectors.holdings_as_of}, archived"
    embed.set_footer(text=data_footer(source, r.as_of, r.stale, age=age))
    return embed

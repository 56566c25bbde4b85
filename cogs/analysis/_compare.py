"""The /iwm compare embed."""

from __future__ import annotations

import discord

from cogs.analysis._format import DESCRIPTION_LIMIT, NOTE_LIMIT, clip, lines_within, pct, pp
from cogs.common import GREEN, RED, YELLOW, age_line, data_footer
from services.compare import CompareReport, display
from services.market import DataAge

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

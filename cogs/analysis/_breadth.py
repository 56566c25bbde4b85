"""The /iwm breadth embed."""

from __future__ import annotations

import discord

from cogs.analysis._format import DESCRIPTION_LIMIT, NOTE_LIMIT, clip, lines_within
from cogs.common import BLUE, YELLOW, data_footer
from services.breadth import RULE, BreadthAnswer

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
    stale = a.origin is not None and a.origin.closes_stale
    if stale and a.origin is not None:
        description.insert(1, f"⚠️ {a.origin.closes_note}")
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
    embed.set_footer(text=data_footer(f"{r.source}; IWM {a.price_source}", r.as_of, stale,
                                      age=a.origin.closes_age if a.origin is not None else None))
    return embed

"""The /iwm valuation embed."""

from __future__ import annotations

from datetime import date

import discord

from cogs.analysis._format import (
    DESCRIPTION_LIMIT,
    FIELD_LIMIT,
    NOTE_LIMIT,
    NOTES_LIMIT,
    OLD_FIGURE_MONTHS,
    SHORT_METRICS,
    SOURCE_LIMIT,
    clip,
    lines_within,
)
from cogs.common import BLUE, YELLOW, age_line, data_footer
from services.members import IndexValuation, MemberValuation
from services.valuation import SHILLER, Observation, ValuationReport

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
    age = r.member_origin.age if r.member_origin is not None else None
    if behind := age_line(age):
        description.append(f"{behind} (member snapshot)")
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
    embed.set_footer(text=data_footer(sources, r.as_of or newest, r.stale, age=age))
    return embed

"""The /iwm rates embed."""

from __future__ import annotations

from datetime import date

import discord

from cogs.analysis._format import DESCRIPTION_LIMIT, MAX_CYCLES, NOTE_LIMIT, NOTES_LIMIT, clip, lines_within, pct, pp
from cogs.common import BLUE, YELLOW, age_line, data_footer, signed
from services.market import DataAge
from services.rates import (
    CURVE_BACKGROUND,
    STANCE_MONTHS,
    CycleWindow,
    Decision,
    EasingCycle,
    RatesReport,
    WindowStats,
    YieldCurve,
    stance_text,
)

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

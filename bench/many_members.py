"""200 slash commands in 10 s from 100 members (the same mix as before: four `/iwm levels` variants, status,
subscriptions), answered by the real bot against the local Discord, twice in one run: with the chart cache
(CHART_CACHE_MB at its default) and without it (CHART_CACHE_MB=0: every answer draws its chart, as before).

Measured: p50/p95 of the final answer (dispatch to the message carrying the chart), charts drawn (the renderer's
counter) against distinct answers (distinct chart PNGs the members received, counted from the no-cache run, where
every answer was drawn). Each member sends every 5 s, slower than the per-member render cooldown.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.run import Result, percentile
from tests.support.local_discord import LocalDiscord, member_payload, pointed_at, smallcaps_bot, user_payload

MIX = ["/iwm levels period:1y", "/iwm levels period:6mo", "/iwm levels period:max", "/iwm status",
       "/iwm subscriptions", "/iwm levels period:2y as_of:2025-09-26"]
COMMANDS, SPACING, MEMBERS = 200, 0.05, 100


@dataclass
class Run:
    latencies: list[float]
    answered: int
    renders: int
    charts: set[str]  # the distinct PNGs received, by hash


async def one_run(tmp: Path, cache_mb: int) -> Run:
    latencies: list[float] = []
    charts: set[str] = set()
    async with LocalDiscord() as local:
        guild = local.guild
        role = guild.member()["roles"]
        names = [f"member{i}" for i in range(MEMBERS)]
        guild.members.extend(member_payload(user_payload(local.snowflake(), name), role) for name in names)
        with pointed_at(local):
            env = {"DATABASE_PATH": str(tmp / f"bot-{cache_mb}.db"), "DEV_GUILD_ID": str(guild.id),
                   "CHART_CACHE_MB": str(cache_mb)}
            async with smallcaps_bot(local, env) as bot:
                handles = []
                start = time.monotonic()
                for i in range(COMMANDS):
                    await asyncio.sleep(max(0.0, start + i * SPACING - time.monotonic()))
                    text = MIX[i % len(MIX)]
                    words = text.split()
                    options = dict(w.split(":", 1) for w in words[2:])
                    payload = local.slash_command(words[0].lstrip("/"), words[1], options,
                                                  member=names[i % MEMBERS])
                    handles.append((text, await local.dispatch_interaction(payload)))
                answered = 0
                for text, handle in handles:
                    expected = 2 if "levels" in text else 1
                    responses = await handle.wait_for_responses(expected, timeout=180)
                    final = responses[expected - 1]
                    answered += 1
                    latencies.append(final.received_at - handle.dispatched_at)
                    charts |= {hashlib.sha256(f.data).hexdigest() for f in final.files if f.filename.endswith(".png")}
                renders = bot.resources.renderer.drawn
    return Run(latencies, answered, renders, charts)


async def bench_many_members(rounds: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        baseline = await one_run(Path(tmp), 0)
        cached = await one_run(Path(tmp), 64)
    distinct = len(baseline.charts)
    p95, base_p95 = percentile(cached.latencies, 95), percentile(baseline.latencies, 95)
    ratio = p95 / base_p95
    ok = (cached.answered == baseline.answered == COMMANDS and p95 <= 1.0 and ratio <= 0.2
          and cached.renders == distinct and cached.charts == baseline.charts)
    return Result(
        "many members",
        f"p50 {percentile(cached.latencies, 50) * 1000:,.0f} ms / p95 {p95 * 1000:,.0f} ms, "
        f"{cached.renders} renders for {distinct} distinct charts",
        f"no cache: p50 {percentile(baseline.latencies, 50) * 1000:,.0f} ms / p95 {base_p95 * 1000:,.0f} ms, "
        f"{baseline.renders} renders",
        ratio, "p95 <= 1 s, <= 0.2x; renders = distinct", ok,
        {"answered": cached.answered, "baseline_answered": baseline.answered, "renders": cached.renders,
         "baseline_renders": baseline.renders, "distinct_charts": distinct,
         "same_charts": cached.charts == baseline.charts})

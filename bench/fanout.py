"""Alert fan-out at Discord's rate limit: one breakout posted to 10,000 channels in 2,000 guilds (1,000 in 200
with --quick) by the real bot, against a local Discord that enforces the global limit of 50 requests a second and
per-channel message buckets with Discord's 429 bodies and headers (tests/support/local_discord/ratelimits.py).

The local Discord runs in a process of its own (bench/discord_process.py): its 10,000 recorded requests, its
parsing of 10,000 uploads and its garbage are not the bot's, so the stalls measured here (a 5 ms ticker on the bot's
loop, in the bot's process) are the bot's. Measured: the achieved post rate against the limit, 429s (which route,
global or not), posts per channel, the bot loop's longest stall, and the bot process's longest garbage collection.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from bench.run import ROOT, Result, Ticker
from services.pacing import DISCORD_GLOBAL_PER_SECOND
from tests.support.local_discord import pointed_at, smallcaps_bot

BREAKOUT_DAY = date(2025, 10, 3)  # IWM's first close above the article's resistance zone
CHANNELS_PER_GUILD = 5


@dataclass
class DiscordProcess:
    """A local Discord served by bench/discord_process.py; what the bot needs of it (see harness.Served)."""

    process: asyncio.subprocess.Process
    token: str
    api_url: str
    gateway_url: str
    dev_guild: int
    bot_user: int
    guilds: list[tuple[int, list[int]]]

    async def ask(self, command: str) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return json.loads(await self.process.stdout.readline())


@asynccontextmanager
async def discord_process(guilds: int, channels: int) -> AsyncIterator[DiscordProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "discord_process.py"), str(guilds), str(channels),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)
    try:
        assert process.stdout is not None
        hello = json.loads(await process.stdout.readline())
        yield DiscordProcess(process, hello["token"], hello["api_url"], hello["gateway_url"], hello["dev_guild"],
                             hello["bot_user"], [(g, cs) for g, cs in hello["guilds"]])
    finally:
        if process.stdin is not None:
            process.stdin.close()
        await asyncio.wait_for(process.wait(), timeout=30)


class Collections:
    """The bot process's garbage collections: how many of the oldest generation, and the longest of any."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._started)
        self.full += info["generation"] == 2


async def bench_alert_fanout(rounds: int) -> Result:
    guilds = 2_000 if rounds > 3 else 200
    channels = guilds * CHANNELS_PER_GUILD
    with tempfile.TemporaryDirectory() as tmp:
        async with discord_process(guilds, CHANNELS_PER_GUILD) as served:
            with pointed_at(served):
                env = {"DATABASE_PATH": str(Path(tmp) / "bot.db"), "DEV_GUILD_ID": str(served.dev_guild)}
                async with smallcaps_bot(served, env) as bot:
                    for guild_id, channel_ids in served.guilds:
                        for channel_id in channel_ids:
                            await bot.resources.alerts.subscribe(guild_id, channel_id, "breakout",
                                                                 created_by=served.bot_user)
                    cog = bot.get_cog("Alerts")
                    while cog._last_close_checked is None:  # noqa: ASYNC110 (a cog attribute, no event to wait on)
                        await asyncio.sleep(0.05)  # the watcher's start-up recovery and first check
                    await served.ask("enforce")
                    ticker, collections = Ticker(), Collections()
                    gc.callbacks.append(collections)
                    tick = asyncio.create_task(ticker.run())
                    started = time.monotonic()
                    posted = await cog.run_close_check(BREAKOUT_DAY)
                    elapsed = time.monotonic() - started
                    unfrozen = len(gc.get_objects())  # what a full collection walks now (start-up's heap is frozen)
                    ticker.stop = True
                    await tick
                    gc.callbacks.remove(collections)
            seen = await served.ask("report")
    ok = [(path, at, png) for path, status, at, png in seen["posts"] if status == 200]
    first, last = min(at for _, at, _ in ok), max(at for _, at, _ in ok)
    rate = (len(ok) - 1) / (last - first)
    ratio = rate / DISCORD_GLOBAL_PER_SECOND
    once = len({path for path, _, _ in ok}) == len(ok) == channels == posted
    refused = seen["global_429s"] + seen["route_429s"]
    stall, stall_cpu = ticker.worst()
    passed = ratio >= 0.9 and refused <= 5 and once and stall < 0.05
    return Result("alert fan-out", f"{rate:.1f} posts/s, {refused} x 429, stall {stall * 1000:.0f} ms",
                  f"Discord's limit {DISCORD_GLOBAL_PER_SECOND:.0f}/s", ratio,
                  ">= 0.9x, <= 5 x 429, once each, stall < 50 ms", passed,
                  {"channels": channels, "guilds": guilds, "posted": posted, "seconds": round(elapsed, 1),
                   "global_429s": seen["global_429s"], "route_429s": seen["route_429s"],
                   "refused": [[method, path, round(at - first, 3), is_global]
                               for method, path, at, is_global in seen["refused"]][:20],
                   "longest_stall_cpu_ms": round(stall_cpu * 1000, 1), "full_collections": collections.full,
                   "longest_collection_ms": round(collections.longest * 1000, 1), "unfrozen_objects": unfrozen,
                   "all_png": all(png for _, _, png in ok)})

"""Alert fan-out at Discord's rate limit: one breakout posted to 10,000 channels in 2,000 guilds (1,000 in 200
with --quick) by the real bot, against a local Discord that enforces the global limit of 50 requests a second and
per-channel message buckets with Discord's 429 bodies and headers (tests/support/local_discord/ratelimits.py).

The local Discord runs on its own thread and event loop, so the bot's loop stalls measured here are the bot's.
Measured: the achieved post rate against the limit, 429s, posts per channel, and the bot loop's longest stall.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from bench.run import Result, Ticker
from services.pacing import DISCORD_GLOBAL_PER_SECOND
from tests.support.local_discord import LocalDiscord, pointed_at, smallcaps_bot

BREAKOUT_DAY = date(2025, 10, 3)  # IWM's first close above the article's resistance zone
CHANNELS_PER_GUILD = 5
T = TypeVar("T")


class DiscordThread:
    """A LocalDiscord served from its own thread and event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="local-discord", daemon=True)
        self.thread.start()
        self.local = self.call(self._start())

    async def _start(self) -> LocalDiscord:
        return await LocalDiscord().start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run on the server's loop and block until done (set-up and tear-down only)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run on the server's loop; the caller's loop goes on meanwhile."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.call(self.local.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


@contextmanager
def discord_thread() -> Iterator[DiscordThread]:
    served = DiscordThread()
    try:
        yield served
    finally:
        served.close()


async def drop_uploads(local: LocalDiscord, start: int) -> int:
    """Keep the local Discord's memory flat over 10,000 chart uploads: of requests from `start` on, only the
    files' PNG signatures are kept (for the check below). Returns where the next call starts."""
    local.attachment_data.clear()
    end = len(local.requests)
    for request in local.requests[start:end]:
        for part in request.files:
            part.data = part.data[:8]
    return end


async def bench_alert_fanout(rounds: int) -> Result:
    guilds = 2_000 if rounds > 3 else 200
    channels = guilds * CHANNELS_PER_GUILD
    with tempfile.TemporaryDirectory() as tmp, discord_thread() as served:
        local = served.local
        made = [local.add_guild(f"fan-{g}", channels=[f"alerts-{c}" for c in range(CHANNELS_PER_GUILD)],
                                members=()) for g in range(guilds)]
        with pointed_at(local):
            env = {"DATABASE_PATH": str(Path(tmp) / "bot.db"), "DEV_GUILD_ID": str(local.guild.id)}
            async with smallcaps_bot(local, env) as bot:
                owner = int(local.bot_user["id"])
                for guild in made:
                    for channel in guild.channels:
                        await bot.resources.alerts.subscribe(guild.id, int(channel["id"]), "breakout",
                                                             created_by=owner)
                cog = bot.get_cog("Alerts")
                while cog._last_close_checked is None:  # noqa: ASYNC110 (a cog attribute, no event to wait on)
                    await asyncio.sleep(0.05)  # the watcher's start-up recovery and first check
                limits = served.call(_enforce(local))
                ticker = Ticker()
                tick = asyncio.create_task(ticker.run())
                started = time.monotonic()
                done = asyncio.create_task(cog.run_close_check(BREAKOUT_DAY))
                dropped = 0
                while not done.done():
                    await asyncio.wait([done], timeout=1.0)
                    dropped = await served.run(drop_uploads(local, dropped))
                posted = done.result()
                elapsed = time.monotonic() - started
                ticker.stop = True
                await tick
    posts = [r for r in local.requests if r.method == "POST" and r.path.endswith("/messages")]
    ok = [r for r in posts if r.status == 200]
    first, last = min(r.received_at for r in ok), max(r.received_at for r in ok)
    rate = (len(ok) - 1) / (last - first)
    ratio = rate / DISCORD_GLOBAL_PER_SECOND
    once = len({r.path for r in ok}) == len(ok) == channels == posted
    refused = limits.global_429s + limits.route_429s
    stall = max(ticker.stalls)
    passed = ratio >= 0.9 and refused <= 5 and once and stall < 0.05
    return Result("alert fan-out", f"{rate:.1f} posts/s, {refused} x 429, stall {stall * 1000:.0f} ms",
                  f"Discord's limit {DISCORD_GLOBAL_PER_SECOND:.0f}/s", ratio,
                  ">= 0.9x, <= 5 x 429, once each, stall < 50 ms", passed,
                  {"channels": channels, "guilds": guilds, "posted": posted, "seconds": round(elapsed, 1),
                   "global_429s": limits.global_429s, "route_429s": limits.route_429s,
                   "all_png": all(r.files and r.files[0].data.startswith(b"\x89PNG") for r in ok)})


async def _enforce(local: LocalDiscord) -> Any:
    return local.enforce_rate_limits()

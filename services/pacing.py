"""Pacing: keep a burst of requests under a platform's rate limit instead of running into it.

Discord allows a bot 50 requests a second across all its shards and processes (its "global" limit). discord.py
waits out a 429 after the fact, but a fan-out of thousands of alert posts that runs into the limit gets dozens of
429s, and enough of them in ten minutes gets the bot's IP banned for an hour. So alert posts are paced below it.
"""

from __future__ import annotations

import asyncio
import time

DISCORD_GLOBAL_PER_SECOND = 50.0
ALERT_SHARE = 0.95  # of the global limit for alert posts; the rest stays free for commands and the log


class RateLimiter:
    """At most `rate` acquisitions a second, evenly spaced, first come first served (one slot at a time: a
    token bucket of size 1, so a backlog never turns into a burst)."""

    def __init__(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be above 0, not {rate}")
        self.interval = 1.0 / rate
        self._next = 0.0  # time.monotonic() of the next free slot
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        # One waiter at a time, each on its own slot: slots follow each other a fixed interval apart (so a
        # sleep's late wake-up does not slow the rate), and a slot is never in the past (so after a stalled
        # loop the waiters still leave one interval apart: a stall never turns into a burst).
        async with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            if slot > now:
                await asyncio.sleep(slot - now)
            self._next = slot + self.interval


def alert_post_rate(shard_ids: tuple[int, ...] | None, shard_count: int | None) -> float:
    """This process's alert posts a second: its shards' share of the bot-wide limit (every process of a bot
    shares one global limit, so with shards 0-1 of 4 a process takes half)."""
    share = 1.0 if not shard_count or shard_ids is None else len(shard_ids) / shard_count
    return DISCORD_GLOBAL_PER_SECOND * ALERT_SHARE * share

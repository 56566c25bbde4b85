"""Pacing: keep a burst of requests under a platform's rate limit instead of running into it.

Discord allows a bot 50 requests a second across all its shards and processes (its "global" limit). discord.py
waits out a 429 after the fact, but a fan-out of thousands of alert posts that runs into the limit gets dozens of
429s, and enough of them in ten minutes gets the bot's IP banned for an hour. So every request that counts is paced
below it, in aiohttp itself (`paced_requests`): retries too. Pacing only the alert posts was not enough: after a
global 429 discord.py holds every request until the limit resets, then lets them all go at once, outside any pace,
and that burst drew the next 429s (bench: alert_fanout, 1,000 of them under load).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp

DISCORD_GLOBAL_PER_SECOND = 50.0
SHARE = 0.95  # of the global limit: the rest is room for jitter between the bot's clock and Discord's


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

    def hold(self, seconds: float) -> None:
        """No slot for `seconds` from now: the platform said to wait (a global 429's retry_after)."""
        self._next = max(self._next, time.monotonic() + seconds)


def process_rate(shard_ids: tuple[int, ...] | None, shard_count: int | None) -> float:
    """This process's requests a second: its shards' share of the bot-wide limit (every process of a bot
    shares one global limit, so with shards 0-1 of 4 a process takes half)."""
    share = 1.0 if not shard_count or shard_ids is None else len(shard_ids) / shard_count
    return DISCORD_GLOBAL_PER_SECOND * SHARE * share


def paced_requests(limiter: RateLimiter, counted: Callable[[str], bool]) -> aiohttp.TraceConfig:
    """An aiohttp trace that holds each request whose URL is `counted` until `limiter` gives it a slot (aiohttp
    awaits its trace callbacks before it sends a request). A global 429 holds every slot for its `retry_after`, as
    Discord asks: discord.py holds only the requests it has not started, so the paced ones already past its check
    drew a 429 each until the limit's second had room again."""

    async def on_request_start(session: aiohttp.ClientSession, context: SimpleNamespace,
                               params: aiohttp.TraceRequestStartParams) -> None:
        if counted(str(params.url)):
            await limiter.acquire()

    async def on_request_end(session: aiohttp.ClientSession, context: SimpleNamespace,
                             params: aiohttp.TraceRequestEndParams) -> None:
        response = params.response
        if response.status == 429 and response.headers.get("X-RateLimit-Global") and counted(str(params.url)):
            body = await response.json()  # aiohttp keeps the body: discord.py reads the same one after
            limiter.hold(float(body.get("retry_after", 1.0)))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    trace.on_request_end.append(on_request_end)
    return trace

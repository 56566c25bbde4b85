"""Alert fan-out under Discord's rate limits: the local Discord enforces the global limit (50 requests a second)
and per-channel message buckets with Discord's 429 bodies and headers; the real bot posts one breakout to many
channels in many guilds. Every post goes out once, and the pacing keeps the bot under the limit instead of
running into it. (How fast it gets there is bench/fanout.py's subject, not a test's.)"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import aiohttp
import discord

from app import counted_by_discord
from services.pacing import DISCORD_GLOBAL_PER_SECOND, RateLimiter, process_rate
from tests.support.local_discord import LocalDiscord

BREAKOUT_DAY = date(2025, 10, 3)  # IWM's first close above the article's resistance zone (tests/test_discord_alerts)
GUILDS, CHANNELS = 12, 5


async def test_the_local_discord_answers_a_burst_over_the_global_limit_as_discord_does(
    discord_: LocalDiscord,
) -> None:
    """The model the bot is measured against: 60 requests at once -> 50 answered, 10 refused with a global 429."""
    limits = discord_.enforce_rate_limits()
    channel = discord_.guild.channel("general")
    headers = {"Authorization": f"Bot {discord_.token}"}
    async with aiohttp.ClientSession() as http:
        async def get() -> tuple[int, dict[str, str], Any]:
            async with http.get(f"{discord_.api_url}/channels/{channel['id']}", headers=headers) as response:
                return response.status, dict(response.headers), await response.json()

        answers = await asyncio.gather(*(get() for _ in range(60)))
    refused = [a for a in answers if a[0] == 429]
    assert (len(answers) - len(refused), len(refused), limits.global_429s) == (50, 10, 10)
    _, head, body = refused[0]
    assert body["global"] is True and body["message"] == "You are being rate limited."
    assert 0 < body["retry_after"] <= 1.0
    assert head["X-RateLimit-Global"] == "true" and head["X-RateLimit-Scope"] == "global" and "Via" in head


async def test_a_breakout_reaches_every_channel_once_without_a_429(running_bot: Any, discord_: LocalDiscord) -> None:
    """60 channels in 12 guilds, the limits on: 60 posts, one per channel, and Discord never had to refuse one
    (without the pacing the same run gets global 429s: five sends at a time outrun 50 a second locally)."""
    guilds = [discord_.add_guild(f"fan-{g}", channels=[f"alerts-{c}" for c in range(CHANNELS)]) for g in range(GUILDS)]
    bot, _ = await running_bot()
    store = bot.resources.alerts
    owner = int(discord_.bot_user["id"])
    for guild in guilds:
        for channel in guild.channels:
            await store.subscribe(guild.id, int(channel["id"]), "breakout", created_by=owner)
    cog = bot.get_cog("Alerts")
    await discord_.wait_until(lambda: cog._last_close_checked is not None, 15.0, "the watcher's first check")
    limits = discord_.enforce_rate_limits()

    assert await cog.run_close_check(BREAKOUT_DAY) == GUILDS * CHANNELS
    posts = [r for r in discord_.requests if r.method == "POST" and r.path.endswith("/messages")]
    per_channel = {r.path for r in posts if r.status == 200}
    expected = {f"/channels/{c['id']}/messages" for g in guilds for c in g.channels}
    assert per_channel == expected and len(posts) == len(expected)  # each once, none refused and retried
    assert (limits.global_429s, limits.route_429s) == (0, 0)
    assert all(len(discord_.channel_messages(c)) == 1 for g in guilds for c in g.channels)


async def test_the_pace_never_runs_ahead_of_its_rate() -> None:
    """At 200 a second (5 ms slots), any k+1 acquisitions in a row span at least k-1 slots (a late wake-up may
    be followed by a short gap, never by a burst), and 21 of them span 100 ms: neither bursts nor drifts."""
    limiter = RateLimiter(200.0)
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(21):
        await limiter.acquire()
        times.append(loop.time())
    slot = 0.005
    assert all(times[j] - times[i] >= (j - i - 1) * slot - 1e-4
               for i in range(len(times)) for j in range(i + 1, len(times)))
    assert times[-1] - times[0] >= 20 * slot - 1e-3


def test_each_process_takes_its_shards_share_of_the_global_limit() -> None:
    whole = process_rate(None, None)
    assert whole < DISCORD_GLOBAL_PER_SECOND
    assert process_rate((0, 1), 4) == whole / 2
    assert process_rate((2,), 4) == whole / 4


def test_every_request_under_discords_global_limit_is_paced_and_only_those() -> None:
    """Discord exempts interaction callbacks and webhooks (followups) from its global limit; the gateway and the
    CDN are other hosts."""
    base = discord.http.Route.BASE
    assert counted_by_discord(f"{base}/channels/1/messages")
    assert counted_by_discord(f"{base}/applications/1/guilds/2/commands")
    assert not counted_by_discord(f"{base}/interactions/1/tok.en/callback")
    assert not counted_by_discord(f"{base}/webhooks/1/tok.en/messages/@original")
    assert not counted_by_discord("wss://gateway.discord.gg/?v=10&encoding=json")
    assert not counted_by_discord("https://cdn.discordapp.com/attachments/1/2/iwm.png")


async def test_a_hold_keeps_every_slot_back_for_its_time() -> None:
    """A global 429's retry_after holds the pace: the next slot comes no sooner."""
    limiter = RateLimiter(200.0)
    loop = asyncio.get_running_loop()
    await limiter.acquire()
    limiter.hold(0.05)
    start = loop.time()
    await limiter.acquire()
    assert loop.time() - start >= 0.05 - 1e-3

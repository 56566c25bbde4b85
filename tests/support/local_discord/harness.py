"""Running a bot against the local Discord: point discord.py at it, start a client until it is ready, or the real
SmallcapsBot as app.py builds it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Protocol

import discord
import yarl


class Served(Protocol):
    """What a bot needs of a local Discord to run against it: a LocalDiscord, or one served by another process
    (bench/discord_process.py)."""

    @property
    def token(self) -> str: ...
    @property
    def api_url(self) -> str: ...
    @property
    def gateway_url(self) -> str: ...


@contextmanager
def pointed_at(local: Served) -> Iterator[None]:
    """Point discord.py's REST base URL and gateway at the local Discord; restore them afterwards."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = local.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(local.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


@asynccontextmanager
async def smallcaps_bot(local: Served, env: Mapping[str, str]) -> AsyncIterator[Any]:
    """The real SmallcapsBot, built as app.py builds it (settings from `env` plus the local token, then
    `open_resources`), running against the local Discord until the block ends."""
    from app import SmallcapsBot, open_resources
    from services.config import Settings

    settings = Settings.from_env({"DISCORD_TOKEN": local.token, **env})
    async with open_resources(settings) as resources:
        async with run_bot(SmallcapsBot(settings, resources), local) as bot:
            yield bot


@asynccontextmanager
async def run_bot(bot: discord.Client, local: Served, *, timeout: float = 10.0) -> AsyncIterator[discord.Client]:
    """Start `bot` against the local Discord (discord.py must already point at it), wait until ready, close after.

    Two discord.py waits meant for the real Discord are shortened: the 5 s pause before each IDENTIFY after the
    first (identify rate limit) and the 2 s `guild_ready_timeout` after the last GUILD_CREATE.
    """

    async def no_identify_wait(shard_id: int | None, *, initial: bool = False) -> None:
        return None

    bot.before_identify_hook = no_identify_wait  # type: ignore[method-assign]
    bot._connection.guild_ready_timeout = min(bot._connection.guild_ready_timeout, 0.1)
    task = asyncio.create_task(bot.start(local.token))
    try:
        deadline = time.monotonic() + timeout
        while not bot.is_ready():
            if task.done():
                task.result()  # raises what stopped the bot
                raise RuntimeError("the bot stopped before it was ready")
            if time.monotonic() > deadline:
                requests = getattr(local, "requests", "(served by another process)")
                raise TimeoutError(f"bot not ready after {timeout}s; requests: {requests}")
            await asyncio.sleep(0.02)
        yield bot
    finally:
        await bot.close()
        with suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5.0)

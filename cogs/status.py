"""`/iwm status`: the bot's health as members and operators see it: data providers, data age, latency."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from cogs.common import GREEN, YELLOW, IwmCog, add_iwm_cog

if TYPE_CHECKING:
    from app import SmallcapsBot


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


class Status(IwmCog):
    def __init__(self, bot: SmallcapsBot) -> None:
        super().__init__(bot)
        self.started = time.monotonic()

    @app_commands.command(name="status", description="The bot's health: data providers, data age, latency")
    async def status(self, interaction: discord.Interaction) -> None:
        market = self.bot.resources.market
        rows = market.status()
        providers = [r for r in rows if "provider" in r]
        cached = [r for r in rows if "symbol" in r]
        healthy = all(p["state"] == "closed" for p in providers)
        embed = discord.Embed(title="smallcaps status", colour=GREEN if healthy else YELLOW,
                              timestamp=datetime.now(UTC))
        if providers:
            embed.add_field(name="Live providers", inline=False, value="\n".join(
                f"**{p['provider']}**: {'OK' if p['state'] == 'closed' else 'resting after failures'}"
                f" · last success {_age(p['last_success_age_s'])}"
                + (f" · last error: {p['last_error'][:120]}" if p["last_error"] else "")
                for p in providers))
        else:
            embed.add_field(name="Market data", value="bundled history (offline mode)", inline=False)
        if cached:
            embed.add_field(name="Data in memory", inline=False, value="\n".join(
                f"{c['symbol']}: {c['source']}, last bar {c['as_of']}, fetched {_age(c['age_s'])}"
                for c in cached[:15]))
        latency = self.bot.latency
        uptime = time.monotonic() - self.started
        embed.add_field(name="Bot", inline=False, value=(
            f"uptime {uptime / 3600:.1f} h · gateway latency "
            + (f"{latency * 1000:.0f} ms" if math.isfinite(latency) else "n/a")
            + f" · shards {self.bot.shard_count or 1}"))
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Status(bot))

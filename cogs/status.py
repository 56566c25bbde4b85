"""`/iwm status`: the bot's health as members and operators see it: data sources, data age, charts, latency."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from cogs.common import GREEN, YELLOW, IwmCog, add_iwm_cog, plural
from services.deployment import describe_process
from services.http import DOCUMENTS, MARKET_DATA, SourceHealth
from services.renderer import RenderHealth

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


def _charts(health: RenderHealth) -> str:
    """The render pool: workers up, pools replaced after a worker died, charts drawn and from the cache, the last
    failure and when."""
    if not health.processes:
        return (f"rendered in threads ({plural(health.workers, 'thread')}) · {plural(health.renders, 'chart')} "
                f"drawn, {health.cache_hits} from the cache")
    text = (f"{health.workers_up} of {plural(health.workers, 'render worker')} up · "
            f"{plural(health.restarts, 'restart')} · {plural(health.renders, 'chart')} drawn, "
            f"{health.cache_hits} from the cache")
    if health.last_failure and health.last_failure_at:
        seconds = (datetime.now(UTC) - health.last_failure_at).total_seconds()
        text += (f" · last failure {health.last_failure_at:%Y-%m-%d %H:%M:%S} UTC ({_age(seconds)}):"
                 f" {health.last_failure[:120]}")
    return text


def _sources(sources: list[SourceHealth]) -> str:
    return "\n".join(
        f"**{s.name}**: {'OK' if s.state == 'closed' else 'resting after failures'}"
        f" · last success {_age(s.last_success_age_s)}"
        + (f" · last error: {s.last_error[:120]}" if s.last_error else "")
        for s in sources)


class Status(IwmCog):
    def __init__(self, bot: SmallcapsBot) -> None:
        super().__init__(bot)
        self.started = time.monotonic()

    @app_commands.command(name="status", description="The bot's health: data providers, data age, latency")
    async def status(self, interaction: discord.Interaction) -> None:
        status = self.bot.resources.market.status()
        providers = [s for s in status.sources if s.kind == MARKET_DATA]
        documents = [s for s in status.sources if s.kind == DOCUMENTS]
        charts = self.bot.resources.renderer.health()
        healthy = all(s.state == "closed" for s in status.sources) and charts.healthy
        embed = discord.Embed(title="smallcaps status", colour=GREEN if healthy else YELLOW,
                              timestamp=datetime.now(UTC))
        if providers:
            embed.add_field(name="Live providers", inline=False, value=_sources(providers))
        else:
            embed.add_field(name="Market data", value="bundled history (offline mode)", inline=False)
        if documents:  # FRED, iShares, Yahoo quoteSummary, once used
            embed.add_field(name="Document sources", inline=False, value=_sources(documents))
        if status.series:
            market = self.bot.resources.market
            lines = []
            for c in status.series[:15]:
                behind = (await market.age(c.as_of)).behind
                lines.append(f"{c.symbol}: {c.source}, last bar {c.as_of.isoformat()}"
                             + (f" ({plural(behind, 'session')} behind the last close)" if behind else " (current)")
                             + (f", fetched {_age(c.age_s)}" if c.age_s is not None else ""))
            embed.add_field(name="Data in memory", inline=False, value="\n".join(lines))
        embed.add_field(name="Charts", inline=False, value=_charts(charts))
        latency = self.bot.latency
        uptime = time.monotonic() - self.started
        embed.add_field(name="Bot", inline=False, value=(
            f"uptime {uptime / 3600:.1f} h · gateway latency "
            + (f"{latency * 1000:.0f} ms" if math.isfinite(latency) else "n/a")
            + f" · shards {self.bot.shard_count or 1}"))
        embed.add_field(name="Process", inline=False, value="\n".join(
            describe_process(self.bot.settings, self.bot.shard_ids, self.bot.shard_count)))
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Status(bot))

"""The composition root: settings -> resources (HTTP session, database, market data, renderer) -> bot -> run.

Shaped like discord.py's `examples/advanced_startup.py`: `open_resources` builds everything long-lived once
and `SmallcapsBot` gets it injected, so the console and the tests build the same bot without logging in. A real
run adds `setup_logging` (the token redacted from every log line) and `run_bot` (resources, bot, a clean stop on
a signal). The command line (`bot.py`) and the console (`console.py`) import this module, never the reverse.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import re
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from cogs.alerts import MuteButton
from cogs.buttons import ChartButton
from cogs.common import RenderCooldown
from cogs.errors import handle_command_error
from services.alerts import AlertStore
from services.community import CommunityLog
from services.config import Settings, Zones
from services.documents import Documents, build_documents
from services.http import Sources
from services.market import MarketData, build_providers
from services.pacing import RateLimiter, paced_requests, process_rate
from services.renderer import MB, Renderer
from services.schema.shards import Layout, check_layout
from services.sentiment import SentimentStore
from services.storage import Database

log = logging.getLogger("smallcaps")

# Requests Discord leaves out of its global limit: interaction callbacks and webhooks (followups, their edits).
UNCOUNTED = re.compile(r"/(interactions|webhooks)/")


def counted_by_discord(url: str) -> bool:
    """A request under Discord's global limit: one to the REST API (not the gateway, not the CDN), not exempt."""
    base = discord.http.Route.BASE  # read at each request: tests point it at a local Discord
    return url.startswith(base) and UNCOUNTED.match(url, len(base)) is None


EXTENSIONS = ("cogs.levels", "cogs.analysis", "cogs.alerts", "cogs.sentiment", "cogs.community", "cogs.status",
              "cogs.help")


@dataclass
class Resources:
    """Everything long-lived the bot and the console share, built once in `open_resources`."""

    settings: Settings
    session: aiohttp.ClientSession
    database: Database
    market: MarketData
    renderer: Renderer
    alerts: AlertStore
    sentiment: SentimentStore
    community: CommunityLog
    documents: Documents

    async def zones(self, guild_id: int | None) -> Zones:
        """The levels in force for a guild (its own, set with /iwm setlevels, or the configured default)."""
        return await self.alerts.levels(guild_id) if guild_id else self.settings.zones


async def last_session() -> date:
    """The last NYSE session whose close has passed (plus the provider's usual delay): live data should have it."""
    from services import market_calendar

    return await asyncio.to_thread(market_calendar.last_session_now)


@asynccontextmanager
async def open_resources(settings: Settings, *, render_processes: bool = True) -> AsyncIterator[Resources]:
    """The shared resources. `render_processes=False` renders in a thread (the console's one-shot answers),
    otherwise in worker processes (see Renderer)."""
    async with AsyncExitStack() as stack:  # closed in reverse: the log writer flushes before the database closes
        database = Database.from_settings(settings)
        await database.open()
        stack.push_async_callback(database.close)
        if database.engine == "sqlite":  # one file per shard layout; one PostgreSQL serves every layout
            layout = Layout.of(settings.shard_ids, settings.shard_count)  # a file of another layout is refused
            await database.run_sqlite(lambda d: check_layout(d.conn, layout))
        session = aiohttp.ClientSession(headers={"User-Agent": "smallcaps-bot/0.1"})
        stack.push_async_callback(session.close)
        renderer = Renderer(processes=render_processes, cache_bytes=settings.chart_cache_mb * MB)
        stack.callback(renderer.close)
        sources = Sources()  # every live source's breaker, market data's and documents', for /iwm status
        market = MarketData(build_providers(settings, session), database=database, ttl=settings.cache_ttl_seconds,
                            expected_session=last_session, sources=sources, deadline=settings.fetch_deadline_seconds)
        alerts = AlertStore(database, settings.zones)
        sentiment = SentimentStore(database)
        community = CommunityLog(database)
        await community.open()
        stack.push_async_callback(community.close)
        documents = build_documents(settings, session, database, sources)
        if render_processes:  # the bot's resources, built for its lifetime (a console answer skips the collection)
            freeze_heap()
        yield Resources(settings, session, database, market, renderer, alerts, sentiment, community, documents)


FULL_COLLECTION_EVERY = 100  # middle-generation collections per full one (Python's default: 10)


def freeze_heap() -> None:
    """What start-up built (modules, the bundled data, the resources, later every guild's cache) lives as long as
    the bot. Left in the collector's oldest generation it is walked again by every full collection, a pause of the
    event loop: 60-170 ms for the resources alone on the 2-core machine (bench: event_loop's 74.5 ms stall).
    Collected once, then frozen (gc.freeze), the full collections only walk what came later. Those come 10x less
    often too: a full pass still took 50-75 ms, four times in the 10,000-channel fan-out (bench: alert_fanout;
    none since, longest collection 6 ms). Most garbage is freed by reference counting; the younger generations
    still collect cycles as before."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


class SmallcapsTree(app_commands.CommandTree):
    """Every app command's errors go through the one policy in `cogs.errors`."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        name = interaction.command.qualified_name if interaction.command else "?"
        await handle_command_error(interaction, error, f"/{name}")


class SmallcapsBot(commands.AutoShardedBot):
    def __init__(self, settings: Settings, resources: Resources, *, sync: bool = False,
                 background: bool = True) -> None:
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # the bot has no voice features
        intents = discord.Intents.default()
        intents.message_content = settings.message_content_intent
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=SmallcapsTree,
            chunk_guilds_at_startup=False,
            shard_count=settings.shard_count,
            shard_ids=list(settings.shard_ids) if settings.shard_ids else None,  # type: ignore[arg-type]  # None: all
            allowed_mentions=discord.AllowedMentions(everyone=False, users=False, roles=True),
            # every request under the global limit, retries included, paced below it (services.pacing)
            http_trace=paced_requests(RateLimiter(process_rate(settings.shard_ids, settings.shard_count)),
                                      counted_by_discord),
        )
        self.settings = settings
        self._heap_frozen = False  # see on_ready
        self.resources = resources
        self.force_sync = sync
        self.background = background  # False in the console: no watcher loops without a Discord connection
        gateway_log = logging.getLogger("discord.gateway")
        if GATEWAY_EVENTS not in gateway_log.filters:  # on the logger itself: before any handler, caplog's too
            gateway_log.addFilter(GATEWAY_EVENTS)
        self.render_cooldown = RenderCooldown(settings.render_cooldown_seconds)
        self.iwm = app_commands.Group(name="iwm", description="Small caps through IWM: levels, valuation, sectors")
        self.tree.add_command(self.iwm)

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        # Buttons carry their state in their custom_id: registered once, they answer presses on any message,
        # also on those sent before a restart.
        self.add_dynamic_items(ChartButton, MuteButton)
        await self.sync_commands()
        await self.resources.renderer.warm_up()

    def command_tree_hash(self) -> str:
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    async def sync_commands(self) -> None:
        """Sync to DEV_GUILD_ID at every start (instant there); globally only when the tree changed or
        `--sync` asks, since global syncs are rate limited and take a while to reach every client."""
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), self.settings.dev_guild_id)
            return
        digest = self.command_tree_hash()
        db = self.resources.database

        last = await db.cached_row("_meta", "key", "command_tree_hash")
        if self.force_sync or (last["value"] if last else None) != digest:
            synced = await self.tree.sync()
            await db.cache_row("_meta", "key", {"key": "command_tree_hash", "value": digest})
            log.info("synced %d global commands", len(synced))
        else:
            log.info("command tree unchanged since the last global sync; not syncing")

    async def on_ready(self) -> None:
        log.info("ready as %s in %d guilds (shards %s)", self.user, len(self.guilds), self.shard_ids or "all")
        if not self._heap_frozen:  # every guild's cache, from the gateway: with 2,000 guilds, 70-100 ms a pass
            self._heap_frozen = True
            freeze_heap()


REDACTED = "[token redacted]"
# An interaction's token rides in its URLs (discord.py logs routes at DEBUG, and at WARNING on a 429):
# /webhooks/<application id>/<token>/... and /interactions/<interaction id>/<token>/callback.
INTERACTION_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]+")


class RedactToken(logging.Filter):
    """Never let the bot's token, or an interaction's token, reach a log line, whatever logs it. Never raises:
    a record whose message does not format has its parts redacted, and logging reports its error."""

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self.token = token

    def redact(self, text: str) -> str:
        if self.token:
            text = text.replace(self.token, REDACTED)
        return INTERACTION_TOKEN.sub(rf"\1{REDACTED}", text)

    def redact_arg(self, arg: object) -> object:
        """An argument of a record that does not format: redacted text if its text carries a token, else itself."""
        text = arg if isinstance(arg, str) else repr(arg)
        redacted = self.redact(text)
        return arg if redacted == text else redacted

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message: str | None = record.getMessage()
        except Exception:  # e.g. "%d" % ("x",): logging reports that itself when a handler formats the record
            message = None
            record.msg = self.redact_arg(record.msg)
            if isinstance(record.args, dict):
                record.args = {key: self.redact_arg(value) for key, value in record.args.items()}
            elif isinstance(record.args, tuple):
                record.args = tuple(self.redact_arg(arg) for arg in record.args)
        if message is not None and self.redact(message) != message:
            record.msg, record.args = self.redact(message), ()
        if record.exc_info:  # formatted after the filters ran: fold a traceback that carries a token in, redacted
            trace = logging.Formatter().formatException(record.exc_info)
            if self.redact(trace) != trace:
                record.msg = f"{record.msg if message is None else record.getMessage()}\n{self.redact(trace)}"
                record.exc_info, record.exc_text = None, None
                if message is not None:
                    record.args = ()
        return True


class SummariseGatewayEvents(logging.Filter):
    """discord.py logs every gateway event it receives at DEBUG, members' messages and command options included.
    A dispatched event's record keeps its name, sequence and ids, and a message's text only as its length, so a
    DEBUG log holds no member text (the community log is the one place it is kept, under forget-me and retention).
    """

    MESSAGE = "For Shard ID %s: WebSocket Event: %s"  # discord/gateway.py, DiscordWebSocket.received_message

    @staticmethod
    def summary(event: dict[str, Any]) -> dict[str, Any]:
        data = event.get("d")
        if event.get("op") != 0 or not isinstance(data, dict):  # hello, heartbeat ack, reconnect: no member text
            return event
        kept: dict[str, Any] = {k: v for k, v in data.items() if k == "id" or k.endswith("_id")}
        if isinstance(author := data.get("author"), dict):
            kept["author_id"] = author.get("id")
        if isinstance(content := data.get("content"), str):
            kept["content_length"] = len(content)
        return {"op": 0, "t": event.get("t"), "s": event.get("s"), "d": kept}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.MESSAGE and isinstance(record.args, tuple) and len(record.args) == 2 \
                and isinstance(record.args[1], dict):
            record.args = (record.args[0], self.summary(record.args[1]))
        return True


GATEWAY_EVENTS = SummariseGatewayEvents()


def setup_logging(settings: Settings) -> None:
    discord.utils.setup_logging(level=getattr(logging, settings.log_level, logging.INFO), root=True)
    token_filter = RedactToken(settings.discord_token)
    for handler in logging.getLogger().handlers:
        handler.addFilter(token_filter)


async def run_bot(settings: Settings, *, sync: bool = False) -> None:
    async with open_resources(settings) as resources:
        bot = SmallcapsBot(settings, resources, sync=sync)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # A clean stop: cogs unload (writers flush), then the database closes.
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
        async with bot:
            await bot.start(settings.discord_token or "")

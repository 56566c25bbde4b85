"""smallcaps: a Discord bot for communities that follow US small caps through IWM.

    python bot.py run [--sync]            run the bot on Discord (needs DISCORD_TOKEN)
    python bot.py console "/iwm levels"   answer a slash command offline, in the terminal
    python bot.py replay --from 2024-01-01 --to 2026-08-21   backtest the breakout alerts

Start-up order: settings -> resources (HTTP session, database, market data, renderer) -> bot -> run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import aiohttp
import discord
import sqlite_utils
from discord import app_commands
from discord.ext import commands

from cogs.errors import handle_command_error
from services.alerts import AlertStore
from services.charts import Renderer
from services.community import CommunityLog
from services.config import ConfigError, Settings, Zones
from services.documents import Documents, build_documents
from services.market import MarketData, build_providers
from services.sentiment import SentimentStore
from services.storage import Database, DatabaseError

log = logging.getLogger("smallcaps")

EXTENSIONS = ("cogs.levels", "cogs.analysis", "cogs.alerts", "cogs.sentiment", "cogs.community", "cogs.status")

NO_TOKEN = """\
No DISCORD_TOKEN is set, so the bot cannot log in to Discord.

To run it on Discord: create an application at https://discord.com/developers/applications, add a bot,
copy its token into .env as DISCORD_TOKEN=... (see .env.example), invite it (README: "Run it on Discord").

To try it without Discord, ask the console; it answers any slash command offline on bundled data:
    python bot.py console "/iwm levels"
"""


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

    now = datetime.now(UTC) - timedelta(hours=1)
    return await asyncio.to_thread(market_calendar.last_completed_session, now)


@asynccontextmanager
async def open_resources(settings: Settings, *, render_processes: bool = True) -> AsyncIterator[Resources]:
    """The shared resources. `render_processes=False` renders in a thread (the console's one-shot answers),
    otherwise in worker processes (see Renderer)."""
    async with AsyncExitStack() as stack:  # closed in reverse: the log writer flushes before the database closes
        database = Database(settings.database_path)
        await database.open()
        stack.push_async_callback(database.close)
        session = aiohttp.ClientSession(headers={"User-Agent": "smallcaps-bot/0.1"})
        stack.push_async_callback(session.close)
        renderer = Renderer(processes=render_processes)
        stack.callback(renderer.close)
        market = MarketData(build_providers(settings, session), database=database, ttl=settings.cache_ttl_seconds,
                            expected_session=last_session)
        alerts = AlertStore(database, settings.zones)
        await alerts.setup()
        sentiment = SentimentStore(database)
        await sentiment.open()
        community = CommunityLog(database)
        await community.open()
        stack.push_async_callback(community.close)
        documents = build_documents(settings, session, database)
        yield Resources(settings, session, database, market, renderer, alerts, sentiment, community, documents)


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
            shard_ids=list(settings.shard_ids) if settings.shard_ids else None,
            allowed_mentions=discord.AllowedMentions(everyone=False, users=False, roles=True),
        )
        self.settings = settings
        self.resources = resources
        self.force_sync = sync
        self.background = background  # False in the console: no watcher loops without a Discord connection
        self.iwm = app_commands.Group(name="iwm", description="Small caps through IWM: levels, valuation, sectors")
        self.tree.add_command(self.iwm)

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
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

        def last_synced(d: sqlite_utils.Database) -> str | None:
            rows = list(d.query("select value from _meta where key = 'command_tree_hash'"))
            return rows[0]["value"] if rows else None

        if self.force_sync or await db.run(last_synced) != digest:
            synced = await self.tree.sync()
            await db.run(lambda d: d["_meta"].upsert({"key": "command_tree_hash", "value": digest}, pk="key"))
            log.info("synced %d global commands", len(synced))
        else:
            log.info("command tree unchanged since the last global sync; not syncing")

    async def on_ready(self) -> None:
        log.info("ready as %s in %d guilds (shards %s)", self.user, len(self.guilds), self.shard_ids or "all")


class RedactToken(logging.Filter):
    """Never let the token reach a log line, whatever logs it."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "[token redacted]"), ()
        if record.exc_info:  # formatted after the filters ran: fold a traceback that carries the token in, redacted
            trace = logging.Formatter().formatException(record.exc_info)
            if self.token in trace:
                record.msg = f"{record.getMessage()}\n{trace.replace(self.token, '[token redacted]')}"
                record.args, record.exc_info, record.exc_text = (), None, None
        return True


def setup_logging(settings: Settings) -> None:
    discord.utils.setup_logging(level=getattr(logging, settings.log_level, logging.INFO), root=True)
    if settings.discord_token:
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


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bot.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    run = sub.add_parser("run", help="run the bot on Discord (default)")
    run.add_argument("--sync", action="store_true", help="sync slash commands globally now")
    console = sub.add_parser("console", help="answer a slash command offline")
    console.add_argument("command", help='as a member types it, e.g. "/iwm levels period:1y"')
    console.add_argument("--json", action="store_true", help="print the message payload the bot would send")
    console.add_argument("--out", default="out", help="folder for attachments (default ./out)")
    replay = sub.add_parser("replay", help="print the alerts the watcher would have posted")
    replay.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    replay.add_argument("--to", dest="end", required=True, help="last day, YYYY-MM-DD")
    replay.add_argument("--levels", help="SUPPORT,ENTRY_LOW-ENTRY_HIGH,RES_LOW-RES_HIGH (default: configured)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from dotenv import load_dotenv

    args = parse_args(sys.argv[1:] if argv is None else argv)
    load_dotenv(".env")  # the current directory's .env only: predictable for operators and tests
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.mode == "console":
            from console import run_console

            return asyncio.run(run_console(settings, args.command, as_json=args.json, out_dir=args.out))
        if args.mode == "replay":
            from console import run_replay_command

            return asyncio.run(run_replay_command(settings, args.start, args.end, args.levels))
        if not settings.discord_token:
            print(NO_TOKEN, file=sys.stderr)
            return 1
        setup_logging(settings)
        asyncio.run(run_bot(settings, sync=getattr(args, "sync", False)))
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except discord.LoginFailure:
        print("error: Discord rejected the token: check DISCORD_TOKEN (Developer Portal > your app > Bot)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

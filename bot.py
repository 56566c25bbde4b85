"""smallcaps: a Discord bot for communities that follow US small caps through IWM.

    python bot.py run [--sync]            run the bot on Discord, on live data (needs DISCORD_TOKEN)
    python bot.py console "/iwm levels"   answer a slash command offline, in the terminal
    python bot.py replay --from 2024-01-01 --to 2026-08-21   backtest the breakout alerts
    python bot.py reshard --from-count 2 --to-count 3 shard0.db shard1.db shard2.db   move guilds between files

The command line only: it loads `.env`, reads the settings and hands over to `app.run_bot` (the composition
root), `console.run_console` or `console.run_replay_command`. A known failure is one line on stderr and an exit
status: 2 for a bad configuration or a database file this code cannot use as it is (a newer schema, another shard
layout), 1 for a missing or rejected token or a database error (the console and the replay return their own
status, 2 for bad input).
"""

from __future__ import annotations

import gc
import sys

if sys.argv[1:2] == ["console"]:
    # A console answer is one short process: no cyclic garbage collection while it imports and answers (4% of its
    # CPU; bench: breadth_console, valuation_console). Whatever cycles it leaves go when it exits.
    gc.disable()

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

import discord

from app import run_bot, setup_logging
from console import run_console, run_replay_command
from services.config import ConfigError, Settings
from services.schema import SchemaError
from services.schema.shards import reshard
from services.storage import DatabaseError

NO_TOKEN = """\
No DISCORD_TOKEN is set, so the bot cannot log in to Discord.

To run it on Discord: create an application at https://discord.com/developers/applications, add a bot,
copy its token into .env as DISCORD_TOKEN=... (see .env.example), invite it (README: "Run it on Discord").

To try it without Discord, ask the console; it answers any slash command offline on bundled data:
    python bot.py console "/iwm levels"
"""


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
    moves = sub.add_parser("reshard", help="move each guild's rows to the database file of its shard under a new "
                                           "SHARD_COUNT (stop every bot process first)")
    moves.add_argument("--from-count", type=int, required=True, help="the SHARD_COUNT the files were written under")
    moves.add_argument("--to-count", type=int, required=True, help="the new SHARD_COUNT")
    moves.add_argument("databases", nargs="+", type=Path, metavar="DB",
                       help="one file per shard, in shard order (max of the two counts; new shards' files are made)")
    return parser.parse_args(argv)


def run_reshard(args: argparse.Namespace) -> int:
    moved = reshard(args.databases, args.from_count, args.to_count)
    print(f"resharded {len(args.databases)} files from {args.from_count} to {args.to_count} shards: "
          + ", ".join(f"{table} {n}" for table, n in moved.items()))
    for path in args.databases[args.to_count:]:
        print(f"{path} holds no guild rows now: remove it once the {args.to_count} shard processes run")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from dotenv import load_dotenv

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.mode == "reshard":  # files named on the command line, no settings
        try:
            return run_reshard(args)
        except SchemaError as exc:
            print(f"reshard error: {exc}", file=sys.stderr)
            return 2
    load_dotenv(".env")  # the current directory's .env only: predictable for operators and tests
    try:
        settings = Settings.from_env(live_by_default=args.mode in (None, "run"))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.mode == "console":
            return asyncio.run(run_console(settings, args.command, as_json=args.json, out_dir=args.out))
        if args.mode == "replay":
            return asyncio.run(run_replay_command(settings, args.start, args.end, args.levels))
        if not settings.discord_token:
            print(NO_TOKEN, file=sys.stderr)
            return 1
        setup_logging(settings)
        asyncio.run(run_bot(settings, sync=getattr(args, "sync", False)))
    except SchemaError as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 2
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

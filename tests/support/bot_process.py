"""Run the bot exactly as an operator does (`python bot.py run`), pointed at a local Discord.

Used by tests that need a real process (signals, kill -9): `python tests/support/bot_process.py` with the usual
environment (DISCORD_TOKEN, DATABASE_PATH, ...) plus LOCAL_DISCORD_API and LOCAL_DISCORD_GATEWAY. Only the two
URLs differ from production, as in the in-process harness.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import discord
import yarl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

if __name__ == "__main__":
    discord.http.Route.BASE = os.environ["LOCAL_DISCORD_API"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["LOCAL_DISCORD_GATEWAY"])
    sys.argv = [str(ROOT / "bot.py"), "run"]
    runpy.run_path(sys.argv[0], run_name="__main__")  # bot.py as its own __main__, as `python bot.py run` runs it

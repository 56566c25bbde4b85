"""The local Discord (tests/support/local_discord) in a process of its own, for benchmarks that measure the bot's
event loop: in the bot's process its requests, records and garbage would be the bot's, and its work would take the
bot's GIL.

    python bench/discord_process.py GUILDS CHANNELS_PER_GUILD

prints one JSON line (the URLs, the token, the default guild and bot user, and every added guild's channel ids),
then answers commands read from stdin, one per line, each with one JSON line: `enforce` (Discord's rate limits
from now on), `report` (every message post and every 429 so far, and the limits' counts). It exits at end of input.
Uploaded files are cut to their PNG signature once a second, which keeps its memory flat over 10,000 charts.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.local_discord import LocalDiscord


def report(local: LocalDiscord) -> dict[str, Any]:
    limits = local.rate_limits
    return {
        "posts": [[r.path, r.status, r.received_at, bool(r.files) and r.files[0].data.startswith(b"\x89PNG")]
                  for r in local.requests if r.method == "POST" and r.path.endswith("/messages")],
        "refused": [[r.method, r.path, r.received_at, (r.response or {}).get("global")]
                    for r in local.requests if r.status == 429],
        "global_429s": limits.global_429s if limits else 0,
        "route_429s": limits.route_429s if limits else 0,
    }


async def trim_uploads(local: LocalDiscord) -> None:
    """Also freezes the heap once a second: the records would otherwise make each of this process's full garbage
    collections longer, and a paused local Discord reads the requests that came meanwhile as one burst over the
    global limit (the 429s came in clusters at the same moments of every run, 47, 80, 119 and 164 s in, with no full
    collection in the bot). Discord itself is not paused by the bot's load."""
    done = 0
    while True:
        await asyncio.sleep(1.0)
        gc.freeze()
        local.attachment_data.clear()
        end = len(local.requests)
        for request in local.requests[done:end]:
            for part in request.files:
                part.data = part.data[:8]
        done = end


async def main(guilds: int, channels: int) -> None:
    async with LocalDiscord() as local:
        made = [local.add_guild(f"fan-{g}", channels=[f"alerts-{c}" for c in range(channels)], members=())
                for g in range(guilds)]
        print(json.dumps({"api_url": local.api_url, "gateway_url": local.gateway_url, "token": local.token,
                          "dev_guild": local.guild.id, "bot_user": int(local.bot_user["id"]),
                          "guilds": [[g.id, [int(c["id"]) for c in g.channels]] for g in made]}), flush=True)
        trimmer = asyncio.create_task(trim_uploads(local))
        while line := (await asyncio.to_thread(sys.stdin.readline)).strip():
            if line == "enforce":
                local.enforce_rate_limits()
                answer: dict[str, Any] = {"ok": True}
            elif line == "report":
                answer = report(local)
            else:
                answer = {"error": f"unknown command {line!r}"}
            print(json.dumps(answer), flush=True)
        trimmer.cancel()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))

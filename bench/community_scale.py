"""The community log at a million messages: a 1,000,000-message log (360 days, inside the bot's default
retention, 500 members, with revisions and reactions) is written straight into SQLite once per run, under a temp
dir (tests/support/community_log.py).

Measured, each round:
- `/iwm export days:3650` and `/iwm community days:365` through the real bot and a local Discord: the bot
  process's peak RSS over idle while they run (sampled every 5 ms), and the first response of `/iwm status`
  and `/iwm levels`, asked every 0.1 s meanwhile, while members keep posting (500 messages a second);
- the whole log exported to a file without a size limit (the service, no upload): peak RSS over idle;
- the retention purge (330 days: about 83,000 messages with their revisions and reactions) and one member's
  forget-me (about 2,000 messages) on a fresh copy: the longest single hold of the database thread, wall clock
  and that thread's CPU time.
Reported as medians over rounds of each round's worst.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import discord

from bench.run import Result
from services.community import CommunityLog
from services.privacy import forget_member
from services.storage import Database
from tests.support.community_log import fill_log
from tests.support.local_discord import MEMBER_PERMISSIONS, LocalDiscord, pointed_at, smallcaps_bot

MESSAGES = 1_000_000
DAYS = 360  # within the default retention, so the bot's start-up purge leaves the log whole
RETENTION = 330  # days the purge rounds keep
MEMBER = 1007  # one of fill_log's 500 authors
MANAGER = discord.Permissions(MEMBER_PERMISSIONS | discord.Permissions(manage_guild=True).value)


def rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


class Sampler:
    """This process's RSS every 5 ms, on its own thread, while the block runs: the peak over the start."""

    def __init__(self) -> None:
        self.idle = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def over_idle(self) -> float:
        return self.peak - self.idle


def longest_hold(db: Database) -> Callable[[], tuple[float, float]]:
    """Time every call on the database thread from now on; the returned function gives the longest so far, in
    wall-clock seconds and in that thread's CPU seconds (on a shared machine the first includes waiting for a
    core)."""
    wall, cpu = [0.0], [0.0]
    call = db._call

    def timed(fn: Callable[[Any], Any]) -> Any:
        start, used = time.perf_counter(), time.thread_time()
        try:
            return call(fn)
        finally:
            wall[0] = max(wall[0], time.perf_counter() - start)
            cpu[0] = max(cpu[0], time.thread_time() - used)

    db._call = timed  # type: ignore[method-assign]
    return lambda: (wall[0], cpu[0])


async def others_meanwhile(local: LocalDiscord, work: asyncio.Task[Any]) -> dict[str, list[float]]:
    """`/iwm status` and `/iwm levels` every 0.1 s and members posting 500 messages a second until `work` ends:
    each command's first-response times."""
    handles = []
    i = 0
    while not work.done():
        name, options = ("status", {}) if i % 2 else ("levels", {"period": "1y"})
        handles.append((name, await local.dispatch_interaction(local.slash_command("iwm", name, options))))
        for _ in range(50):
            await local.dispatch("MESSAGE_CREATE", local.user_message(f"$IWM holding up {i}", channel="general"))
        i += 1
        await asyncio.sleep(0.1)
    await work
    acks: dict[str, list[float]] = {"status": [], "levels": []}
    for name, handle in handles:
        await handle.wait_for_responses(1, timeout=60)
        acks[name].append(handle.ack_seconds or 0.0)
    return acks


async def slow_command(local: LocalDiscord, name: str, options: dict[str, Any]) -> float:
    handle = await local.dispatch_interaction(local.slash_command("iwm", name, options, permissions=MANAGER))
    await handle.wait_for_responses(2, timeout=300)
    return handle.ack_seconds or 0.0


async def bot_rounds(fixture: Path, tmp: Path, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"export_mb": [], "community_mb": [], "full_export_mb": [], "others_s": [],
                                   "status_p50_s": [], "levels_p50_s": [], "slow_ack_s": [], "backlog": []}
    async with LocalDiscord() as local:
        with pointed_at(local):
            db = tmp / "bot.db"
            fill_log(db, local.guild.id, int(local.guild.channel("general")["id"]), MESSAGES, days=DAYS)
            shutil.copy(db, fixture)
            # one member runs the commands back to back: the per-member render cooldown is not what is measured
            env = {"DATABASE_PATH": str(db), "DEV_GUILD_ID": str(local.guild.id), "MESSAGE_CONTENT_INTENT": "1",
                   "RENDER_COOLDOWN_SECONDS": "0"}
            async with smallcaps_bot(local, env) as bot:
                community = bot.resources.community
                for name, options in (("levels", {"period": "1y"}), ("status", {})):  # warm: data loaded once
                    await (await local.dispatch_interaction(local.slash_command("iwm", name, options))
                           ).wait_for_responses(1, timeout=60)
                for _ in range(rounds):
                    for name, options, key in (("export", {"days": 3650}, "export_mb"),
                                               ("community", {"days": 365}, "community_mb")):
                        with Sampler() as rss:
                            work = asyncio.create_task(slow_command(local, name, options))
                            acks = await others_meanwhile(local, work)
                        out[key].append(rss.over_idle)
                        out["others_s"].append(max(acks["status"] + acks["levels"]))
                        out["status_p50_s"].append(statistics.median(acks["status"]))
                        out["levels_p50_s"].append(statistics.median(acks["levels"]))
                        out["slow_ack_s"].append(work.result())
                        out["backlog"].append(community.writer.pending)
                    with Sampler() as rss:
                        async with community.export_csv(local.guild.id, 3650) as export:
                            assert export.complete and export.messages >= MESSAGES
                    out["full_export_mb"].append(rss.over_idle)
    return out


def fresh_copy(fixture: Path, path: Path) -> Path:
    """A copy of the fixture, written back to disk now rather than by the first checkpoint's fsync inside a
    measured turn."""
    shutil.copy(fixture, path)
    with path.open("rb+") as f:
        os.fsync(f.fileno())
    return path


async def deletion_rounds(fixture: Path, tmp: Path, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"purge_hold_ms": [], "forget_hold_ms": [], "purge_hold_cpu_ms": [],
                                   "forget_hold_cpu_ms": [], "purged": [], "forgotten": []}
    guild = None
    for _ in range(rounds):
        copy = fresh_copy(fixture, tmp / "copy.db")
        async with Database(copy) as db:
            community = CommunityLog(db)
            await community.open()
            guild = guild or await db.run(lambda d: d.execute("SELECT guild_id FROM community_messages").fetchone()[0])
            hold = longest_hold(db)
            purged = await community.purge_older_than(RETENTION)
            out["purge_hold_ms"].append(hold()[0] * 1000)
            out["purge_hold_cpu_ms"].append(hold()[1] * 1000)
            hold = longest_hold(db)
            forgotten = await forget_member(community, guild, MEMBER)
            out["forget_hold_ms"].append(hold()[0] * 1000)
            out["forget_hold_cpu_ms"].append(hold()[1] * 1000)
            out["purged"].append(purged.messages)
            out["forgotten"].append(forgotten.messages)
            await community.close()
    return out


async def bench_community_scale(rounds: int) -> Result:
    rounds = max(1, rounds // 3)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        started = time.perf_counter()
        bot = await bot_rounds(tmp / "fixture.db", tmp, rounds)
        built = time.perf_counter() - started
        deletions = await deletion_rounds(tmp / "fixture.db", tmp, rounds)
    med = {key: statistics.median(values) for key, values in {**bot, **deletions}.items()}
    rss = max(med["export_mb"], med["community_mb"], med["full_export_mb"])
    hold = max(med["purge_hold_ms"], med["forget_hold_ms"])
    cpu = max(med["purge_hold_cpu_ms"], med["forget_hold_cpu_ms"])
    passed = rss <= 50 and med["others_s"] < 1 and hold <= 50
    return Result(
        "community 1M", f"RSS +{rss:.0f} MB, others {med['others_s'] * 1000:.0f} ms, hold {hold:.0f} ms "
        f"({cpu:.0f} ms CPU)",
        f"{MESSAGES:,} messages: export, report, purge, forget-me", None,
        "+50 MB, < 1 s, 50 ms", passed,
        {"rounds": rounds, "fixture_and_bot_rounds_s": round(built, 1),
         **{key: round(value, 3) for key, value in med.items()}})

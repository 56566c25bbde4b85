"""The benchmark suite: `./run bench [--quick] [--only NAME ...]`.

Each benchmark measures the bot and its baseline side by side in the same run and reports medians (or
percentiles) and their ratio against the target. Prints a table and writes bench/results/latest.json.
Never run by the test suite: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from app import open_resources  # noqa: E402
from bench import members  # noqa: E402
from console import answer  # noqa: E402
from services.charts import render_levels  # noqa: E402
from services.community import CommunityLog, MessageCreated  # noqa: E402
from services.config import Settings  # noqa: E402
from services.levels import compute_levels, levels_chart  # noqa: E402
from services.market import MarketData  # noqa: E402
from services.storage import Database  # noqa: E402
from tests.support.local_discord import LocalDiscord, pointed_at, smallcaps_bot  # noqa: E402
from tests.support.provider_server import ProviderServer, Reply  # noqa: E402

# One example of every command, as a member would type it (the memory and load benchmarks run them all).
EXAMPLES = [
    "/iwm levels period:1y", "/iwm levels period:5y as_of:2025-09-26", "/iwm status", "/iwm subscriptions",
    "/iwm valuation", "/iwm sectors", "/iwm rates", "/iwm compare", "/iwm sentiment", "/iwm community",
]


@dataclass
class Result:
    name: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def atimed(coro: Awaitable[object]) -> float:
    start = time.perf_counter()
    await coro
    return time.perf_counter() - start


async def levels_spec(period: str = "1y"):
    market = MarketData([])
    iwm, spy = await market.bars("IWM"), await market.bars("SPY")
    report = compute_levels(iwm, spy, Settings().zones)
    return levels_chart(iwm, spy, report, period)


# --- 1. chart render vs mplfinance --------------------------------------------------------------------------

async def bench_chart_render(rounds: int) -> Result:
    import mplfinance as mpf

    spec = await levels_spec("1y")
    bars = spec.frame.rename(columns=str.capitalize)[["Open", "High", "Low", "Close", "Volume"]]

    def baseline() -> bytes:
        buf = io.BytesIO()
        mpf.plot(bars, type="candle", volume=True, mav=(50, 200), style="nightclouds", figsize=(12.8, 7.2),
                 savefig={"fname": buf, "dpi": 100, "format": "png"}, warn_too_much_data=10_000)
        return buf.getvalue()

    render_levels(spec), baseline()  # warm both (font caches, imports)
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(timed(lambda: render_levels(spec)))
        theirs.append(timed(baseline))
    ratio = statistics.median(ours) / statistics.median(theirs)
    return Result("chart render", f"{median_ms(ours):.0f} ms", f"mplfinance {median_ms(theirs):.0f} ms", ratio,
                  "<= 0.5x", ratio <= 0.5, {"bars": len(bars)})


# --- 2. warm answer vs the render alone ---------------------------------------------------------------------

async def bench_warm_answer(rounds: int) -> Result:
    spec = await levels_spec("1y")
    with tempfile.TemporaryDirectory() as tmp:
        async with open_resources(Settings(database_path=Path(tmp) / "b.db"), render_processes=False) as res:
            await answer(res, "/iwm levels period:1y")
            answers, renders = [], []
            for _ in range(rounds):
                answers.append(await atimed(answer(res, "/iwm levels period:1y")))
                renders.append(timed(lambda: render_levels(spec)))
    ratio = statistics.median(answers) / statistics.median(renders)
    return Result("warm answer", f"{median_ms(answers):.0f} ms", f"render {median_ms(renders):.0f} ms", ratio,
                  "<= 1.5x", ratio <= 1.5)


# --- the local Discord --------------------------------------------------------------------------------------

@asynccontextmanager
async def live_bot(tmp: Path):
    async with LocalDiscord() as local:
        with pointed_at(local):
            env = {"DATABASE_PATH": str(tmp / "bot.db"), "DEV_GUILD_ID": str(local.guild.id),
                   "RENDER_COOLDOWN_SECONDS": "0"}  # one member sends every command
            async with smallcaps_bot(local, env) as bot:
                yield bot, local


def command_payload(local: LocalDiscord, text: str) -> dict[str, Any]:
    words = text.split()
    options = dict(w.split(":", 1) for w in words[2:])
    return local.slash_command(words[0].lstrip("/"), words[1], options)


async def bench_first_response(rounds: int) -> Result:
    acks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with live_bot(Path(tmp)) as (_, local):
            periods = ["3mo", "6mo", "1y", "2y", "5y", "max"]
            batches = max(3, rounds // 2)
            for _ in range(batches):
                background = [await local.dispatch_interaction(
                    command_payload(local, f"/iwm levels period:{periods[i % 6]}")) for i in range(20)]
                measured = [await local.dispatch_interaction(command_payload(local, "/iwm levels period:1y"))
                            for _ in range(10)]
                for handle in background + measured:
                    await handle.wait_for_responses(2, timeout=60)
                acks += [h.ack_seconds for h in measured if h.ack_seconds is not None]
    p99 = percentile(acks, 99)
    return Result("first response", f"p99 {p99 * 1000:.0f} ms", f"p50 {percentile(acks, 50) * 1000:.0f} ms", None,
                  "p99 < 500 ms", p99 < 0.5, {"samples": len(acks), "batches": batches})


# --- 4. event loop stalls -----------------------------------------------------------------------------------

class Ticker:
    """Sleeps 5 ms at a time and records how late each wake-up was: the event loop's stalls. With each, the CPU
    time the loop's thread used meanwhile: near the stall, the loop was busy; near 0, its thread did not run (it
    waited for a core on a shared machine, or for the GIL)."""

    def __init__(self) -> None:
        self.stalls: list[float] = []
        self.cpu: list[float] = []
        self.stop = False

    async def run(self) -> None:
        while not self.stop:
            start, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.005)
            self.stalls.append(time.perf_counter() - start - 0.005)
            self.cpu.append(time.thread_time() - cpu)

    def worst(self) -> tuple[float, float]:
        """The longest stall and the loop thread's CPU time during it (seconds)."""
        i = max(range(len(self.stalls)), key=self.stalls.__getitem__)
        return self.stalls[i], self.cpu[i]


async def log_burst(log: CommunityLog, first_id: int, count: int) -> None:
    now = datetime.now(UTC)
    for i in range(count):
        log.put(MessageCreated(1, 10, first_id + i, 100 + i % 50, now, f"$IWM to the moon {i} 🚀"))
        await asyncio.sleep(0)  # as from the gateway: one event per websocket frame, one loop step each
    await log.flush()


async def bench_event_loop(rounds: int) -> Result:
    spec = await levels_spec("1y")
    worst: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with open_resources(Settings(database_path=Path(tmp) / "b.db")) as res:
            log = res.community
            await log.set_logging(1, 10, True)
            await res.renderer.warm_up()  # as the bot does in setup_hook
            for r in range(max(1, rounds // 3)):
                ticker = Ticker()
                tick = asyncio.create_task(ticker.run())
                await asyncio.gather(*(res.renderer.render(render_levels, spec) for _ in range(20)),
                                     log_burst(log, 1_000_000 * (r + 1), 10_000))
                ticker.stop = True
                await tick
                worst.append(ticker.worst())
    stall = max(w for w, _ in worst)
    return Result("event loop", f"max stall {stall * 1000:.1f} ms", "5 ms ticker", None, "< 50 ms", stall < 0.05,
                  {"runs": len(worst), "per_run_ms": [round(w * 1000, 1) for w, _ in worst],
                   "loop_cpu_in_worst_ms": [round(c * 1000, 1) for _, c in worst]})


# --- 6. community log ingest --------------------------------------------------------------------------------

async def timed_log_burst(db: Database, n: int) -> tuple[CommunityLog, float]:
    """`n` messages into one logged channel through the bot's writer, as a gateway burst hands them over;
    returns the (still open) log and the messages per second until all are committed."""
    now = datetime.now(UTC)
    log = CommunityLog(db)
    await log.open()
    await log.set_logging(1, 10, True)
    start = time.perf_counter()
    for i in range(n):
        log.put(MessageCreated(1, 10, i + 1, 100 + i % 50, now, f"message {i} about $IWM and $SPY"))
        if i % 100 == 99:  # gateway events arrive over many loop iterations
            await asyncio.sleep(0)
    await log.flush()
    return log, n / (time.perf_counter() - start)


async def bench_community_ingest(rounds: int) -> Result:
    n = 20_000
    writer_rates, bare_rates = [], []
    for _ in range(max(1, rounds // 3)):
        with tempfile.TemporaryDirectory() as tmp:
            async with Database(Path(tmp) / "w.db") as db:
                log, rate = await timed_log_burst(db, n)
                writer_rates.append(rate)
                stored = await db.run(lambda d: d.execute("select count(*) from community_messages").fetchone()[0])
                assert stored == n, f"lost messages: {stored} of {n}"
                schema = await db.run(lambda d: [sql for (sql,) in d.execute(
                    "select sql from sqlite_master where tbl_name = 'community_messages' and sql is not null")])
                rows = await db.run(lambda d: list(d.execute("select * from community_messages")))
                await log.close()
            bare = sqlite3.connect(Path(tmp) / "bare.db")
            bare.execute("PRAGMA journal_mode=WAL")
            bare.execute("PRAGMA synchronous=NORMAL")
            for sql in schema:  # the table and its indexes
                bare.execute(sql)
            marks = ",".join("?" * len(rows[0]))
            start = time.perf_counter()
            with bare:
                bare.executemany(f"insert into community_messages values ({marks})", rows)
            bare_rates.append(n / (time.perf_counter() - start))
            bare.close()
    ratio = statistics.median(writer_rates) / statistics.median(bare_rates)
    return Result("community log", f"{statistics.median(writer_rates):,.0f} msg/s",
                  f"bare executemany {statistics.median(bare_rates):,.0f} rows/s", ratio, ">= 0.5x, none lost",
                  ratio >= 0.5, {"messages": n})


# --- 7. upstream calls under a cold cache -------------------------------------------------------------------

def yahoo_body(symbol: str, frame: pd.DataFrame) -> str:
    """A Yahoo v8 chart body (the real shape, as in tests/fixtures) carrying bundled bars."""
    frame = frame.dropna(subset=["close"]).tail(1500)
    stamps = [int(ts.tz_localize("America/New_York").timestamp()) + 9 * 3600 + 1800 for ts in frame.index]
    col = {k: [None if pd.isna(v) else float(v) for v in frame[k]] for k in frame.columns}
    return json.dumps({"chart": {"result": [{
        "meta": {"currency": "USD", "symbol": symbol, "exchangeTimezoneName": "America/New_York",
                 "instrumentType": "ETF", "dataGranularity": "1d"},
        "timestamp": stamps,
        "indicators": {"quote": [{"open": col["open"], "high": col["high"], "low": col["low"],
                                  "close": col["close"], "volume": col["volume"]}],
                       "adjclose": [{"adjclose": col["adj_close"]}]}}], "error": None}})


async def bench_upstream_calls(rounds: int) -> Result:
    bundled = MarketData([])
    async with ProviderServer() as server:
        for symbol in ("IWM", "SPY"):
            body = yahoo_body(symbol, (await bundled.bars(symbol)).frame)
            server.script(f"/v8/finance/chart/{symbol}", Reply(body=body, delay=0.2))
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings.from_env({"MARKET_DATA_PROVIDER": "yahoo", "YAHOO_BASE_URL": server.url,
                                          "DATABASE_PATH": str(Path(tmp) / "u.db")})
            async with open_resources(settings) as res:
                results = await asyncio.gather(*(answer(res, "/iwm levels") for _ in range(100)))
    ok = sum(status == 0 for status, _ in results)
    calls = {path.rsplit("/", 1)[1]: count for path, count in server.calls.items()}
    return Result("upstream calls", f"{calls}", "100 concurrent /iwm levels, cold cache", None,
                  "1 per symbol", calls == {"IWM": 1, "SPY": 1} and ok == 100, {"answered": ok})


# --- 8. start-up --------------------------------------------------------------------------------------------

READY = """
import asyncio, sys, tempfile
from pathlib import Path
from app import EXTENSIONS, SmallcapsBot, open_resources
from services.config import Settings
async def main():
    with tempfile.TemporaryDirectory() as tmp:
        async with open_resources(Settings(database_path=Path(tmp) / "s.db")) as res:
            bot = SmallcapsBot(res.settings, res, background=False)
            for ext in EXTENSIONS:
                await bot.load_extension(ext)
asyncio.run(main())
"""


def bench_startup(rounds: int) -> Result:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
        return time.perf_counter() - start

    run(READY)
    ours, base = [], []
    for _ in range(max(5, rounds)):
        ours.append(run(READY))
        base.append(run("import discord, pandas, matplotlib"))
    ratio = statistics.median(ours) / statistics.median(base)
    return Result("start-up", f"{median_ms(ours):.0f} ms", f"imports alone {median_ms(base):.0f} ms", ratio,
                  "<= 1.3x", ratio <= 1.3)


# --- 9. memory ----------------------------------------------------------------------------------------------




def bench_memory(rounds: int) -> Result:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_probe.py"), *EXAMPLES], check=True, env=env,
                         cwd=ROOT,
                         capture_output=True, text=True).stdout
    main_kb, worker_kb, helpers = (int(x) for x in out.split()[-3:])
    peak_mb = main_kb / 1024
    return Result("memory", f"peak RSS {peak_mb:.0f} MB", f"{len(EXAMPLES)} commands once", None, "< 250 MB",
                  peak_mb < 250, {"render_processes": helpers, "largest_render_process_mb": round(worker_kb / 1024)})


def elsewhere(module: str, name: str) -> Callable[[int], Any]:
    """A benchmark kept in its own module of bench/, imported only when it runs (it imports this module)."""
    return lambda rounds: getattr(importlib.import_module(f"bench.{module}"), name)(rounds)


BENCHES: dict[str, Callable[[int], Any]] = {
    "chart_render": bench_chart_render, "warm_answer": bench_warm_answer, "first_response": bench_first_response,
    "event_loop": bench_event_loop, "community_log": bench_community_ingest,
    "upstream_calls": bench_upstream_calls, "startup": bench_startup, "memory": bench_memory,
    "alert_fanout": elsewhere("fanout", "bench_alert_fanout"),
    "community_scale": elsewhere("community_scale", "bench_community_scale"),
    "many_members": elsewhere("many_members", "bench_many_members"),
    "pg_commands": elsewhere("pg_commands", "bench_pg_commands"),
    "pg_log": elsewhere("pg_log", "bench_pg_log_ingest"),
    "pg_upstream_calls": elsewhere("pg_fetch", "bench_pg_upstream_calls"),
    **members.BENCHES,
}


def run_isolated(name: str, rounds: int) -> Result:
    """One benchmark in a fresh process, so none inherits another's garbage, caches or threads."""
    out = subprocess.run([sys.executable, __file__, "--child", name, "--rounds", str(rounds)], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return Result(**json.loads(out.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=list(BENCHES), help="run only these")
    parser.add_argument("--child", choices=list(BENCHES), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 11)
    if args.child:
        outcome = BENCHES[args.child](rounds)
        result = asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome
        print(json.dumps(result.__dict__))
        return 0
    results: list[Result] = []
    for name in args.only or BENCHES:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.append(run_isolated(name, rounds))
    width = max(len(r.measured) for r in results)
    print(f"\n{'benchmark':<16} {'measured':<{width}}  {'baseline':<42} {'ratio':>6}  {'target':<18} ok")
    for r in results:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        print(f"{r.name:<16} {r.measured:<{width}}  {r.baseline:<42} {ratio:>6}  {r.target:<18} "
              f"{'yes' if r.passed else 'NO'}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    report = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "python": platform.python_version(), "rounds": rounds,
              "results": [r.__dict__ for r in results]}
    (out / "latest.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out / 'latest.json'}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

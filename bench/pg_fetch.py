"""Upstream calls across processes: three processes on one PostgreSQL, 100 concurrent cold requests spread over them,
against one bot process on its SQLite file asked the same 100 (the single-process case, whose single flight already
makes one call per symbol).

Each round: a fresh schema (or file), fresh processes (tests/support/fetch_process.py, the services built as
`app.open_resources` builds them), a provider server answering after 200 ms (as `upstream_calls` does). Measured:
upstream calls per symbol (target 1), and the burst's latency (from sending the requests to the last answer) and
each request's, medians over rounds, PostgreSQL's against SQLite's.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.run import Result
from services.market import read_bundled_csv
from tests.support.fetch_process import FetchProcess
from tests.support.postgres import postgres_server, schema_url
from tests.support.provider_server import ProviderServer, Reply, yahoo_chart_body

SYMBOLS = ("IWM", "SPY")
REQUESTS, PROCESSES = 100, 3
UPSTREAM_DELAY = 0.2


async def burst(procs: list[FetchProcess]) -> tuple[float, list[float]]:
    """100 requests, request i for SYMBOLS[i % 2] in process i % len(procs), all at once: (the last answer's
    latency, every request's latency inside its process)."""
    asked = [[SYMBOLS[i % len(SYMBOLS)] for i in range(REQUESTS) if i % len(procs) == p] for p in range(len(procs))]
    start = time.perf_counter()
    answers = await asyncio.gather(*(proc.send(bars=a) for proc, a in zip(procs, asked, strict=True)))
    wall = time.perf_counter() - start
    flat = [a for answer in answers for a in answer]
    assert len(flat) == REQUESTS and all(a["source"] == "yahoo" and not a["stale"] for a in flat), flat
    return wall, [a["seconds"] for a in flat]


async def one_round(server: ProviderServer, env: dict[str, str], processes: int, tmp: Path) -> tuple[float, list[float],
                                                                                                       dict[str, int]]:
    server.calls.clear()
    procs = list(await asyncio.gather(*(FetchProcess.start(env, tmp / f"process{i}.log") for i in range(processes))))
    try:
        wall, each = await burst(procs)
    finally:
        await asyncio.gather(*(p.close() for p in procs))
    return wall, each, {s: server.calls[f"/v8/finance/chart/{s}"] for s in SYMBOLS}


async def bench_pg_upstream_calls(rounds: int) -> Result:
    pg_wall, pg_each, sqlite_wall, sqlite_each = [], [], [], []
    calls: list[dict[str, int]] = []
    async with ProviderServer() as server:
        for symbol in SYMBOLS:
            body = yahoo_chart_body(read_bundled_csv(symbol).tail(30), symbol)
            server.script(f"/v8/finance/chart/{symbol}", Reply(body=body, delay=UPSTREAM_DELAY))
        base = {"YAHOO_BASE_URL": server.url}
        with postgres_server() as postgres, tempfile.TemporaryDirectory() as tmp:
            for n in range(rounds):
                with schema_url(postgres) as url:
                    wall, each, counted = await one_round(server, {**base, "DATABASE_URL": url}, PROCESSES, Path(tmp))
                pg_wall.append(wall)
                pg_each += each
                calls.append(counted)
                file = {**base, "DATABASE_PATH": str(Path(tmp) / f"round{n}.db")}
                wall, each, _ = await one_round(server, file, 1, Path(tmp))
                sqlite_wall.append(wall)
                sqlite_each += each
    per_symbol = max(c for counted in calls for c in counted.values())
    ratio = statistics.median(pg_wall) / statistics.median(sqlite_wall)
    return Result(
        "pg_upstream_calls",
        f"{per_symbol} call/symbol; burst {statistics.median(pg_wall) * 1000:.0f} ms",
        f"1 process on SQLite: burst {statistics.median(sqlite_wall) * 1000:.0f} ms",
        ratio, "1 call per symbol", all(c == 1 for counted in calls for c in counted.values()),
        {"processes": PROCESSES, "requests": REQUESTS, "symbols": list(SYMBOLS), "calls_by_round": calls,
         "upstream_delay_ms": UPSTREAM_DELAY * 1000,
         "request_median_ms": {"postgresql": round(statistics.median(pg_each) * 1000, 1),
                               "sqlite": round(statistics.median(sqlite_each) * 1000, 1)},
         "burst_median_ms": {"postgresql": round(statistics.median(pg_wall) * 1000, 1),
                             "sqlite": round(statistics.median(sqlite_wall) * 1000, 1)}},
    )

"""Commands on PostgreSQL vs on SQLite: the console's answer to every example command (bench/run.py's EXAMPLES),
warm, with the bot's resources open on a throwaway PostgreSQL server (tests/support/postgres.py, a unix socket on
this machine) and on a SQLite file, in the same run, rounds interleaved (each engine first in half of them). Both
databases hold the same state, made by the same commands first: a subscription, the server's levels, a logged
channel, a poll schedule.

Measured: the median over rounds of the whole mix's time on each engine, and their ratio; the same for the
commands that read the server's state from the database (most of the others' time is rendering, the same on
both engines). Target: both ratios <= 1.3x.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

from app import Resources, open_resources
from bench.run import EXAMPLES, Result
from console import answer
from services.config import Settings
from tests.support.postgres import postgres_server, schema_url

STATE = ["/iwm status", "/iwm subscriptions", "/iwm sentiment", "/iwm community"]  # answered from the database
SETUP = ["/iwm subscribe events:all", "/iwm setlevels preset:article", "/iwm log state:on",
         "/iwm poll-schedule weekday:0 time:14:00"]


async def mix(resources: Resources) -> tuple[float, dict[str, float]]:
    """Every example once; the whole time and each command's."""
    each: dict[str, float] = {}
    for text in EXAMPLES:
        start = time.perf_counter()
        status, _ = await answer(resources, text)
        each[text] = time.perf_counter() - start
        assert status == 0, text
    return sum(each.values()), each


async def bench_pg_commands(rounds: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp, postgres_server() as server, schema_url(server) as url:
        async with AsyncExitStack() as stack:
            engines = {
                "sqlite": await stack.enter_async_context(open_resources(
                    Settings(database_path=Path(tmp) / "bench.db"), render_processes=False)),
                "postgresql": await stack.enter_async_context(open_resources(
                    Settings(database_url=url), render_processes=False)),
            }
            for resources in engines.values():
                for text in SETUP:
                    status, _ = await answer(resources, text)
                    assert status == 0, text
                await mix(resources)  # warm: imports, data, chart cache, the connection's statement cache
            totals: dict[str, list[float]] = {name: [] for name in engines}
            each: dict[str, dict[str, list[float]]] = {name: {t: [] for t in EXAMPLES} for name in engines}
            for i in range(rounds):
                order = list(engines.items())
                for name, resources in order[::-1] if i % 2 else order:  # each engine first in half the rounds
                    total, times = await mix(resources)
                    totals[name].append(total)
                    for text, seconds in times.items():
                        each[name][text].append(seconds)
    pg, lite = statistics.median(totals["postgresql"]), statistics.median(totals["sqlite"])
    ratio = pg / lite

    def state(name: str) -> float:  # the state commands' time in each round, median over rounds
        return statistics.median(sum(each[name][t][i] for t in STATE) for i in range(rounds))

    state_pg, state_lite = state("postgresql"), state("sqlite")
    state_ratio = state_pg / state_lite
    details = {text: {name: round(statistics.median(each[name][text]) * 1000, 1) for name in engines}
               for text in EXAMPLES}
    return Result("pg commands", f"{len(EXAMPLES)} commands: PostgreSQL {pg * 1000:.0f} ms; the {len(STATE)} "
                  f"state ones {state_pg * 1000:.0f} ms ({state_ratio:.2f}x)",
                  f"SQLite {lite * 1000:.0f} ms; {state_lite * 1000:.0f} ms", ratio, "<= 1.3x, both",
                  ratio <= 1.3 and state_ratio <= 1.3,
                  {"median_ms": details, "state_ratio": round(state_ratio, 3), "state_commands": STATE})

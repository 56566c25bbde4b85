"""The render pool (services.renderer): a worker killed with SIGKILL breaks its ProcessPoolExecutor, and the
renderer replaces the pool and retries, so the next chart still renders and `/iwm status` counts the restart;
identical requests share one PNG (a bounded cache, one render in flight); after kill -9 of the bot, no process
it started (forkserver, render workers, resource tracker) lives on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.charts import LevelsChart, Renderer, render_levels
from services.config import ConfigError, Settings
from services.levels import compute_levels, levels_chart
from services.market import MarketData
from tests.support.discord_helpers import PNG_MAGIC, invoke
from tests.support.local_discord import LocalDiscord
from tests.test_process import bot_process, command


async def levels_spec(period: str = "1y", as_of: date | None = None) -> LevelsChart:
    market = MarketData([])
    iwm, spy = await market.bars("IWM"), await market.bars("SPY")
    if as_of is not None:
        iwm, spy = iwm.until(as_of), spy.until(as_of)
    return levels_chart(iwm, spy, compute_levels(iwm, spy, Settings().zones), period)


@pytest.fixture
async def pool() -> AsyncIterator[Renderer]:
    renderer = Renderer(processes=True, cache_bytes=0)  # every render reaches the pool
    await renderer.warm_up()
    yield renderer
    renderer.close()


async def wait_for(condition: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def kill_a_worker(renderer: Renderer) -> int:
    """SIGKILL one render worker and wait until the pool has noticed: a broken pool ends all its workers."""
    before = renderer.health()
    assert before.workers_up == before.workers == 2, before
    victim = before.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: not renderer.health().worker_pids, what="the pool to notice the dead worker")
    return victim


async def test_a_dead_worker_is_replaced_and_the_next_render_succeeds(pool: Renderer) -> None:
    spec = await levels_spec()
    victim = await kill_a_worker(pool)
    png = await pool.render(render_levels, spec)
    assert png.startswith(PNG_MAGIC)
    health = pool.health()
    assert health.restarts == 1 and health.last_failure and "BrokenProcessPool" in health.last_failure
    assert health.last_failure_at is not None
    await wait_for(lambda: pool.health().workers_up == 2, what="the new pool's workers")
    assert victim not in pool.health().worker_pids
    # Renders that were waiting when the pool broke are retried too, and the pool is replaced only once.
    pids = pool.health().worker_pids
    os.kill(pids[0], signal.SIGKILL)
    pngs = await asyncio.gather(*(pool.render(render_levels, spec) for _ in range(6)))
    assert all(p.startswith(PNG_MAGIC) for p in pngs)
    assert pool.health().restarts == 2


async def test_status_shows_render_health_after_a_worker_died(running_bot: Any) -> None:
    bot, discord_ = await running_bot()
    renderer: Renderer = bot.resources.renderer
    assert renderer.processes  # the bot renders in worker processes, as in production
    status = await invoke(discord_, "status")
    charts = next(f for f in status.embeds[0]["fields"] if f["name"] == "Charts")
    assert charts["value"].startswith("2 of 2 render workers up · 0 restarts"), charts

    await kill_a_worker(renderer)
    down = await invoke(discord_, "status")
    charts = next(f for f in down.embeds[0]["fields"] if f["name"] == "Charts")
    assert charts["value"].startswith("0 of 2 render workers up"), charts
    levels = await invoke(discord_, "levels")
    assert levels.files and levels.files[0].data.startswith(PNG_MAGIC), levels.body
    await wait_for(lambda: renderer.health().workers_up == 2, what="the new pool's workers")
    after = await invoke(discord_, "status")
    charts = next(f for f in after.embeds[0]["fields"] if f["name"] == "Charts")
    assert charts["value"].startswith("2 of 2 render workers up · 1 restart · "), charts
    assert " · last failure " in charts["value"], charts
    assert "BrokenProcessPool" in charts["value"] and "UTC" in charts["value"]


def process_table() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, start time in clock ticks: with the pid, it names one process)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            if fields[0] != "Z":  # a zombie has ended; only its parent has not collected it yet
                table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def descendants(root: int) -> dict[int, str]:
    """The processes whose ancestry leads to `root`, with their start times."""
    table = process_table()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                frontier.append(pid)
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    table = process_table()
    return [pid for pid, started in processes.items() if pid in table and table[pid][1] == started]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
async def test_no_process_outlives_the_bot_after_kill_9(discord_: LocalDiscord, tmp_path: Path) -> None:
    async with bot_process(discord_, tmp_path / "bot.db") as proc:
        reply = await command(discord_, "levels", {})  # a chart rendered: forkserver and workers are up
        assert reply["type"] == 5, reply
        await discord_.wait_until(lambda: any(r.files for r in discord_.requests), timeout=30, what="the chart")
        children = descendants(proc.pid)
        assert len(children) >= 4, children  # resource tracker, forkserver, two render workers
        proc.kill()
        await proc.wait()
    try:
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: not still_running(children), timeout=5)
        left = still_running(children)
        assert not left, f"still running 5 s after the bot's kill -9: {left} of {sorted(children)}"
    finally:
        for pid in still_running(children):  # leave no orphan behind, whatever the outcome
            os.kill(pid, signal.SIGKILL)


# --- the chart cache --------------------------------------------------------------------------------------------

async def test_identical_requests_reuse_one_png_and_new_data_draws_again() -> None:
    renderer = Renderer()
    try:
        first = await renderer.render(render_levels, await levels_spec("1y"))
        again = await renderer.render(render_levels, await levels_spec("1y"))  # rebuilt from the same data
        assert again is first and renderer.drawn == 1 and renderer.cache_hits == 1
        other = await renderer.render(render_levels, await levels_spec("6mo"))  # another option
        earlier = await renderer.render(render_levels, await levels_spec("1y", date(2025, 9, 26)))  # other data
        assert renderer.drawn == 3 and len({first, other, earlier}) == 3
        health = renderer.health()
        assert (health.renders, health.cache_hits, health.cached) == (3, 1, 3)
        assert health.cached_bytes == len(first) + len(other) + len(earlier)
    finally:
        renderer.close()


async def test_concurrent_identical_requests_share_one_render() -> None:
    renderer = Renderer()
    try:
        spec = await levels_spec("1y")
        pngs = await asyncio.gather(*(renderer.render(render_levels, spec) for _ in range(8)))
        assert renderer.drawn == 1 and renderer.cache_hits == 7 and all(p is pngs[0] for p in pngs)
    finally:
        renderer.close()


async def test_the_cache_keeps_the_most_recently_used_within_its_bytes() -> None:
    one, two, three = [await levels_spec(p) for p in ("3mo", "6mo", "1y")]
    probe = Renderer(cache_bytes=0)
    sizes = [len(await probe.render(render_levels, spec)) for spec in (one, two, three)]
    probe.close()
    assert probe.drawn == 3  # no cache: every request draws
    renderer = Renderer(cache_bytes=sizes[0] + max(sizes[1:]))  # room for two of them
    try:
        await renderer.render(render_levels, one)
        await renderer.render(render_levels, two)
        await renderer.render(render_levels, one)  # one is now the most recently used
        await renderer.render(render_levels, three)  # evicts two
        assert renderer.drawn == 3 and renderer.health().cached == 2
        assert renderer.health().cached_bytes <= renderer.cache_bytes
        await renderer.render(render_levels, one)
        assert renderer.drawn == 3
        await renderer.render(render_levels, two)
        assert renderer.drawn == 4
    finally:
        renderer.close()


def test_chart_cache_setting() -> None:
    assert Settings.from_env({}).chart_cache_mb == 64
    assert Settings.from_env({"CHART_CACHE_MB": "0"}).chart_cache_mb == 0
    with pytest.raises(ConfigError, match="CHART_CACHE_MB"):
        Settings.from_env({"CHART_CACHE_MB": "-1"})

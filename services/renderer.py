"""The chart renderer: render functions (module-level, taking a picklable spec, returning PNG bytes) run off the
event loop, in worker processes for the bot and in threads for the console.

Faults. A worker that dies (killed, out of memory) breaks a `ProcessPoolExecutor` for good: every later render
would raise `BrokenProcessPool`. The renderer replaces a broken pool with a new one, retries the render once, and
keeps the count and the last failure for `/iwm status` (`Renderer.health`).

Cache. A chart is a pure function of its spec, and each spec carries the data it draws (already cut to the chart's
window: bars, levels, titles, the last bar's date), so identical requests (same command, options, levels, data)
make identical specs. The renderer keys finished PNGs by a hash of the pickled function and spec, keeps the most
recently used up to `cache_bytes`, and lets concurrent identical requests share one render in flight. New data
makes a new spec, hence a new key: nothing is ever served stale.

Orphans. The bot starts multiprocessing's forkserver (its child), and the forkserver forks the workers (its
children). Each worker holds the write end of the forkserver's "alive" pipe and both ends of its own call queue,
so after `kill -9` of the bot neither notices: the forkserver waits for every holder of that pipe to close it,
and a worker waits for work on a queue it holds itself; both idle on under init. So each worker watches the bot
itself (`_guard_worker`): a pidfd on Linux, readable the moment the bot exits, and a poll of its parent, with
PR_SET_PDEATHSIG so that it dies with the forkserver too. Once the workers are gone, the forkserver and
multiprocessing's resource tracker see their pipes close and exit on their own.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# Imported once by the forkserver, so every render worker forked from it starts warm. Only installed packages:
# Python 3.11's forkserver imports these with its own sys.path, not the bot's (it drops the sys_path it is given),
# so a project module preloaded there could come from another copy of the project (an editable install's); the
# workers import the project's own modules on start, with the bot's sys.path.
WORKER_PRELOAD = ["numpy", "pandas", "matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.dates",
                  "matplotlib.patches"]


def import_chart_modules() -> None:
    """Import what drawing a chart needs (WORKER_PRELOAD), e.g. in a thread while other start-up work runs."""
    for name in WORKER_PRELOAD:
        importlib.import_module(name)


MB = 1024 * 1024
CACHE_BYTES = 64 * MB  # about 500 charts of 130 kB
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 1.0  # how often a worker checks its parent (and, without a pidfd, the bot)


def _ready() -> bool:
    return True


def _retrieve(task: asyncio.Task[bytes]) -> None:
    """Mark a shared render's failure as seen: every request that waited on it got it already, if any did."""
    if not task.cancelled():
        task.exception()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or someone else's (the pid was reused): not the bot
        return False
    return True


def _guard_worker(bot_pid: int) -> None:
    """A render worker's initializer: make it exit as soon as the bot does (see the module docstring)."""
    if sys.platform == "linux":
        # The forkserver, our parent, dies: so do we (the kernel signals it, even after kill -9).
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_exit_with, args=(bot_pid, os.getppid()), name="exit-with-the-bot", daemon=True).start()


def _exit_with(bot_pid: int, parent: int) -> None:
    """Return only by ending the process: when the bot exits, or when the parent (the forkserver) changes."""
    pidfd: int | None = None
    if hasattr(os, "pidfd_open"):  # Linux 5.3+: a handle on the bot itself, immune to pid reuse
        try:
            pidfd = os.pidfd_open(bot_pid)
        except ProcessLookupError:
            os._exit(0)  # the bot is already gone
        except OSError:  # no pidfd support in this kernel: poll instead
            pidfd = None
    while os.getppid() == parent:
        if pidfd is not None:
            if select.select([pidfd], [], [], WATCH_SECONDS)[0]:
                break
        else:
            time.sleep(WATCH_SECONDS)
            if not _alive(bot_pid):
                break
    os._exit(0)


@dataclass(frozen=True)
class RenderHealth:
    """The renderer as `/iwm status` shows it."""

    processes: bool  # worker processes (the bot) or threads (the console)
    workers: int  # how many the pool runs
    worker_pids: tuple[int, ...]  # the worker processes alive now (empty with threads)
    restarts: int  # broken pools replaced since start-up
    last_failure: str | None  # what broke the last pool
    last_failure_at: datetime | None
    renders: int  # charts drawn since start-up
    cache_hits: int  # charts answered from the cache, or from an identical render in flight
    cached: int  # charts in the cache now
    cached_bytes: int

    @property
    def workers_up(self) -> int:
        return len(self.worker_pids) if self.processes else self.workers

    @property
    def healthy(self) -> bool:
        return self.workers_up == self.workers


class Renderer:
    """Runs render functions off the event loop, `workers` at a time.

    The bot renders in worker processes: matplotlib holds the GIL for long stretches, so render threads stalled
    the event loop for 100-180 ms while 20 charts rendered (bench: event_loop). Workers are forked from a
    forkserver that has already imported matplotlib and pandas, so starting one is cheap. A one-shot console answer
    uses a thread instead, which starts instantly.
    """

    def __init__(self, workers: int = 2, *, processes: bool = False, cache_bytes: int = CACHE_BYTES) -> None:
        """`cache_bytes=0`: no cache and no sharing, every request draws its chart."""
        self.workers, self.processes, self.cache_bytes = workers, processes, cache_bytes
        self.restarts = self.drawn = self.cache_hits = 0  # pools replaced, charts drawn, answers from the cache
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()  # least recently used first
        self._cached_bytes = 0
        self._in_flight: dict[bytes, asyncio.Task[bytes]] = {}
        self._last_failure: tuple[str, datetime] | None = None
        self._executor = self._new_executor()

    def _new_executor(self) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="render")
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(WORKER_PRELOAD)
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_guard_worker,
                                   initargs=(os.getpid(),))

    async def render(self, fn: Callable[[T], bytes], spec: T) -> bytes:
        """`fn(spec)`'s PNG: from the cache, from an identical render in flight, or drawn in a worker."""
        if not self.cache_bytes:
            return await self._draw(fn, spec)
        key = hashlib.blake2b(pickle.dumps((fn, spec), protocol=pickle.HIGHEST_PROTOCOL), digest_size=16).digest()
        if (png := self._cache.get(key)) is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return png
        task = self._in_flight.get(key)
        if task is None:
            task = self._in_flight[key] = asyncio.create_task(self._draw_and_keep(key, fn, spec))
            task.add_done_callback(_retrieve)
        else:
            self.cache_hits += 1
        return await asyncio.shield(task)  # a request that gives up does not cancel the others' render

    async def _draw_and_keep(self, key: bytes, fn: Callable[[T], bytes], spec: T) -> bytes:
        try:
            png = await self._draw(fn, spec)
        finally:
            del self._in_flight[key]
        if len(png) <= self.cache_bytes:
            self._cache[key] = png
            self._cached_bytes += len(png)
            while self._cached_bytes > self.cache_bytes:
                self._cached_bytes -= len(self._cache.popitem(last=False)[1])
        return png

    async def _draw(self, fn: Callable[[T], bytes], spec: T) -> bytes:
        """`fn(spec)` in a worker. A broken pool (a worker died) is replaced and the render retried once."""
        try:
            return await self._run(fn, spec)
        except BrokenProcessPool:
            return await self._run(fn, spec)  # on the pool that replaced it; a second failure is raised

    async def _run(self, fn: Callable[[T], bytes], spec: T) -> bytes:
        executor = self._executor
        try:
            png = await asyncio.get_running_loop().run_in_executor(executor, fn, spec)
        except BrokenProcessPool as exc:
            self._replace(executor, exc)
            raise
        self.drawn += 1
        return png

    def _replace(self, broken: Executor, error: BaseException) -> None:
        """Put a new pool in place of `broken`, once: the other renders that failed on it just retry."""
        if broken is not self._executor:
            return
        self.restarts += 1
        self._last_failure = (f"{type(error).__name__}: {error}", datetime.now(UTC))
        log.warning("render pool broken (%s); starting a new one (restart %d)", error, self.restarts)
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()
        for _ in range(self.workers):  # start every worker now, not one by one as renders come
            self._executor.submit(_ready)

    def health(self) -> RenderHealth:
        failure, failed_at = self._last_failure or (None, None)
        return RenderHealth(self.processes, self.workers, self._worker_pids(), self.restarts, failure, failed_at,
                            self.drawn, self.cache_hits, len(self._cache), self._cached_bytes)

    def _worker_pids(self) -> tuple[int, ...]:
        # ProcessPoolExecutor has no public view of its workers. A dead one's sentinel is readable; `wait` only
        # selects on it (reading it is the executor's own business).
        processes = dict(getattr(self._executor, "_processes", None) or {})
        alive = []
        for pid, process in processes.items():
            try:
                if not multiprocessing.connection.wait([process.sentinel], timeout=0):
                    alive.append(pid)
            except (OSError, ValueError):  # closed: joined after it ended
                continue
        return tuple(sorted(alive))

    async def warm_up(self) -> None:
        """Start the workers now rather than on the first member's command."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _ready) for _ in range(self.workers)))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

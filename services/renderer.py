"""The chart renderer: render functions (module-level, taking a picklable spec, returning PNG bytes) run off the
event loop, in worker processes for the bot and in threads for the console.

Faults. A worker that dies (killed, out of memory) breaks a `ProcessPoolExecutor` for good: every later render
would raise `BrokenProcessPool`. The renderer replaces a broken pool with a new one, retries the render once, and
keeps the count and the last failure for `/iwm status` (`Renderer.health`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# Imported once by the forkserver, so every render worker forked from it starts warm.
WORKER_PRELOAD = ["matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.dates", "matplotlib.patches",
                  "services.charts"]


def _ready() -> bool:
    return True


@dataclass(frozen=True)
class RenderHealth:
    """The renderer as `/iwm status` shows it."""

    processes: bool  # worker processes (the bot) or threads (the console)
    workers: int  # how many the pool runs
    worker_pids: tuple[int, ...]  # the worker processes alive now (empty with threads)
    restarts: int  # broken pools replaced since start-up
    last_failure: str | None  # what broke the last pool
    last_failure_at: datetime | None

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
    forkserver that has already imported services.charts, so starting one is cheap. A one-shot console answer
    uses a thread instead, which starts instantly.
    """

    def __init__(self, workers: int = 2, *, processes: bool = False) -> None:
        self.workers, self.processes = workers, processes
        self.restarts = 0
        self._last_failure: tuple[str, datetime] | None = None
        self._executor = self._new_executor()

    def _new_executor(self) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="render")
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(WORKER_PRELOAD)
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context)

    async def render(self, fn: Callable[[T], bytes], spec: T) -> bytes:
        """`fn(spec)` in a worker. A broken pool (a worker died) is replaced and the render retried once."""
        try:
            return await self._run(fn, spec)
        except BrokenProcessPool:
            return await self._run(fn, spec)  # on the pool that replaced it; a second failure is raised

    async def _run(self, fn: Callable[[T], bytes], spec: T) -> bytes:
        executor = self._executor
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, spec)
        except BrokenProcessPool as exc:
            self._replace(executor, exc)
            raise

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
        return RenderHealth(self.processes, self.workers, self._worker_pids(), self.restarts, failure, failed_at)

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

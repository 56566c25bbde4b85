"""Long work on the database thread in short turns: a purge, an erasure or a report over a million-message log
takes many turns of about TURN seconds each, so the log writer and other commands run in between
(bench: community_scale)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from services.sql import Connection

T = TypeVar("T")

TURN = 0.02  # seconds on the database thread per turn


class Pace:
    """How much (rows, days) the next turn takes: as much as ran in about TURN seconds last time, changing at most
    twofold a turn, between `least` and `most`. A member's messages lie scattered over the file and cost several
    times as much per row as the retention purge's contiguous oldest ones, so a fixed amount is either slow for
    one or a stall for the other.

    With `checkpoint`, each turn then checkpoints SQLite's write-ahead log (PASSIVE), inside its turn and its timing.
    Left to SQLite, the automatic checkpoint (every 1000 pages, about 30 ms here, and a deletion dirties hundreds
    through the indexes) would run inside whichever commit crosses it, a turn's or the log writer's."""

    def __init__(self, most: int, *, first: int = 100, least: int = 10, checkpoint: bool = False) -> None:
        self.most = max(1, most)
        self.least = min(least, self.most)
        self.size = max(self.least, min(self.most, first))
        self.checkpoint = checkpoint

    def __call__(self, step: Callable[[Connection, int], T]) -> Callable[[Connection], T]:
        """`step(d, size)` as a database-thread function that times itself and sizes the next turn."""

        def run(d: Connection) -> T:
            start = time.perf_counter()
            try:
                result = step(d, self.size)
                if self.checkpoint:
                    d.checkpoint()
                return result
            finally:
                scale = min(2.0, max(0.5, TURN / max(time.perf_counter() - start, 1e-4)))
                self.size = max(self.least, min(self.most, int(self.size * scale)))

        return run

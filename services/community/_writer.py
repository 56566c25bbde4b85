"""The batched writer: log events are queued without waiting and written in batches on the database thread,
in the order they arrived, so a burst of messages never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import sys
from collections.abc import Iterable, Sequence

from services.community._events import Event, Prepared
from services.sql import Connection
from services.storage import Database

log = logging.getLogger(__name__)

BATCH_SIZE = 500  # rows per transaction at most
FLUSH_INTERVAL = 0.5  # seconds: the longest an event waits in memory when traffic is light
MAX_PENDING = 4 * BATCH_SIZE  # events in memory at most: then `put` writes a batch before it returns
WRITE_ATTEMPTS = 3  # a batch whose transaction fails (disk full, locked) is retried, then dropped and logged

# An event's kind and its parameter rows: the queue holds these, not the events, so that a backlog of thousands
# keeps fewer objects for the garbage collector to walk (bench: community_log, 10-15% more messages a second).
Op = tuple[type[Event], Prepared]
# Errors that belong to one event (a value the database cannot store, a naive time). Anything else, such as
# sqlite3.OperationalError (locked, disk full) or a lost PostgreSQL connection, aborts the whole batch so
# LogWriter retries it.
BAD_EVENT = (ValueError, TypeError, OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError,
             sqlite3.ProgrammingError, sqlite3.DataError)


def _bad_event(exc: Exception) -> bool:
    """`exc` belongs to one event (BAD_EVENT, or PostgreSQL's data and integrity errors; psycopg is imported only
    when a PostgreSQL connection is made, so it is looked up, not imported, here)."""
    pg = sys.modules.get("psycopg")
    return isinstance(exc, BAD_EVENT) or (pg is not None and isinstance(exc, (pg.DataError, pg.IntegrityError)))


def _ids(values: Iterable[object]) -> list[int]:
    """The ids among an event's values, for log lines (never its text: the log file is not covered by
    forget-me)."""
    return [v for v in values if isinstance(v, int)][:4]


def _execute(d: Connection, kind: type[Event], run: Sequence[Op]) -> None:
    """Run a kind's statements for a run of its events: an INSERT ... VALUES of several rows by `insert_rows`
    (the fastest way each engine has), anything else by one executemany. More than one SQL call goes in a
    savepoint, so a failure leaves nothing half done; a single statement is atomic by itself on SQLite. On
    PostgreSQL a failed statement spoils the whole transaction, so every run has its savepoint there."""
    steps = []
    for i, sql in enumerate(kind.statements):
        rows = [row for _, params in run for row in params[i]]
        if rows:
            steps.append((sql, rows))
    with d.atomic() if len(steps) > 1 or d.engine == "postgresql" else contextlib.nullcontext():
        for sql, rows in steps:
            if len(rows) > 1 and sql.startswith("INSERT") and " VALUES " in sql:
                d.insert_rows(sql, rows)
            else:
                d.executemany(sql, rows)


def apply_ops(d: Connection, ops: Sequence[Op]) -> tuple[int, int]:
    """Write prepared events (kind, parameter rows) in order in one transaction; returns (applied, skipped).

    Runs of consecutive batchable events of one kind go in together. If a run fails, none of it stays and it is
    retried one event at a time, so a bad event is logged and skipped and the rest stay.
    """
    runs: list[tuple[type[Event], list[Op]]] = []
    for op in ops:
        kind = op[0]
        if runs and runs[-1][0] is kind and kind.batchable:
            runs[-1][1].append(op)
        else:
            runs.append((kind, [op]))
    applied = skipped = 0
    with d.atomic():
        for kind, run in runs:
            try:
                _execute(d, kind, run)
                applied += len(run)
                continue
            except Exception as exc:
                if not _bad_event(exc):
                    raise
                log.debug("community log: a run of %d %s events failed; retrying one by one", len(run),
                          kind.__name__)
            for op in run:
                try:
                    _execute(d, kind, [op])
                    applied += 1
                except Exception as exc:
                    if not _bad_event(exc):
                        raise
                    rows = op[1]
                    log.warning("community log: skipped a %s the database refused %s: %r", kind.__name__,
                                _ids(rows[0][0] if rows[0] else ()), exc)
                    skipped += 1
    return applied, skipped


class LogWriter:
    """Queues log events and writes them in batches: up to `batch_size` events per transaction, or whatever
    arrived within `interval` seconds of the first waiting event, on the database thread, in arrival order.

    `put` does not wait while fewer than `max_pending` events are in memory. Past that (events arrive faster
    than the database takes them, or other work holds the database thread), `put` writes the oldest batch
    itself and returns once it is committed, holding up the event loop meanwhile: back-pressure, so the bot
    reads no more gateway events (and acknowledges none, see tests/test_process.py) until the backlog is down
    again. What is lost in a crash: the events still in memory, at most `max_pending` (tests/test_process.py
    measures what kill -9 loses). `flush()` returns once everything queued before it is committed;
    `close()` flushes and stops (call it at shutdown).

    The queue is a plain list that the writer takes a batch at a time (not an asyncio.Queue, whose per-item
    cost was most of the writer's overhead at gateway-burst rates).
    """

    def __init__(self, db: Database, *, batch_size: int = BATCH_SIZE, interval: float = FLUSH_INTERVAL,
                 max_pending: int = MAX_PENDING) -> None:
        if batch_size < 1 or interval < 0 or max_pending < batch_size:
            raise ValueError("batch_size must be at least 1, interval not negative, max_pending at least batch_size")
        self.db, self.batch_size, self.interval, self.max_pending = db, batch_size, interval, max_pending
        self._ops: list[Op] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (events queued before it, flush future)
        self._queued = 0  # events ever queued
        self._taken = 0  # events ever taken by the writer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._retrying = False  # a failed batch waits to be tried again: writing a later one first breaks order
        self.applied = 0  # events written
        self.skipped = 0  # events refused (bad rows) or dropped after failed transactions
        self.pushed_back = 0  # batches `put` wrote itself (back-pressure)

    @property
    def pending(self) -> int:
        return len(self._ops)

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="community-log-writer")

    def put(self, event: Event) -> None:
        """Queue one event. Its parameter rows (cashtags, tone, timestamps; a few microseconds) are worked out
        here, on the event loop, so that the database thread only runs SQL, which releases the GIL: the two then
        overlap (bench: community_log). A bad event (naive time, wrong type) is logged and skipped."""
        if self._closed:
            raise RuntimeError("the community log writer is closed")
        try:
            prepared = event.rows()
        except BAD_EVENT as exc:
            slots: tuple[str, ...] = event.__slots__
            log.warning("community log: skipped a bad %s %s: %r", type(event).__name__,
                        _ids(getattr(event, slot) for slot in slots), exc)
            self.skipped += 1
            return
        if self._task is None:
            self.start()
        ops = self._ops
        ops.append((type(event), prepared))
        self._queued += 1
        if len(ops) == 1 or len(ops) >= self.batch_size:
            self._wake.set()
        if len(ops) >= self.max_pending and not self._retrying:
            self._push_back()

    def _push_back(self) -> None:
        """Write the oldest batch now, the event loop waiting. A batch the writer task has in flight was submitted
        to the database thread earlier, so it commits first: the order holds. Flush waiters are released by the
        writer task, which knows when its own batch is in."""
        batch, self._ops = self._ops[: self.batch_size], self._ops[self.batch_size:]
        try:
            applied, skipped = self.db.run_blocking(functools.partial(apply_ops, ops=batch))
        except Exception:
            log.exception("community log: writing %d events under back-pressure failed; the writer retries them",
                          len(batch))
            self._ops[:0] = batch
            self._retrying = True  # no more back-pressure writes until the writer task has tried again
            return
        self.applied += applied
        self.skipped += skipped
        self.pushed_back += 1
        self._taken += len(batch)

    async def flush(self) -> None:
        """Return once every event queued so far is committed (or skipped)."""
        if self._task is None or self._task.done():
            return
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((self._queued, done))
        self._wake.set()
        await asyncio.shield(done)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._wake.set()
            await self._task

    def _release_waiters(self) -> None:
        still = []
        for upto, done in self._waiters:
            if self._taken >= upto:
                if not done.done():
                    done.set_result(None)
            else:
                still.append((upto, done))
        self._waiters = still

    async def _run(self) -> None:
        while True:
            if not self._ops:
                self._release_waiters()
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            hurry = self._closed or self._waiters or len(self._ops) >= self.batch_size
            if not hurry:  # let a light trickle gather for up to `interval` seconds
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                except TimeoutError:
                    pass
            batch, self._ops = self._ops[: self.batch_size], self._ops[self.batch_size:]
            await self._write(batch)
            self._taken += len(batch)
            self._release_waiters()

    async def _write(self, batch: list[Op]) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                applied, skipped = await self.db.run(functools.partial(apply_ops, ops=batch))
            except Exception:
                log.exception("community log: writing %d events failed (attempt %d of %d)", len(batch), attempt,
                              WRITE_ATTEMPTS)
                if attempt < WRITE_ATTEMPTS:
                    self._retrying = True
                    await asyncio.sleep(0.5 * attempt)
                continue
            finally:
                self._retrying = False
            self.applied += applied
            self.skipped += skipped
            return
        log.error("community log: dropped %d events after %d failed attempts", len(batch), WRITE_ATTEMPTS)
        self.skipped += len(batch)

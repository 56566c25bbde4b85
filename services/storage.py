"""SQLite storage. One connection, owned by one dedicated thread; every access goes through `Database.run`.

SQLite objects belong to the thread that made them, and a single writer thread also serialises writes, so the
event loop never waits on the disk and no two coroutines interleave inside a transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from services.schema import SchemaError, migrate

T = TypeVar("T")

# The database thread lets go of the GIL in every SQLite call and must then win it back from the event loop. By
# default a waiting thread gets it only after 5 ms, so a busy loop (a gateway burst) starves the writer; 0.2 ms
# keeps both moving (bench: community_log).
GIL_SWITCH_INTERVAL = 0.0002
DATABASE_MODE = 0o600


class DatabaseError(RuntimeError):
    """The database cannot be opened or written; the message says why and what to do."""


class Database:
    def __init__(self, path: Path | str, *, lock_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite_utils.Database | None = None

    async def open(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))  # process-wide; see above
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._open)
        except SchemaError:
            self._executor.shutdown(wait=False)
            raise
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            raise DatabaseError(
                f"cannot open database {self.path}: {exc}. Check that the file and its folder are writable "
                "and that no other process holds a lock on it (DATABASE_PATH sets the location)."
            ) from exc

    def _open(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Members' messages: readable by the bot's user only. SQLite gives the -wal and -shm files the mode
            # of the database file, so creating that one 0600 (an existing file keeps its mode) covers all three.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, DATABASE_MODE))
        conn = sqlite3.connect(str(self.path), timeout=self.lock_timeout, check_same_thread=True)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows are overwritten with zeros, not left in free pages: forget-me and deletions mean gone.
            conn.execute("PRAGMA secure_delete=ON")
            migrate(conn)  # every table the stores use, at this code's version (services.schema)
            # Prove we can write now rather than fail on the first write later.
            conn.execute("INSERT OR REPLACE INTO _meta VALUES ('opened', datetime('now'))")
            conn.commit()
        except (sqlite3.Error, SchemaError):
            conn.close()
            raise
        self._db = sqlite_utils.Database(conn)

    async def run(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `fn(db)` on the database thread and return its result."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    async def durable(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `fn(db)` on the database thread in one transaction committed with `synchronous=FULL`.

        The connection runs WAL with `synchronous=NORMAL`: a commit survives a crash of the bot but not a power loss
        or an OS crash, which can roll back the last transactions. For the few writes that decide whether a post goes
        out (the alert outbox, a poll's result claim) a rolled-back row means the post is sent again, so they pay one
        fsync of the WAL per commit (FULL); everything else (the community log, caches) keeps NORMAL's speed.
        """

        def tx(db: sqlite_utils.Database) -> T:
            conn = db.conn
            if conn.in_transaction:  # the safety level cannot change inside a transaction; earlier work is done
                conn.commit()
            conn.execute("PRAGMA synchronous=FULL")
            try:
                with conn:
                    return fn(db)
            finally:
                conn.execute("PRAGMA synchronous=NORMAL")

        return await self.run(tx)

    def run_blocking(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `fn(db)` on the database thread and wait for it *without* yielding: called from the event loop, the
        loop stands still meanwhile. Only for back-pressure (the community log writer), where that is the point."""
        return self._executor.submit(self._call, fn).result()

    async def cached_row(self, table: str, key_column: str, key: object) -> dict[str, Any] | None:
        """The row of a cache table whose `key_column` is `key`; None if there is none."""

        def read(db: sqlite_utils.Database) -> dict[str, Any] | None:
            rows = list(db.query(f"select * from {table} where {key_column} = ?", [key]))
            return rows[0] if rows else None

        return await self.run(read)

    async def cache_row(self, table: str, key_column: str, row: dict[str, Any]) -> None:
        """Insert or replace `row` in a cache table keyed by `key_column`."""
        await self.run(lambda db: db.table(table).upsert(row, pk=key_column))

    def _call(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        if self._db is None:
            raise DatabaseError("database is not open")
        return fn(self._db)

    async def close(self) -> None:
        if self._db is not None:
            db = self._db

            def _close() -> None:
                db.conn.commit()
                db.conn.close()

            await asyncio.get_running_loop().run_in_executor(self._executor, _close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

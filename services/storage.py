"""Storage: SQLite (a file, one process) or PostgreSQL (a `postgresql://` URL, shared by every shard process).

One connection, owned by one dedicated thread; every access goes through `Database.run`. SQLite objects belong
to the thread that made them, and a single writer thread also serialises writes, so the event loop never waits on
the disk and no two coroutines interleave inside a transaction. Store callbacks get a `services.sql.Connection`,
the same calls and the same SQL text on both engines.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from services.schema import SchemaError, migrate
from services.sql import Connection, PostgresConnection, SQLiteConnection, display_url, is_postgres_url

if TYPE_CHECKING:
    from services.config import Settings

T = TypeVar("T")

# The database thread lets go of the GIL in every SQLite call and must then win it back from the event loop. By
# default a waiting thread gets it only after 5 ms, so a busy loop (a gateway burst) starves the writer; 0.2 ms
# keeps both moving (bench: community_log).
GIL_SWITCH_INTERVAL = 0.0002
DATABASE_MODE = 0o600


MARK_OPENED = "INSERT INTO _meta VALUES ('opened', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


def opened_at() -> str:
    """`_meta.opened`: when a process last opened the database, in SQLite's datetime('now') format."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


class DatabaseError(RuntimeError):
    """The database cannot be opened or written; the message says why and what to do."""


class Database:
    """`target`: a SQLite file (or `:memory:`), or a `postgresql://` URL."""

    def __init__(self, target: Path | str, *, lock_timeout: float = 5.0) -> None:
        self.url = str(target) if is_postgres_url(target) else None
        self.path = Path(target)
        self.engine = "postgresql" if self.url else "sqlite"
        self.lock_timeout = lock_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.engine)
        self._db: Connection | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """PostgreSQL when DATABASE_URL is set (it wins), else the SQLite file at DATABASE_PATH."""
        return cls(settings.database_url or settings.database_path)

    @property
    def location(self) -> str:
        """The file or the database (without its password), for messages."""
        return display_url(self.url) if self.url else str(self.path)

    async def open(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))  # process-wide; see above
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._open_postgres if self.url else self._open)
        except (SchemaError, DatabaseError):
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
            conn.execute(MARK_OPENED, [opened_at()])
            conn.commit()
        except (sqlite3.Error, SchemaError):
            conn.close()
            raise
        self._db = SQLiteConnection(conn)

    def _open_postgres(self) -> None:
        import psycopg  # here, not at the top: a SQLite bot never pays for importing it

        assert self.url is not None
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, round(self.lock_timeout)))
        except psycopg.Error as exc:
            raise self._unreachable(exc) from exc
        try:
            # Every commit waits for the WAL flush (the server default, set in case the role's default differs):
            # on PostgreSQL `durable` is an ordinary transaction.
            conn.execute("SET synchronous_commit = on")
            migrate(conn)
            db = PostgresConnection(conn)
            db.execute(MARK_OPENED, [opened_at()])
        except psycopg.Error as exc:
            conn.close()
            raise self._unreachable(exc) from exc
        except SchemaError:
            conn.close()
            raise
        self._db = db

    def _unreachable(self, exc: Exception) -> DatabaseError:
        return DatabaseError(
            f"cannot open database {self.location}: {' '.join(str(exc).split())}. Check that the server runs, "
            "that the URL's user may create tables in the database (DATABASE_URL sets it).")

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(db)` on the database thread and return its result."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    async def run_sqlite(self, fn: Callable[[SQLiteConnection], T]) -> T:
        """`run` for code that is SQLite's own (the shard-layout check of one file per layout): a clear error on
        PostgreSQL rather than a failure inside `fn`."""
        return await self.run(partial(sqlite_only, fn))

    async def durable(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(db)` on the database thread in one transaction committed with `synchronous=FULL` (SQLite; on
        PostgreSQL every commit is durable, synchronous_commit on).

        The connection runs WAL with `synchronous=NORMAL`: a commit survives a crash of the bot but not a power loss
        or an OS crash, which can roll back the last transactions. For the few writes that decide whether a post goes
        out (the alert outbox, a poll's result claim) a rolled-back row means the post is sent again, so they pay one
        fsync of the WAL per commit (FULL); everything else (the community log, caches) keeps NORMAL's speed.
        """

        def tx(db: Connection) -> T:
            if isinstance(db, PostgresConnection):
                with db.atomic():
                    return fn(db)
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

    def run_blocking(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(db)` on the database thread and wait for it *without* yielding: called from the event loop, the
        loop stands still meanwhile. Only for back-pressure (the community log writer), where that is the point."""
        return self._executor.submit(self._call, fn).result()

    async def cached_row(self, table: str, key_column: str, key: object) -> dict[str, Any] | None:
        """The row of a cache table whose `key_column` is `key`; None if there is none."""

        def read(db: Connection) -> dict[str, Any] | None:
            rows = list(db.query(f"select * from {table} where {key_column} = ?", [key]))
            return rows[0] if rows else None

        return await self.run(read)

    async def cache_row(self, table: str, key_column: str, row: dict[str, Any]) -> None:
        """Insert or replace `row` in a cache table keyed by `key_column`."""
        names = list(row)
        sql = (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
               f"ON CONFLICT ({key_column}) DO UPDATE SET "
               + ", ".join(f"{n} = excluded.{n}" for n in names if n != key_column))
        await self.run(lambda db: db.execute(sql, list(row.values())))

    def _call(self, fn: Callable[[Connection], T]) -> T:
        if self._db is None:
            raise DatabaseError("database is not open")
        return fn(self._db)

    async def close(self) -> None:
        if self._db is not None:
            db = self._db

            def _close() -> None:
                if isinstance(db, PostgresConnection):
                    db.pg.close()
                else:
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


def sqlite_only(fn: Callable[[SQLiteConnection], T], db: Connection) -> T:
    """`fn(db)` when `db` is SQLite; a DatabaseError naming the fix otherwise (see `Database.run_sqlite`)."""
    if not isinstance(db, SQLiteConnection):
        raise DatabaseError(f"{getattr(fn, '__name__', 'this step')} is for SQLite files only, not DATABASE_URL")
    return fn(db)

"""The database: one thread, WAL, and clear errors when it cannot be opened."""

from __future__ import annotations

import sqlite3
import sys
import threading

import pytest

from services.storage import GIL_SWITCH_INTERVAL, Database, DatabaseError


async def test_all_access_runs_on_one_thread_in_wal_mode(tmp_path):
    async with Database(tmp_path / "a.db") as db:
        names = {await db.run(lambda d: threading.current_thread().name) for _ in range(20)}
        assert len(names) == 1 and names.pop().startswith("sqlite")
        assert await db.run(lambda d: d.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"


async def test_opening_makes_the_gil_switch_fast(tmp_path):
    """The database thread must win the GIL back quickly from a busy event loop (bench: community_log)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's default
    try:
        async with Database(tmp_path / "a.db"):
            assert sys.getswitchinterval() <= GIL_SWITCH_INTERVAL
    finally:
        sys.setswitchinterval(before)


async def test_a_locked_database_is_a_clear_error(tmp_path):
    path = tmp_path / "locked.db"
    async with Database(path):
        pass
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseError, match=r"cannot open database .*lock"):
            await Database(path, lock_timeout=0.1).open()
    finally:
        holder.rollback()
        holder.close()


async def test_a_path_that_cannot_be_a_database_is_a_clear_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(DatabaseError, match="DATABASE_PATH"):
        await Database(tmp_path / "dir.db").open()


async def test_a_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseError, match="cannot open database"):
        await Database(path).open()

"""The database: one thread, WAL, and clear errors when it cannot be opened."""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
import threading

import pytest

from services import storage
from services.sql import to_numbered, to_pyformat
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


async def test_the_database_and_its_wal_files_are_created_for_the_owner_only(tmp_path):
    """The log holds members' messages: a new database file, its -wal and -shm are 0600, whatever the umask."""
    path = tmp_path / "new" / "bot.db"
    umask = os.umask(0o022)
    try:
        async with Database(path) as db:
            await db.run(lambda d: d.execute("CREATE TABLE t (x TEXT)"))
            files = [path, path.with_name("bot.db-wal"), path.with_name("bot.db-shm")]
            assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
    finally:
        os.umask(umask)


async def test_a_deleted_row_leaves_no_trace_in_the_file(tmp_path, monkeypatch):
    """secure_delete: the text of a deleted row does not stay in the file's free pages (forget-me). Some SQLite
    builds turn it on by default (Debian's), others do not (python.org's): the connection starts with it off."""
    path, secret = tmp_path / "a.db", "forget-me-7f3c1e9a-unique-text"

    def connect_without_secure_delete(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete=OFF")
        return conn

    real_connect = sqlite3.connect
    monkeypatch.setattr(storage.sqlite3, "connect", connect_without_secure_delete)

    def checkpoint(d):
        d.conn.commit()
        d.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async with Database(path) as db:
        def write(d):
            d.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
            d.execute("INSERT INTO t (x) VALUES (?), (?)", [secret, "kept"])
            checkpoint(d)

        await db.run(write)
        assert secret.encode() in path.read_bytes()  # the check below can see it

        def delete(d):
            d.execute("DELETE FROM t WHERE x = ?", [secret])
            checkpoint(d)

        await db.run(delete)
        files = [path, path.with_name("a.db-wal")]
        assert all(secret.encode() not in f.read_bytes() for f in files if f.exists())
        assert await db.run(lambda d: [r[0] for r in d.execute("SELECT x FROM t")]) == ["kept"]


# Both engines (tests/conftest.py `database`: a SQLite file and a PostgreSQL schema)


async def test_every_engine_runs_on_one_thread(database):
    names = {await database.run(lambda d: threading.current_thread().name) for _ in range(20)}
    assert len(names) == 1 and names.pop().startswith(database.engine)


async def test_cache_rows_are_inserted_then_replaced(database):
    assert await database.cached_row("bars_cache", "symbol", "IWM") is None
    first = {"symbol": "IWM", "source": "yahoo", "fetched_at": 1.5, "as_of": "2026-12-01", "csv": "a,b"}
    await database.cache_row("bars_cache", "symbol", first)
    second = {**first, "source": "stooq", "fetched_at": 2.25, "csv": "c,d"}
    await database.cache_row("bars_cache", "symbol", second)
    assert await database.cached_row("bars_cache", "symbol", "IWM") == second
    assert await database.run(lambda d: d.execute("SELECT count(*) FROM bars_cache").fetchone()[0]) == 1


async def test_placeholders_and_transactions_behave_alike(database):
    def write(d):
        d.execute("INSERT INTO _meta (key, value) VALUES (:key, :value)", {"key": "a", "value": "50% off ?"})
        d.executemany("INSERT INTO _meta (key, value) VALUES (?, ?)", [("b", "1"), ("c", "2")])
        try:
            with d.atomic():
                d.execute("INSERT INTO _meta (key, value) VALUES (?, ?)", ["d", "rolled back"])
                raise KeyError("abort")
        except KeyError:
            pass
        return [tuple(r) for r in d.execute("SELECT key, value FROM _meta WHERE key != 'opened' AND value "
                                            "LIKE '%' ORDER BY key")]

    assert await database.run(write) == [("a", "50% off ?"), ("b", "1"), ("c", "2")]


async def test_a_durable_write_is_seen_by_another_connection(database_target):
    async with Database(database_target) as writer, Database(database_target) as reader:
        await writer.durable(lambda d: d.execute("INSERT INTO _meta (key, value) VALUES (?, ?)", ["k", "v"]))
        assert await reader.run(lambda d: d.execute("SELECT value FROM _meta WHERE key = ?", ["k"]).fetchone()) \
            == ("v",)


async def test_an_unreachable_postgres_is_a_clear_error_without_the_password(tmp_path):
    url = f"postgresql://bot:s3cret@/smallcaps?host={tmp_path}&connect_timeout=1"
    with pytest.raises(DatabaseError, match="DATABASE_URL") as raised:
        await Database(url).open()
    assert "s3cret" not in str(raised.value) and "bot:***@" in str(raised.value)


def test_placeholders_become_psycopgs_outside_quoted_text():
    assert to_pyformat("SELECT '?', ':x', a::text FROM t WHERE b = ? AND c LIKE '5%' AND d = :d AND e % 2 = 0") \
        == "SELECT '?', ':x', a::text FROM t WHERE b = %s AND c LIKE '5%' AND d = %(d)s AND e %% 2 = 0"
    assert to_numbered("INSERT INTO t VALUES (?, '?', ?), (?, 'it''s ?', ?) ON CONFLICT DO NOTHING") \
        == "INSERT INTO t VALUES ($1, '?', $2), ($3, 'it''s ?', $4) ON CONFLICT DO NOTHING"


async def test_many_rows_insert_in_wide_statements_on_both_engines(database):
    """`insert_rows` splits a long run at the engine's parameter limit and keeps every row once, in order;
    an upsert's duplicate key in one run is a no-op, as row by row."""
    await database.run(lambda d: d.execute("CREATE TABLE wide (id INTEGER PRIMARY KEY, note TEXT NOT NULL, n INTEGER)"))
    rows = [(i, f"row {i} 'quoted' ?", i * 3) for i in range(1, 30_001)]  # 90,000 parameters: more than one statement
    await database.run(lambda d: d.insert_rows("INSERT INTO wide (id, note, n) VALUES (?, ?, ?) "
                                               "ON CONFLICT (id) DO NOTHING", rows))
    upsert = "INSERT INTO wide (id, note, n) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET n = excluded.n"
    await database.run(lambda d: d.insert_rows(upsert, [(30_001, "new", 1), (30_001, "new", 2)]))
    stored = await database.run(lambda d: d.execute("SELECT id, note, n FROM wide ORDER BY id").fetchall())
    assert [tuple(r) for r in stored] == [*rows, (30_001, "new", 2)]

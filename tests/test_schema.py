"""The schema ladder: a fresh file, released files from the history, a newer file, a broken layout, a later step."""

from __future__ import annotations

import gzip
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

import bot
from services.community import CommunityLog, MessageCreated
from services.schema import (
    CURRENT_VERSION,
    MIGRATIONS,
    Migration,
    SchemaError,
    columns,
    expected_columns,
    migrate,
)
from services.storage import Database
from tests.support.postgres import schema_url

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
FIXTURES = sorted((Path(__file__).parent / "fixtures" / "schema").glob("*.db.gz"))  # scripts/make_schema_fixtures.py
# The released layout each version of the ladder must make exactly (scripts/make_schema_fixtures.py RELEASES).
LAYOUT_OF_VERSION = {1: "f5a8642", 2: "48db5fb", 5: "94731a4"}


def versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]


async def test_a_fresh_file_gets_every_table_at_the_current_version(tmp_path):
    path = tmp_path / "fresh.db"
    async with Database(path):
        pass
    async with Database(path):  # a second start applies nothing again
        pass
    assert versions(path) == [m.version for m in MIGRATIONS] and versions(path)[-1] == CURRENT_VERSION
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(expected_columns()) <= tables
    assert {"alert_subscriptions", "community_messages", "sentiment_votes", "bars_cache", "member_snapshot"} <= tables


def newer_file(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        migrate(conn)
        conn.execute("INSERT INTO schema_version VALUES (?, 'from a later release', '2027-01-01')",
                     [CURRENT_VERSION + 1])
    return path


async def test_a_file_newer_than_the_code_is_refused(tmp_path):
    path = newer_file(tmp_path / "newer.db")
    with pytest.raises(SchemaError, match=f"{path} has schema version {CURRENT_VERSION + 1}, newer than this code's"):
        await Database(path).open()
    assert versions(path)[-1] == CURRENT_VERSION + 1


def test_the_bot_says_so_in_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    path = newer_file(tmp_path / "newer.db")
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DATABASE_PATH", str(path))
    assert bot.main(["console", "/iwm levels"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"database error: database {path} has schema version")


async def test_a_file_lacking_a_column_is_refused_at_start_not_dropping_every_logged_event(tmp_path):
    """The reproduced failure: community_messages without reply_to. Before versioning the stores' CREATE TABLE IF
    NOT EXISTS passed over it, the bot started, and the log writer failed on every batch."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE community_messages (message_id INTEGER PRIMARY KEY, guild_id INTEGER NOT NULL, "
                     "channel_id INTEGER NOT NULL, author_id INTEGER NOT NULL, created_at TEXT NOT NULL, "
                     "content TEXT NOT NULL, cashtags TEXT NOT NULL DEFAULT '[]', bull INTEGER NOT NULL DEFAULT 0, "
                     "bear INTEGER NOT NULL DEFAULT 0, edited_at TEXT, deleted INTEGER NOT NULL DEFAULT 0, "
                     "deleted_at TEXT)")
        conn.execute("INSERT INTO community_messages (message_id, guild_id, channel_id, author_id, created_at, "
                     "content) VALUES (1, 10, 20, 30, '2026-01-05T14:00:00Z', 'kept')")
    database = Database(path)
    with pytest.raises(SchemaError, match=f"{path}: table community_messages lacks column reply_to"):
        await database.open()
        clog = CommunityLog(database, interval=60)  # what ran before: it must not get this far
        await clog.open()
        await clog.set_logging(10, 20, True, T0)
        clog.put(MessageCreated(10, 20, 2, 30, T0, "lost"))
        await clog.close()
        await database.close()
    with sqlite3.connect(path) as conn:  # refused without touching it: no version, no half-made tables
        assert conn.execute("SELECT content FROM community_messages").fetchall() == [("kept",)]
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == [
            "community_messages"]


def test_the_bot_refuses_a_file_lacking_a_column_in_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alert_levels (guild_id INTEGER PRIMARY KEY, support REAL NOT NULL, "
                     "entry_low REAL NOT NULL, entry_high REAL NOT NULL, resistance_low REAL NOT NULL, "
                     "resistance_high REAL NOT NULL, updated_at TEXT NOT NULL)")  # no updated_by
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_PATH", str(path))
    assert bot.main(["console", "/iwm levels"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"database error: database {path}: table alert_levels lacks "
                                                   "column updated_by")


def test_a_later_migration_adds_a_column_and_keeps_every_row(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        assert migrate(conn) == CURRENT_VERSION
        conn.execute("INSERT INTO alert_state VALUES (7, '{}', '2026-01-05')")
        conn.commit()
        later = (*MIGRATIONS, Migration(CURRENT_VERSION + 1, "a note per guild",
                                        ("ALTER TABLE alert_state ADD COLUMN note TEXT NOT NULL DEFAULT ''",)))
        assert migrate(conn, later) == CURRENT_VERSION + 1
        assert conn.execute("SELECT guild_id, state, note FROM alert_state").fetchall() == [(7, "{}", "")]
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version")][-1] == CURRENT_VERSION + 1


def test_a_failing_migration_changes_nothing(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        migrate(conn)
        broken = (*MIGRATIONS, Migration(CURRENT_VERSION + 1, "half a change", (
            "ALTER TABLE alert_state ADD COLUMN note TEXT", "ALTER TABLE no_such_table ADD COLUMN x TEXT")))
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            migrate(conn, broken)
        assert "note" not in [r[1] for r in conn.execute("PRAGMA table_info(alert_state)")]
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [m.version for m in MIGRATIONS]


# --- released layouts, from the project's history -----------------------------------------------------------

def unpack(fixture: Path, tmp_path: Path) -> Path:
    path = tmp_path / fixture.name.removesuffix(".gz")
    path.write_bytes(gzip.decompress(fixture.read_bytes()))
    return path


def contents(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every table's rows; with `columns`, only those tables' columns (a later migration may add columns)."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN "
                                             "('schema_version', '_meta') ORDER BY name")]
        if columns is not None:
            tables = [t for t in tables if t in columns]
        picked = {t: ", ".join(f"[{c}]" for c in columns[t]) if columns else "*" for t in tables}
        return {t: sorted(conn.execute(f"SELECT {picked[t]} FROM [{t}]").fetchall(), key=repr) for t in tables}


def column_names(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: [c[1] for c in conn.execute(f"PRAGMA table_info([{t}])")] for t in tables}


def layout(path: Path) -> dict[str, object]:
    """Every table's columns (name, type, not null, default, key position) and every index's columns."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN "
                                             "('schema_version') ORDER BY name")]
        indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")]
        return {**{t: [tuple(c[1:]) for c in conn.execute(f"PRAGMA table_info([{t}])")] for t in tables},
                **{i: [c[2] for c in conn.execute(f"PRAGMA index_info([{i}])")] for i in indexes}}


def test_there_is_a_fixture_for_every_release():
    assert [f.name.split(".")[0] for f in FIXTURES] == sorted(["f7d2239", "1d8608f", *LAYOUT_OF_VERSION.values()])


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name.split(".")[0] for f in FIXTURES])
async def test_each_released_file_opens_migrates_and_keeps_every_row(fixture, tmp_path):
    path = unpack(fixture, tmp_path)
    before, released_columns = contents(path), column_names(path)
    assert before and all(before.values()), "the fixture has rows in every table"
    async with Database(path) as database:
        assert await database.run(lambda d: d.execute("SELECT max(version) FROM schema_version").fetchone()) == (
            CURRENT_VERSION,)
        texts = await database.run(lambda d: d.execute("SELECT content FROM community_messages").fetchall())
        assert texts == [(f"community_messages.content {i}",) for i in range(3)]  # as the script wrote them
    assert contents(path, released_columns) == before  # every row, every released column, unchanged
    after = contents(path)
    assert set(after) == set(expected_columns()) - {"_meta"}  # tables that came later are made, empty
    assert all(not after[t] for t in set(after) - set(before))


@pytest.mark.parametrize("version", sorted(LAYOUT_OF_VERSION))
def test_each_version_is_exactly_the_schema_main_made_before_versioning(version, tmp_path):
    [fixture] = [f for f in FIXTURES if f.name.startswith(LAYOUT_OF_VERSION[version])]
    released = layout(unpack(fixture, tmp_path))
    fresh = tmp_path / "fresh.db"
    with sqlite3.connect(fresh) as conn:
        migrate(conn, [m for m in MIGRATIONS if m.version <= version])
    assert layout(fresh) == released


# The same ladder on PostgreSQL (each test its own schema on the throwaway cluster, tests/support/postgres.py)


def pg_versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]


async def test_a_fresh_postgres_schema_gets_every_table_and_column_at_the_current_version(postgres):
    with schema_url(postgres) as url:
        async with Database(url):
            pass
        async with Database(url):  # a second start applies nothing again
            pass
        assert pg_versions(url) == [m.version for m in MIGRATIONS]
        with psycopg.connect(url) as conn:
            assert columns(conn) == expected_columns()  # the same tables and columns as SQLite, in order
            types = dict(conn.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema()").fetchall())
            identity = conn.execute(
                "SELECT is_identity FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = 'alert_outbox' AND column_name = 'id'").fetchone()[0]
        assert (types["alert_subscriptions.guild_id"], types["alert_levels.support"], types["alert_outbox.event"]) \
            == ("bigint", "double precision", "text")
        assert identity == "YES"


async def test_a_postgres_schema_newer_than_the_code_is_refused(postgres):
    with schema_url(postgres) as url:
        with psycopg.connect(url) as conn:
            migrate(conn)
            conn.execute("INSERT INTO schema_version VALUES (%s, 'from a later release', '2027-01-01')",
                         [CURRENT_VERSION + 1])
        with pytest.raises(SchemaError, match=f"has schema version {CURRENT_VERSION + 1}, newer than this code's"):
            await Database(url).open()
        assert pg_versions(url)[-1] == CURRENT_VERSION + 1


async def test_a_postgres_table_missing_a_column_is_refused_and_nothing_is_recorded(postgres):
    with schema_url(postgres) as url:
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE alert_state (guild_id BIGINT PRIMARY KEY, updated_at TEXT NOT NULL)")
        with pytest.raises(SchemaError, match="table alert_state lacks column state"):
            await Database(url).open()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None  # rolled back

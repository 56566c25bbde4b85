"""The schema ladder: a fresh file, a file from before versioning, a newer file, a broken layout, a later step."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bot
from services.community import CommunityLog, MessageCreated
from services.schema import CURRENT_VERSION, MIGRATIONS, Migration, SchemaError, expected_columns, migrate
from services.storage import Database

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


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
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [CURRENT_VERSION]

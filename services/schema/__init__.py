"""The one schema ladder: every table the bot keeps, as an ordered list of numbered migrations.

`migrate(conn)` runs at start-up (`Database.open`) in one transaction: it applies the migrations the file lacks,
records each in `schema_version`, then checks that every table has every column the code expects. A file newer
than the code, or one whose tables match no released layout, is a `SchemaError` whose message says which file
and what to do. Stores never create tables: they assume this schema.

The same ladder runs on PostgreSQL (a `psycopg.Connection`): each statement is written once in SQLite's types and
mapped by `services.sql.postgres_ddl`; the ladder is climbed under an advisory lock instead of SQLite's write
lock, and columns are read from information_schema. A migration is plain SQL that both engines accept. To change a
table, append a `Migration` (`ALTER TABLE ... ADD COLUMN`,
...) and bump nothing else: the version is the last migration's number.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Union

from services.schema import _v1
from services.sql import display_url, postgres_ddl

if TYPE_CHECKING:
    import psycopg


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this code; the message names the file and the fix."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the schema as the stores made it before versioning (alerts, community log, sentiment, "
                 "caches, member data)", _v1.STATEMENTS),
    # IF NOT EXISTS: main made this table (alert mute buttons) before it had versions.
    Migration(2, "alert mutes: a moderator mutes one event kind in a channel until a time", ("""
CREATE TABLE IF NOT EXISTS alert_mutes (
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    until TEXT NOT NULL,
    PRIMARY KEY (guild_id, channel_id, kind)
)""",)),
    # IF NOT EXISTS: main made this table (forget-me during an open poll) before it had versions.
    Migration(3, "forget-me tombstones: a hash of poll and member id for a member who left an open poll", ("""
CREATE TABLE IF NOT EXISTS sentiment_forgotten (
    message_id INTEGER NOT NULL,
    member_hash TEXT NOT NULL,
    PRIMARY KEY (message_id, member_hash)
)""",)),
    # IF NOT EXISTS: main made this table (forget-me in batches) before it had versions.
    Migration(4, "community erasures: a member's forget-me under way, finished at the next start if cut short", ("""
CREATE TABLE IF NOT EXISTS community_erasures (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    requested_at TEXT NOT NULL,
    PRIMARY KEY (guild_id, user_id)
)""",)),
    Migration(5, "member snapshot: trailing EPS and shares outstanding (net income for loss-makers too)", (
        "ALTER TABLE member_snapshot ADD COLUMN eps_ttm REAL",
        "ALTER TABLE member_snapshot ADD COLUMN shares_outstanding REAL",
    )),
    Migration(6, "member closes: daily closes from Yahoo's spark after the bundled ones, and the refresh's batches", (
        """CREATE TABLE member_closes (
    symbol TEXT NOT NULL,
    day TEXT NOT NULL,
    close REAL NOT NULL,
    PRIMARY KEY (symbol, day)
)""",
        """CREATE TABLE member_close_batches (
    day TEXT NOT NULL,
    batch INTEGER NOT NULL,
    rows TEXT NOT NULL,
    PRIMARY KEY (day, batch)
)""",
    )),
    Migration(7, "leases: one process at a time fetches a key or runs the daily refresh (services.lease)", ("""
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL,
    error TEXT
)""",)),
)
CURRENT_VERSION = MIGRATIONS[-1].version

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""


# pg_advisory_xact_lock key of the ladder: two processes never climb it at once (any 64-bit constant; "smallcap")
MIGRATION_LOCK = 0x736D616C6C636170

AnyConnection = Union[sqlite3.Connection, "psycopg.Connection"]  # psycopg is imported only for PostgreSQL


def file_name(conn: AnyConnection) -> str:
    """The main database's file (`:memory:` when it has none), or the PostgreSQL database, for messages."""
    if not isinstance(conn, sqlite3.Connection):
        schema = conn.execute("SELECT current_schema()").fetchone()
        return f"{display_url(conn.info.dsn)} (schema {schema[0] if schema else '?'})"
    row = conn.execute("PRAGMA database_list").fetchone()
    return row[2] or ":memory:"


def version(conn: AnyConnection) -> int:
    """The schema version recorded in the database; 0 before versioning (or for an empty one)."""
    if not isinstance(conn, sqlite3.Connection):
        found = conn.execute("SELECT to_regclass('schema_version')").fetchone()
        if found is None or found[0] is None:
            return 0
    elif not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone():
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: AnyConnection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to the last of `migrations` in one transaction; the version it is at now."""
    target = migrations[-1].version
    postgres = not isinstance(conn, sqlite3.Connection)
    ddl: Callable[[str], str] = postgres_ddl if postgres else str
    record = "INSERT INTO schema_version (version, description, applied_at) VALUES " + (
        "(%s, %s, %s)" if postgres else "(?, ?, ?)")
    if postgres:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
    else:
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: two processes never climb the ladder at once
    try:
        current = version(conn)
        if current > target:
            raise SchemaError(
                f"database {file_name(conn)} has schema version {current}, newer than this code's {target}: "
                "run the newer bot version that wrote it, or restore a backup made before that upgrade")
        conn.execute(ddl(VERSION_TABLE))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for migration in migrations:
            if migration.version > current:
                for statement in migration.statements:
                    conn.execute(ddl(statement))  # the ladder's own SQL
                conn.execute(record, [migration.version, migration.description, now])
        check(conn, expected_columns(tuple(migrations)))
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return target


@cache
def expected_columns(migrations: tuple[Migration, ...] = MIGRATIONS) -> dict[str, tuple[str, ...]]:
    """Each table's columns once every migration is applied to an empty database."""
    empty = sqlite3.connect(":memory:")
    try:
        for migration in migrations:
            for statement in migration.statements:
                empty.execute(statement)
        return columns(empty)
    finally:
        empty.close()


def columns(conn: AnyConnection) -> dict[str, tuple[str, ...]]:
    """Each table's columns in the database, in order."""
    if not isinstance(conn, sqlite3.Connection):
        found: dict[str, list[str]] = {}
        for table, column in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name != 'schema_version' ORDER BY table_name, ordinal_position"):
            found.setdefault(table, []).append(column)
        return {t: tuple(c) for t, c in found.items()}
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%' AND name != 'schema_version' ORDER BY name")]
    return {t: tuple(r[1] for r in conn.execute(f"PRAGMA table_info([{t}])")) for t in tables}


def check(conn: AnyConnection, expected: dict[str, tuple[str, ...]]) -> None:
    """SchemaError when a table lacks a column the code reads or writes (a file no released version made)."""
    present = columns(conn)
    for table, wanted in expected.items():
        missing = [c for c in wanted if c not in present.get(table, ())]
        if missing:
            raise SchemaError(
                f"database {file_name(conn)}: table {table} lacks column {', '.join(missing)}, a layout no "
                "released version made: restore the file from a backup, or move it aside to start with an empty "
                "one (DATABASE_PATH sets the location; DATABASE_URL the PostgreSQL database)")

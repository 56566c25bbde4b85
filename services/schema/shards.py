"""Which guilds a database file holds, and moving guilds between files when the shard count changes.

With SQLite each shard process has its own file, and Discord puts a guild on shard `(guild_id >> 22) % count`.
The file records the layout it was written under (`_meta` key `shard_layout`); a start with another layout is
refused (its guilds' rows are in other files), and `bot.py reshard` moves every guild's rows to the file of its
new shard. Direct messages and user installs arrive on shard 0 and keep no guild rows; the caches and member data
are not per guild and stay in each file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.schema import SchemaError, file_name, migrate

LAYOUT_KEY = "shard_layout"
DATABASE_MODE = 0o600  # as services.storage makes its file


class ShardLayoutError(SchemaError):
    """The file was written under another shard layout; the message names SHARD_COUNT and the reshard command."""


@dataclass(frozen=True)
class Layout:
    """The shards whose guilds a file holds: `count` None means every guild (one process runs every shard)."""

    count: int | None
    ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, shard_ids: Sequence[int] | None, shard_count: int | None) -> Layout:
        """The layout a process runs (SHARD_IDS / SHARD_COUNT): all of them when it runs every shard."""
        if shard_count is None or shard_ids is None or set(shard_ids) == set(range(shard_count)):
            return cls(None)
        return cls(shard_count, tuple(sorted(set(shard_ids))))

    @property
    def files(self) -> int:
        """How many files the bot's guilds are spread over in this layout (one shard per process)."""
        return self.count or 1

    def to_json(self) -> str:
        return json.dumps({"shard_count": self.count, "shard_ids": list(self.ids)})

    @classmethod
    def from_json(cls, text: str) -> Layout:
        data = json.loads(text)
        return cls(data["shard_count"], tuple(data["shard_ids"]))

    def __str__(self) -> str:
        if self.count is None:
            return "every shard"
        return f"shard{'s' if len(self.ids) > 1 else ''} {','.join(map(str, self.ids))} of SHARD_COUNT={self.count}"


def shard_of(guild_id: int, count: int) -> int:
    return (guild_id >> 22) % count


def recorded(conn: sqlite3.Connection, schema: str = "main") -> Layout | None:
    row = conn.execute(f"SELECT value FROM {schema}._meta WHERE key = ?", [LAYOUT_KEY]).fetchone()
    return Layout.from_json(row[0]) if row else None


def record(conn: sqlite3.Connection, layout: Layout, schema: str = "main") -> None:
    conn.execute(f"INSERT OR REPLACE INTO {schema}._meta (key, value) VALUES (?, ?)", [LAYOUT_KEY, layout.to_json()])


def check_layout(conn: sqlite3.Connection, layout: Layout) -> None:
    """Record the layout on a file's first start; refuse a start under another one (ShardLayoutError)."""
    before = recorded(conn)
    if before is None:
        with conn:
            record(conn, layout)
        return
    if before != layout:
        raise ShardLayoutError(
            f"database {file_name(conn)} holds the guilds of {before}, but this process runs {layout}: "
            f"stop every shard process and run `python bot.py reshard --from-count {before.files} --to-count "
            f"{layout.files} DB...` (every shard's DATABASE_PATH, in shard order), or set SHARD_COUNT and "
            "SHARD_IDS back")


# --- moving guilds ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GuildTable:
    name: str
    renumber: str | None = None  # a rowid key the destination gives anew (it numbers its own rows)
    by_poll: bool = False  # no guild_id column: the row follows its poll (sentiment_polls.message_id)


# Every table with guild rows; a table that refers to another's renumbered key comes after it.
GUILD_TABLES = (
    GuildTable("alert_subscriptions", renumber="id"),
    GuildTable("alert_levels"),
    GuildTable("alert_state"),
    GuildTable("alert_outbox", renumber="id"),  # subscription_id follows the subscription's new id
    GuildTable("alert_mutes"),
    GuildTable("community_channels"),
    GuildTable("community_messages"),
    GuildTable("community_revisions", renumber="id"),
    GuildTable("community_reactions"),
    GuildTable("community_erasures"),
    GuildTable("sentiment_votes", by_poll=True),  # before the polls leave their file
    GuildTable("sentiment_forgotten", by_poll=True),
    GuildTable("sentiment_polls"),
    GuildTable("sentiment_schedules", renumber="id"),
)


class ReshardError(SchemaError):
    """The files cannot be resharded as asked; nothing was changed."""


def reshard(files: Sequence[Path | str], from_count: int, to_count: int) -> dict[str, int]:
    """Move every guild's rows from the files of `from_count` shards to the files of `to_count` shards: path i is
    shard i's file in both layouts (max of the two counts; the missing ones are made, 0600). One transaction over
    every file (rollback journal: SQLite commits attached files atomically only outside WAL mode). The rows
    moved, by table. The bot must be stopped: a file another process holds is a ReshardError."""
    paths = [Path(p) for p in files]
    if from_count < 1 or to_count < 1:
        raise ReshardError("--from-count and --to-count are shard counts, 1 or more")
    if len(paths) != max(from_count, to_count):
        raise ReshardError(f"give {max(from_count, to_count)} database files, one per shard in shard order "
                           f"(shard i's DATABASE_PATH at position i; files for new shards are made), not {len(paths)}")
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise ReshardError("the same database file is given twice")
    for i, path in enumerate(paths):
        if i < from_count and not path.is_file():
            raise ReshardError(f"{path}: no such database (shard {i} of {from_count})")
        if i >= from_count and path.exists():
            raise ReshardError(f"{path} exists, but shard {i} is new with --to-count {to_count}: give a new file")
    old = [Layout(None) if from_count == 1 else Layout(from_count, (i,)) for i in range(from_count)]
    new = [Layout(None) if to_count == 1 else Layout(to_count, (i,)) for i in range(to_count)]
    for i, path in enumerate(paths):
        if i >= from_count:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, DATABASE_MODE))
        _prepare(path, old[i] if i < from_count else None)
    conn = sqlite3.connect(paths[0], isolation_level=None, timeout=1.0)
    try:
        names = ["main"] + [f"shard{i}" for i in range(1, len(paths))]
        for name, path in zip(names[1:], paths[1:], strict=True):
            conn.execute("ATTACH DATABASE ? AS " + name, [str(path)])
        for name in names:
            conn.execute(f"PRAGMA {name}.secure_delete=ON")  # moved text leaves no copy in the old file
        conn.execute("BEGIN IMMEDIATE")
        try:
            moved = _move(conn, names[:from_count], names[:to_count], to_count)
            for i, name in enumerate(names):
                if i < to_count:
                    record(conn, new[i], name)
                else:  # a file of a shard that is gone: it holds no guild rows now
                    conn.execute(f"DELETE FROM {name}._meta WHERE key = ?", [LAYOUT_KEY])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise ReshardError(f"cannot reshard: {exc} (is a bot process still running on these files?)") from exc
    finally:
        conn.close()
    return moved


def _prepare(path: Path, layout: Layout | None) -> None:
    """Bring the file to the current schema, check it is the shard it is given as, and leave WAL mode (the bot
    sets it again when it opens the file)."""
    conn = sqlite3.connect(path, timeout=1.0)
    try:
        migrate(conn)
        before = recorded(conn)
        if layout is not None and before is not None and before != layout:
            raise ReshardError(f"{path} holds the guilds of {before}, not {layout}: give the files in shard order "
                               "with the shard count they were written under")
        if conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] != "delete":
            raise ReshardError(f"{path} is in use (stop every bot process before resharding)")
    except sqlite3.Error as exc:
        raise ReshardError(f"cannot open {path}: {exc} (stop every bot process before resharding)") from exc
    finally:
        conn.close()


def _move(conn: sqlite3.Connection, sources: Sequence[str], targets: Sequence[str], count: int) -> dict[str, int]:
    moved: dict[str, int] = {}
    new_ids: dict[tuple[str, int], int] = {}  # (source, old subscription id) -> its id in the target file
    for table in GUILD_TABLES:
        columns = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table.name})")]
        kept = ", ".join(c for c in columns if c != table.renumber)
        moved[table.name] = 0
        for source in sources:
            shard = (f"(SELECT (p.guild_id >> 22) % {count} FROM {source}.sentiment_polls p "
                     f"WHERE p.message_id = t.message_id)" if table.by_poll else f"((t.guild_id >> 22) % {count})")
            for j, target in enumerate(targets):
                if target == source:
                    continue
                rows = f"FROM {source}.{table.name} AS t WHERE {shard} = {j}"
                try:
                    if table.name in ("alert_subscriptions", "alert_outbox"):  # few rows; ids to follow
                        moved[table.name] += _move_alert_rows(conn, table.name, columns, source, target, rows,
                                                              new_ids)
                    else:
                        moved[table.name] += conn.execute(f"INSERT INTO {target}.{table.name} ({kept}) "
                                                          f"SELECT {kept} {rows} ORDER BY t.rowid").rowcount
                except sqlite3.IntegrityError as exc:
                    raise ReshardError(f"{table.name}: rows of one guild are in two files ({exc}): one of them is "
                                       "a copy; nothing was changed") from exc
                conn.execute(f"DELETE {rows}")
    return moved


def _move_alert_rows(conn: sqlite3.Connection, table: str, columns: list[str], source: str, target: str,
                     rows: str, new_ids: dict[tuple[str, int], int]) -> int:
    """Subscriptions get new ids in the target file; outbox rows point at them (0, no subscription, for an
    outbox row whose subscription was removed: recovery skips it, as it did)."""
    kept = [c for c in columns if c != "id"]
    found = conn.execute(f"SELECT {', '.join(columns)} {rows} ORDER BY t.id").fetchall()
    for row in found:
        values = dict(zip(columns, row, strict=True))
        if table == "alert_outbox":
            values["subscription_id"] = new_ids.get((source, values["subscription_id"]), 0)
        cursor = conn.execute(f"INSERT INTO {target}.{table} ({', '.join(kept)}) VALUES "
                              f"({', '.join('?' * len(kept))})", [values[c] for c in kept])
        if table == "alert_subscriptions":
            new_ids[(source, values["id"])] = cursor.lastrowid or 0
    return len(found)

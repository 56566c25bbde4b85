"""The community log at scale, on a 50,000-message log built straight into SQLite: the export streams in chunks
with flat memory, retention and forget-me delete in short transactions that let other work run between them, and
an erasure a crash cut short is finished at the next start. bench/community_scale.py measures the same on a
million messages."""

from __future__ import annotations

import shutil
import sqlite3
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.community import CommunityLog, _log
from services.privacy import forget_member
from services.storage import Database
from services.timefmt import iso_utc
from tests.support.community_log import fill_log

GUILD, CHANNEL = 1, 10
MESSAGES = 50_000
NOW = datetime(2026, 8, 10, tzinfo=UTC)
MEMBER = 1007
BATCH = 300  # the tests' cap on rows per transaction


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scale") / "log.db"
    fill_log(path, GUILD, CHANNEL, MESSAGES, end=NOW, days=400, authors=50)  # 1,000 messages each
    return path


@pytest.fixture
def log_copy(big_log: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(big_log, tmp_path / "log.db"))


@pytest.fixture
async def stores(log_copy: Path) -> AsyncIterator[tuple[Database, CommunityLog]]:
    async with Database(log_copy) as db:
        clog = CommunityLog(db, interval=60, delete_batch=BATCH)
        await clog.open()
        yield db, clog
        await clog.close()


def sql(path: Path, query: str, params: tuple = ()) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, params).fetchone()[0]
    finally:
        conn.close()


class Turns:
    """Every call on the database thread: how long it held the thread."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holds: list[float] = []
        call = db._call

        def timed(fn: Callable[[Any], Any]) -> Any:
            start = time.perf_counter()
            try:
                return call(fn)
            finally:
                self.holds.append(time.perf_counter() - start)

        monkeypatch.setattr(db, "_call", timed)


def deleted_per_transaction(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    delete = _log._delete_messages

    def counting(d: Any, ids: list[int]) -> Any:
        sizes.append(len(ids))
        return delete(d, ids)

    monkeypatch.setattr(_log, "_delete_messages", counting)
    return sizes


async def test_retention_purge_runs_in_short_transactions(stores, monkeypatch: pytest.MonkeyPatch) -> None:
    db, clog = stores
    cutoff = iso_utc(NOW - timedelta(days=365))
    path = db.path
    old = "SELECT message_id FROM community_messages WHERE created_at < ?"
    expected = (sql(path, f"SELECT count(*) FROM ({old})", (cutoff,)),
                sql(path, f"SELECT count(*) FROM community_revisions WHERE message_id IN ({old}) "
                          "OR replaced_at < ?", (cutoff, cutoff)),
                sql(path, f"SELECT count(*) FROM community_reactions WHERE message_id IN ({old}) "
                          "OR coalesce(removed_at, added_at) < ?", (cutoff, cutoff)))
    assert expected[0] > 10 * BATCH  # enough for many transactions
    turns, sizes = Turns(db, monkeypatch), deleted_per_transaction(monkeypatch)
    counts = await clog.purge_older_than(365, now=NOW)
    assert (counts.messages, counts.revisions, counts.reactions) == expected
    assert sql(path, f"SELECT count(*) FROM ({old})", (cutoff,)) == 0
    assert sql(path, "SELECT count(*) FROM community_messages") == MESSAGES - expected[0]
    assert len(sizes) >= expected[0] / BATCH and max(sizes) <= BATCH  # one short transaction each
    # Timing on a shared machine is noisy: the bench holds the 50 ms target on a million rows; here, a bound the
    # one-transaction purge (the whole purge at once) is far over.
    assert max(turns.holds) < 0.15, sorted(turns.holds)[-5:]


async def test_forget_me_erases_in_short_transactions(stores, monkeypatch: pytest.MonkeyPatch) -> None:
    db, clog = stores
    path = db.path
    mine = "SELECT message_id FROM community_messages WHERE guild_id = ? AND author_id = ?"
    expected = (sql(path, f"SELECT count(*) FROM ({mine})", (GUILD, MEMBER)),
                sql(path, f"SELECT count(*) FROM community_revisions WHERE message_id IN ({mine})", (GUILD, MEMBER)),
                sql(path, f"SELECT count(*) FROM community_reactions WHERE user_id = ? OR message_id IN ({mine})",
                    (MEMBER, GUILD, MEMBER)))
    assert expected[0] > 2 * BATCH and expected[1] and expected[2]
    turns, sizes = Turns(db, monkeypatch), deleted_per_transaction(monkeypatch)
    counts = await forget_member(clog, GUILD, MEMBER)
    assert (counts.messages, counts.revisions, counts.reactions) == expected
    assert sql(path, f"SELECT count(*) FROM ({mine})", (GUILD, MEMBER)) == 0
    assert sql(path, "SELECT count(*) FROM community_reactions WHERE user_id = ?", (MEMBER,)) == 0
    assert sql(path, "SELECT count(*) FROM community_erasures") == 0
    assert len(sizes) >= 2 and max(sizes) <= BATCH
    assert max(turns.holds) < 0.15, sorted(turns.holds)[-5:]


async def test_an_interrupted_erasure_is_finished_at_the_next_start(stores, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bot stops (here: the third transaction fails) in the middle of a member's erasure: what was committed
    stays committed, the member is already left out of exports, and the next start finishes the erasure."""
    db, clog = stores
    path = db.path
    batches = 0
    erase = _log._erase_batch

    def crashing(*args: Any) -> Any:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return erase(*args)

    monkeypatch.setattr(_log, "_erase_batch", crashing)
    mine = "SELECT count(*) FROM community_messages WHERE guild_id = ? AND author_id = ?"
    before = sql(path, mine, (GUILD, MEMBER))
    with pytest.raises(sqlite3.OperationalError):
        await forget_member(clog, GUILD, MEMBER)
    left = sql(path, mine, (GUILD, MEMBER))
    assert 0 < left < before  # part done
    assert sql(path, "SELECT count(*) FROM community_erasures WHERE user_id = ?", (MEMBER,)) == 1
    async with clog.export_csv(GUILD, 3650, now=NOW) as export:
        authors = {line.split(b",")[2] for line in export.path.read_bytes().splitlines()[1:]}
    assert f"\"{MEMBER}\"".encode() not in authors and len(authors) == 49
    monkeypatch.undo()

    restarted = CommunityLog(db, interval=60, delete_batch=BATCH)
    await restarted.open()  # as at the next start
    assert sql(path, mine, (GUILD, MEMBER)) == 0
    assert sql(path, "SELECT count(*) FROM community_reactions WHERE user_id = ?", (MEMBER,)) == 0
    assert sql(path, "SELECT count(*) FROM community_erasures") == 0
    await restarted.close()


async def test_a_large_export_streams_with_flat_memory(stores, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole 50,000-message export (about 6 MB of CSV) while Python holds about one chunk at a time."""
    _, clog = stores
    monkeypatch.setattr(_log, "EXPORT_CHUNK", 500)
    tracemalloc.start()
    try:
        async with clog.export_csv(GUILD, 3650, now=NOW) as export:
            _, peak = tracemalloc.get_traced_memory()
            size = export.path.stat().st_size
    finally:
        tracemalloc.stop()
    assert export.complete and export.messages == MESSAGES and size == export.size > 5 * 2**20
    assert peak < size / 4, (peak, size)  # built in memory, the text and its bytes took twice the file

"""Build a small database for each released schema from the project's own history: tests/fixtures/schema/.

    python scripts/make_schema_fixtures.py            # every commit in RELEASES
    python scripts/make_schema_fixtures.py 1d8608f    # one commit

For each commit, a detached git worktree of it goes to a temporary folder and a snippet runs there with that
commit's code: its `open_resources` makes the tables exactly as that version did (the cache tables through its
`Database.cache_row`, the member tables through its refresh functions), then every table gets a few rows.
The file is saved gzipped (a few KB) as <commit>.db.gz. `tests/test_schema.py` opens each, migrates it and checks
that every row is still there, and that the last one's tables are exactly schema version 1.

Where the schema changed (`git log --first-parent -p main -- services/` for CREATE TABLE, table writes and
cache rows): the stores' DDL has not changed since the first release; the member tables came with live15.
"""

from __future__ import annotations

import argparse
import gzip
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "schema"

# (commit, why it is a released layout), oldest first: the landed main commits whose databases operators have.
RELEASES = (
    ("f7d2239", "the first release (2026-11-25): alerts, sentiment, community log, market and document caches"),
    ("1d8608f", "Merge live15 (2026-12-02): the holdings archive and the member refresh tables"),
    ("f5a8642", "Merge harden (2026-12-02): the layout of schema version 1 (0600 file, secure_delete)"),
    ("48db5fb", "Merge hfan (2026-12-02), after Merge hui: alert mutes, the layout of schema version 2"),
    ("94731a4", "the last landed main of 2026-12-02: schema version 5 (forget-me tombstones and erasures, member "
                "EPS and shares)"),
)

SNIPPET = r'''
import asyncio, sys
from datetime import UTC, date, datetime
# An editable install of the project (as in a development venv) would serve today's modules to the old tree.
sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
try:
    from app import open_resources
except ImportError:  # before app.py, the composition root lived in bot.py
    from bot import open_resources
from services.config import Settings

ROWS = 3


def value(table, column, kind, i):
    """A distinct, plausible value for row i (unique and primary keys stay unique)."""
    kind = (kind or "").upper()
    if "INT" in kind:
        return (1 << 40) * (i + 1) + len(column) if column.endswith("_id") else i + 1
    if kind in ("REAL", "FLOAT"):
        return i + 0.25
    return f"{table}.{column} {i}"


def fill(conn):
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                         "'sqlite_%' ORDER BY name")]
    for table in tables:
        if conn.execute(f"SELECT count(*) FROM [{table}]").fetchone()[0]:
            continue  # made by the version's own code below
        cols = list(conn.execute(f"PRAGMA table_info([{table}])"))
        for i in range(ROWS):
            conn.execute(f"INSERT INTO [{table}] ({', '.join(c[1] for c in cols)}) VALUES "
                         f"({', '.join('?' * len(cols))})", [value(table, c[1], c[2], i) for c in cols])
    conn.commit()


async def main(path):
    settings = Settings.from_env({"DATABASE_PATH": path, "MARKET_DATA_PROVIDER": "bundled"})
    async with open_resources(settings, render_processes=False) as r:
        db = r.database
        for i in range(ROWS):
            await db.cache_row("bars_cache", "symbol", {"symbol": f"SYM{i}", "source": "yahoo", "fetched_at": 1.5e9 + i,
                                                        "as_of": "2026-01-0%d" % (i + 1), "csv": "date,close\n"})
            await db.cache_row("documents_cache", "key", {"key": f"https://example.test/{i}", "url": "https://example.test",
                                                          "fetched_at": 1.5e9 + i, "text": f"document {i}"})
        try:
            from services.members import _refresh
            from services.documents import Document
        except ImportError:
            _refresh = None
        if _refresh is not None:
            def members(d):
                for i in range(ROWS):
                    doc = Document(f"holdings {i}", f"holdings file {i}", "live", "https://example.test/h",
                                   datetime(2026, 1, i + 1, tzinfo=UTC))
                    _refresh._archive(d, date(2026, 1, i + 1), doc)
                quote = {"symbol": "AAA", "market_cap": 1e9, "trailing_pe": 12.5, "forward_pe": 11.0,
                         "price_to_book": 1.5, "price_to_sales": 0.9}
                for day in (date(2026, 1, 2), date(2026, 1, 5)):
                    _refresh._store_batch(d, day, 0, [quote, {**quote, "symbol": "BBB"}])
                _refresh._complete(d, date(2026, 1, 2))
                _refresh._store_batch(d, date(2026, 1, 5), 1, [{**quote, "symbol": "CCC"}])  # a refresh under way
                _refresh._set_state(d, date(2026, 1, 5), "batch 2 failed: timeout")
            await db.run(members)
        await db.run(lambda d: fill(d.conn))


asyncio.run(main(sys.argv[1]))
'''


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def build(commit: str) -> Path:
    full = git("rev-parse", "--short=7", commit).strip()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    out = FIXTURES / f"{full}.db.gz"
    with tempfile.TemporaryDirectory() as tmp:
        tree, db = Path(tmp) / "tree", Path(tmp) / "fixture.db"
        git("worktree", "add", "--detach", str(tree), full)
        try:
            subprocess.run([sys.executable, "-c", SNIPPET, str(db)], cwd=tree, check=True,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), "HOME": tmp})
        finally:
            git("worktree", "remove", "--force", str(tree))
        conn = sqlite3.connect(db)  # small and self-contained: no write-ahead log, 512-byte pages
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA page_size=512")
        conn.execute("VACUUM")
        conn.close()
        out.write_bytes(gzip.compress(db.read_bytes(), mtime=0))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("commits", nargs="*", help="commits to build (default: every release in RELEASES)")
    args = parser.parse_args()
    for commit in args.commits or [c for c, _ in RELEASES]:
        path = build(commit)
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Community log ingest on PostgreSQL against a bare executemany of the same rows (issue 18: at least 0.5x), with
a bare COPY reported beside it.

The bot's writer (queue, prepared rows, multi-row INSERTs in batches of 500, each an upsert that skips a message
already logged) fills `community_messages` on a throwaway PostgreSQL server; the baselines insert the very rows
it stored into tables made `LIKE` it (same columns and indexes), by one `executemany` and by one `COPY` (no
conflict check: a ceiling, not a like-for-like), on the same server in the same run.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import psycopg

from bench.run import Result, timed_log_burst
from services.storage import Database
from tests.support.postgres import postgres_server, schema_url

MESSAGES = 20_000


async def _writer_rate(url: str) -> tuple[float, list[tuple]]:
    """Messages a second through the bot's writer, and the rows it stored."""
    async with Database(url) as db:
        log, rate = await timed_log_burst(db, MESSAGES)
        rows = await db.run(lambda d: d.execute("SELECT * FROM community_messages").fetchall())
        await log.close()
    assert len(rows) == MESSAGES, f"lost messages: {len(rows)} of {MESSAGES}"
    return rate, rows


def _bare_rates(url: str, rows: list[tuple]) -> tuple[float, float]:
    """Rows a second by one COPY and by one executemany into fresh copies of the table."""
    rates = []
    with psycopg.connect(url) as conn:
        for table in ("bare_copy", "bare_many"):
            conn.execute(f"CREATE TABLE {table} (LIKE community_messages INCLUDING ALL)")
            conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY bare_copy FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        rates.append(len(rows) / (time.perf_counter() - start))
        marks = ", ".join(["%s"] * len(rows[0]))
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO bare_many VALUES ({marks})", rows)
        conn.commit()
        rates.append(len(rows) / (time.perf_counter() - start))
    return rates[0], rates[1]


async def bench_pg_log_ingest(rounds: int) -> Result:
    writer, copy, many = [], [], []
    with postgres_server() as server:
        for _ in range(max(1, rounds // 3)):
            with schema_url(server) as url:
                rate, rows = await _writer_rate(url)
                bare_copy, bare_many = await asyncio.to_thread(_bare_rates, url, rows)
            writer.append(rate)
            copy.append(bare_copy)
            many.append(bare_many)
    ratio = statistics.median(writer) / statistics.median(many)
    return Result("pg log ingest", f"{statistics.median(writer):,.0f} msg/s",
                  f"bare executemany {statistics.median(many):,.0f} rows/s", ratio, ">= 0.5x, none lost",
                  ratio >= 0.5, {"messages": MESSAGES, "bare_copy_rows_per_s": round(statistics.median(copy)),
                                 "vs_copy": round(statistics.median(writer) / statistics.median(copy), 2)})

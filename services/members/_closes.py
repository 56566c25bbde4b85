"""Member daily closes from Yahoo's spark endpoint, after the bundled ones: what keeps `/iwm breadth` and the
member sector returns current with a live provider.

`CloseRefresh` asks `GET /v7/finance/spark?symbols=A,B,...&range=1mo&interval=1d` (with the same Yahoo session,
pause between batches and resumable batches as the fundamentals, see _refresh.py). Yahoo answers one chart per
symbol:

    {"spark": {"result": [{"symbol": "A", "response": [{"meta": {...}, "timestamp": [...],
                                                         "indicators": {"quote": [{"close": [..., null, ...]}]}}]}],
               "error": null}}

a null close for a session without one; a symbol Yahoo does not know is left out of `result`, a batch of only
unknown symbols answers 404 `{"spark": {"result": null, "error": {"code": "Not Found", "description": "No data
found for spark symbols"}}}`, and more than 20 symbols a request answers 400 ("Number of symbols needs to be less
than or equal to 20"), hence BATCH_SIZE. A symbol without closes is missing (NaN in the matrix, and counted in
the coverage the answers show).

Splicing: spark's closes are split-adjusted as of the request, not dividend-adjusted (it has no adjclose), while
the bundled closes are adjusted ones. The range asked for reaches back to the last close already held (the
bundle's last session the first time), and each symbol's fetched closes are scaled by held / fetched on the
latest session both have, so a dividend adjustment or a split between fetches does not show as a jump; a symbol
with no such session keeps its closes as fetched. Only sessions after the bundle's last are stored
(`member_closes`), each refresh's in one transaction with its state, so a failed or cut-short refresh leaves the
last complete closes answering (marked stale by services.members._live).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import numpy as np
import pandas as pd

from services.documents import Documents, yahoo_envelope
from services.http import DOCUMENTS, NotFound, ProviderError, Sources, guarded
from services.lease import Leases
from services.members._data import MemberData, load_member_data
from services.members._refresh import (
    CLOSE_BATCHES,
    CLOSES,
    REFRESH_LEASE,
    YAHOO_COOKIE_URL,
    MemberRefresh,
    _number,
    _set_state,
    archive_holdings,
    live_key,
    refresh_lease,
)
from services.sql import Connection
from services.storage import Database

log = logging.getLogger(__name__)

SPARK_PATH = "/v7/finance/spark"
BATCH_SIZE = 20  # Yahoo's limit per spark request
STATE_ID = 2  # the closes refresh's row in member_refresh (1 is the fundamentals')
NEW_YORK = ZoneInfo("America/New_York")
# Yahoo's ranges and the calendar days each surely reaches back (a month is at least 28 days)
RANGES = (("1mo", 28), ("3mo", 89), ("6mo", 181), ("1y", 365), ("2y", 730), ("5y", 1826))
LIVE_CLOSES = "Yahoo spark daily closes"
YAHOO_SPARK = "Yahoo spark"  # its breaker, in /iwm status


def spark_range(day: date, anchor: date) -> str:
    """The shortest of Yahoo's ranges ending on `day` that reaches back to `anchor` (the last close held)."""
    back = (day - anchor).days
    return next((name for name, days in RANGES if back <= days), "max")


def parse_spark(text: str) -> dict[str, list[tuple[str, float | None]]]:
    """A spark body -> per symbol that has closes, its (session ISO date, close or None) in order; a symbol whose
    chart has no bars is left out. ValueError when the body is not a spark answer."""
    spark = yahoo_envelope(text, "spark", "spark")
    try:
        out: dict[str, list[tuple[str, float | None]]] = {}
        for item in spark["result"]:
            chart = (item.get("response") or [None])[0]
            stamps = (chart or {}).get("timestamp") or []
            if not stamps:
                continue
            closes = chart["indicators"]["quote"][0].get("close") or []
            days: dict[str, float | None] = {}
            for i, stamp in enumerate(stamps):  # a close array shorter than the stamps: the rest is None
                day = datetime.fromtimestamp(int(stamp), NEW_YORK).date().isoformat()
                days[day] = _number(closes[i]) if i < len(closes) else None  # a repeated last bar: the later one
            out[str(item["symbol"])] = sorted(days.items())
        return out
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"malformed spark response: {type(exc).__name__}") from exc


class CloseRefresh(MemberRefresh):
    """One refresh a day of the members' closes (see the module docstring); resumable like the fundamentals."""

    name, batch_table, state_id = "member closes", CLOSE_BATCHES, STATE_ID

    def __init__(self, session: aiohttp.ClientSession, database: Database, symbols: Sequence[str], *,
                 bundle: MemberData | None = None, batch_size: int = BATCH_SIZE, **kwargs: Any) -> None:
        super().__init__(session, database, symbols, batch_size=batch_size, **kwargs)
        self.health = (kwargs.get("sources") or Sources(self.clock)).register(YAHOO_SPARK, DOCUMENTS)
        self.spark_url = f"{self.url.removesuffix('/v7/finance/quote')}{SPARK_PATH}"
        self.bundle = bundle
        self.range = "1mo"

    async def run(self, day: date) -> bool:
        bundle = await self._bundle()
        held = await self.database.run(_last_close)
        self.range = spark_range(day, held or bundle.as_of)
        return await super().run(day)

    async def _bundle(self) -> MemberData:
        if self.bundle is None:
            self.bundle = await asyncio.to_thread(load_member_data)
        return self.bundle

    async def _fetch(self, batch: Sequence[str]) -> list[dict[str, Any]]:
        """Per symbol asked, its closes ([] when Yahoo has none)."""
        async def call() -> dict[str, list[tuple[str, float | None]]]:
            params = {"symbols": ",".join(batch), "range": self.range, "interval": "1d"}
            try:
                text = await self.ask(self.spark_url, params)
            except NotFound:
                return {}  # "No data found for spark symbols": none of the batch is known
            try:
                return await asyncio.to_thread(parse_spark, text)
            except ValueError as exc:
                raise ProviderError(f"unusable body: {exc}", retryable=False) from exc

        found = await guarded(self.health, call, self.retry, self.clock)
        return [{"symbol": s, "closes": found.get(s, [])} for s in batch]

    async def complete(self, day: date) -> bool:
        bundle = await self._bundle()
        try:
            stored = await self.database.run(partial(_complete_closes, day=day, bundle=bundle))
        except ValueError as exc:
            log.warning("member closes %s: %s", day, exc)
            await self.fail(day, str(exc))
            return False
        log.info("member closes %s: %d closes stored from %d symbols", day, stored, len(self.symbols))
        return True


def _last_close(db: Connection) -> date | None:
    row = next(iter(db.query(f"select max(day) as day from {CLOSES}")), None)
    return None if row is None or row["day"] is None else date.fromisoformat(row["day"])


def _complete_closes(db: Connection, day: date, bundle: MemberData) -> int:
    """The day's batches spliced onto the closes held and stored with the state, in one transaction; the number
    of closes stored. ValueError when no symbol had a close (nothing to store: the refresh failed)."""
    fetched: dict[str, list[tuple[str, float | None]]] = {}
    for r in db.query(f"select rows from {CLOSE_BATCHES} where day = ? order by batch", [day.isoformat()]):
        for item in json.loads(r["rows"]):
            fetched[item["symbol"]] = [(str(d), c) for d, c in item["closes"]]
    if not any(c is not None for series in fetched.values() for _, c in series):
        raise ValueError("no closes in any batch")
    first = min(d for series in fetched.values() for d, _ in series)
    held: dict[str, dict[str, float]] = {}
    for r in db.query(f"select symbol, day, close from {CLOSES} where day >= ?", [first]):
        held.setdefault(r["symbol"], {})[r["day"]] = float(r["close"])
    end = bundle.as_of.isoformat()
    tail = [str(d) for d in bundle.dates[-(RANGES[-1][1]):]]  # the bundle's sessions a range can reach
    tail = [d for d in tail if d >= first]
    position = {s: i for i, s in enumerate(bundle.symbols)}
    rows: list[tuple[str, str, float]] = []
    for symbol, series in fetched.items():
        anchor = dict(held.get(symbol, {}))
        if symbol in position and tail:
            column = bundle.closes[len(bundle.dates) - len(tail):, position[symbol]]
            anchor.update((d, float(c)) for d, c in zip(tail, column, strict=True) if math.isfinite(c))
        ratio = next((anchor[d] / c for d, c in reversed(series) if c and d in anchor), 1.0)
        rows.extend((symbol, d, c * ratio) for d, c in series if c is not None and d > end)
    with db.atomic():
        db.executemany(f"insert into {CLOSES} (symbol, day, close) values (?, ?, ?) on conflict (symbol, day) "
                       "do update set close = excluded.close", rows)
        db.execute(f"delete from {CLOSE_BATCHES} where day < ?", [day.isoformat()])
        _set_state(db, day, "", STATE_ID)
    return len(rows)


# --- reading ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LiveCloses:
    dates: np.ndarray  # datetime64[D], the sessions with a live close, in order
    symbols: tuple[str, ...]
    closes: np.ndarray  # float32 dates x symbols, NaN where a symbol has none that session


async def live_closes(database: Database) -> LiveCloses | None:
    """Every stored live close as a matrix; None when there is none."""

    def read(db: Connection) -> LiveCloses | None:
        rows = list(db.query(f"select symbol, day, close from {CLOSES}"))
        if not rows:
            return None
        frame = pd.DataFrame(rows).pivot(index="day", columns="symbol", values="close").sort_index()
        return LiveCloses(np.array(frame.index, dtype="datetime64[D]"), tuple(str(s) for s in frame.columns),
                          frame.to_numpy(dtype=np.float32))

    return await database.run(read)


def extend_closes(data: MemberData, live: LiveCloses | None) -> MemberData:
    """The extension hook: `data` with the live closes' sessions after its last appended to its closes matrix
    (its symbols, NaN where the live closes lack one), and its closes source saying so. `data` itself when there
    is nothing to add."""
    new = np.flatnonzero(live.dates > data.dates[-1]) if live is not None else np.array([], dtype=int)
    if live is None or not len(new):
        return data
    position = {s: i for i, s in enumerate(live.symbols)}
    mine = [j for j, s in enumerate(data.symbols) if s in position]
    rows = np.full((len(new), len(data.symbols)), np.nan, dtype=np.float32)
    rows[:, mine] = live.closes[new][:, [position[data.symbols[j]] for j in mine]]
    dates = live.dates[new]
    covered = int(np.isfinite(rows[-1]).sum())
    source = (f"{data.closes_source} to {data.as_of}; {LIVE_CLOSES} {dates[0]} to {dates[-1]} "
              f"({covered:,} of {len(data.symbols):,} members have a close on {dates[-1]})")
    return replace(data, closes=np.vstack([data.closes, rows]), dates=np.concatenate([data.dates, dates]),
                   closes_source=source)


# --- the daily job ------------------------------------------------------------------------------------------

async def daily_refresh(documents: Documents, database: Database, symbols: Sequence[str], day: date, *,
                        holdings_url: str, yahoo_base_url: str, yahoo_cookie_url: str = YAHOO_COOKIE_URL,
                        close_symbols: Sequence[str] | None = None, pause: float = 2.0) -> bool:
    """The daily job: archive today's holdings file, refresh (or resume) the members' fundamentals snapshot of
    `day`, then their closes (`close_symbols`, default the bundled closes' members), each whatever the other
    did. True when both are complete. Needs live documents (their session is the one used).

    On PostgreSQL every shard process schedules it and one runs it: the holder of the day's lease. The others wait
    until it has run (a failed run is not tried again that day, as with one process) and return whether the day's
    fundamentals and closes are complete; a holder that dies stops renewing, its lease lapses within REFRESH_LEASE and a
    waiter takes over, resuming after the last batch stored."""
    assert documents.session is not None, "the member refresh needs a live provider"
    leases = Leases(database)
    lease = await refresh_lease(leases, database, day)
    if lease is None:
        log.info("member refresh %s: run by another process", day)
        key = await live_key(database)
        return key.day == day.isoformat() and key.closes_refreshed == day.isoformat() and not key.closes_error
    try:
        async with leases.kept(lease, REFRESH_LEASE):
            await archive_holdings(documents, database, holdings_url)
            common: dict[str, Any] = {"base_url": yahoo_base_url, "cookie_url": yahoo_cookie_url, "pause": pause,
                                      "sources": documents.sources}
            fundamentals = await MemberRefresh(documents.session, database, symbols, **common).run(day)
            bundle = await asyncio.to_thread(load_member_data)
            closes = await CloseRefresh(documents.session, database, close_symbols or bundle.symbols, bundle=bundle,
                                        **common).run(day)
            return fundamentals and closes
    finally:
        await leases.release(lease)

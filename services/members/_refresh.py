"""The live member data: IWM holdings archived day by day, member fundamentals from Yahoo in batches.

iShares serves only today's holdings file, so each new dated file is kept in `holdings_archive` (one row per
"Fund Holdings as of" date): the only history of the membership there will be.

`MemberRefresh` asks Yahoo's quote endpoint for many symbols per request, pausing between batches. The v7 quote
answers 401 "Invalid Crumb" without a session, so a run first gets one as a browser does: GET
https://fc.yahoo.com (sets the A3 cookie; it may answer 404), then GET /v1/test/getcrumb with that cookie (the
crumb, as plain text), then every quote request carries the cookie and `crumb=`. The crumb is kept for the run
and renewed once when a quote request answers 401. Each batch's
rows are stored as it completes (`member_refresh_batches`), so a run that fails midway resumes the same day after
the last completed batch. Only when every batch of a day is in does the day become the complete snapshot
(`member_snapshot`); until then, and after a failure, the previous complete snapshot answers, marked stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, NamedTuple

import aiohttp
import pandas as pd

from services.documents import Document, Documents, yahoo_envelope
from services.http import DOCUMENTS, ProviderError, Retry, Sources, get_cookies, get_text, guarded
from services.lease import Lease, Leases
from services.sectors import BUNDLED_HOLDINGS, parse_holdings
from services.sql import Connection
from services.storage import Database

log = logging.getLogger(__name__)

DAY_SECONDS = 86_400.0
ARCHIVE, BATCHES, SNAPSHOT, STATE = "holdings_archive", "member_refresh_batches", "member_snapshot", "member_refresh"
CLOSES, CLOSE_BATCHES = "member_closes", "member_close_batches"  # services.members._closes
QUOTE_PATH = "/v7/finance/quote"
CRUMB_PATH = "/v1/test/getcrumb"
YAHOO_COOKIE_URL = "https://fc.yahoo.com"
YAHOO_QUOTE = "Yahoo quote"
# Yahoo's quote fields -> the stored columns: the member FIELDS they fill, plus trailing EPS and shares, from which
# services.members._live derives net income (the quote has no profit margin and no revenue)
QUOTE_FIELDS = {"marketCap": "market_cap", "trailingPE": "trailing_pe", "forwardPE": "forward_pe",
                "priceToBook": "price_to_book", "priceToSalesTrailing12Months": "price_to_sales",
                "epsTrailingTwelveMonths": "eps_ttm", "sharesOutstanding": "shares_outstanding"}


# --- holdings archive -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchivedHoldings:
    as_of: date  # the file's "Fund Holdings as of"
    fetched_at: datetime  # UTC, the first download of this file
    text: str


async def archive_holdings(documents: Documents, database: Database, url: str) -> date | None:
    """Fetch today's iShares IWM holdings (at most one request a day: the document cache lives a day) and archive
    the file under its as-of date if it is new. The as-of date of the live file; None when only a stale or
    bundled copy came back (nothing is archived then)."""
    document = await documents.get(url, bundled=BUNDLED_HOLDINGS, validate=parse_holdings, ttl=DAY_SECONDS,
                                   source="iShares")
    if document.stale or document.fetched_at is None:
        log.warning("holdings archive: no live file today (%s)", document.note)
        return None
    as_of = (await asyncio.to_thread(parse_holdings, document.text)).as_of
    await database.run(lambda db: _archive(db, as_of, document))
    return as_of


def _archive(db: Connection, as_of: date, document: Document) -> None:
    assert document.fetched_at is not None
    row = {"as_of": as_of.isoformat(), "fetched_at": document.fetched_at.timestamp(), "text": document.text}
    db.execute(f"insert into {ARCHIVE} (as_of, fetched_at, text) values (:as_of, :fetched_at, :text) "
               "on conflict do nothing", row)  # the first download of a dated file is kept


async def holdings_archive(database: Database) -> list[ArchivedHoldings]:
    """Every archived holdings file, oldest first."""

    def read(db: Connection) -> list[ArchivedHoldings]:
        return [ArchivedHoldings(date.fromisoformat(r["as_of"]), datetime.fromtimestamp(r["fetched_at"], UTC),
                                 r["text"]) for r in db.query(f"select * from {ARCHIVE} order by as_of")]

    return await database.run(read)


async def latest_holdings(database: Database) -> ArchivedHoldings | None:
    """The newest archived holdings file; None when the archive is empty."""

    def read(db: Connection) -> ArchivedHoldings | None:
        r = next(iter(db.query(f"select * from {ARCHIVE} order by as_of desc limit 1")), None)
        return None if r is None else ArchivedHoldings(date.fromisoformat(r["as_of"]),
                                                       datetime.fromtimestamp(r["fetched_at"], UTC), r["text"])

    return await database.run(read)


class LiveKey(NamedTuple):
    """What the live answers use, cheap to read: it changes whenever they would change."""

    day: str | None  # the complete fundamentals snapshot's day
    error: str  # the last fundamentals refresh's error ("" when it completed)
    archived: str | None  # the newest archived holdings date
    closes_day: str | None  # the last live member close (services.members._closes)
    closes_refreshed: str | None  # the day of the last closes refresh, complete or not
    closes_error: str  # its error ("" when it completed)


async def live_key(database: Database) -> LiveKey:
    def read(db: Connection) -> LiveKey:
        def one(sql: str) -> Any:
            row = next(iter(db.query(sql)), None)
            return None if row is None else next(iter(row.values()))

        closes = next(iter(db.query(f"select day, error from {STATE} where id = 2")), None)
        return LiveKey(
            day=one(f"select day from {SNAPSHOT} limit 1"),  # the schema ladder made every table
            error=one(f"select error from {STATE} where id = 1") or "",
            archived=one(f"select max(as_of) from {ARCHIVE}"),
            closes_day=one(f"select max(day) from {CLOSES}"),
            closes_refreshed=None if closes is None else closes["day"],
            closes_error="" if closes is None else closes["error"] or "",
        )

    return await database.run(read)


# --- member fundamentals ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemberSnapshot:
    day: date | None  # the refresh day; None: no complete live snapshot yet (the bundled data answers)
    rows: pd.DataFrame  # index symbol, the QUOTE_FIELDS values (NaN where Yahoo gave none); empty when day is None
    stale: bool  # the last refresh failed or is unfinished: this is an older day's snapshot
    note: str


def parse_quotes(text: str) -> list[dict[str, Any]]:
    """A v7 quote body -> one row per symbol (symbol and the member field names). ValueError when it is not one."""
    response = yahoo_envelope(text, "quoteResponse", "quote")
    try:
        return [{"symbol": str(q["symbol"]),
                 **{field: _number(q.get(key)) for key, field in QUOTE_FIELDS.items()}} for q in response["result"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed quote response: {type(exc).__name__}") from exc


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class MemberRefresh:
    """One refresh a day of the members' fundamentals; see the module docstring."""

    def __init__(self, session: aiohttp.ClientSession, database: Database, symbols: Sequence[str], *,
                 base_url: str, cookie_url: str = YAHOO_COOKIE_URL, batch_size: int = 100, pause: float = 2.0,
                 timeout: float = 10.0, retry: Retry | None = None, clock: Callable[[], float] = time.time,
                 sources: Sources | None = None) -> None:
        self.session, self.database, self.symbols = session, database, tuple(symbols)
        self.url = f"{base_url.rstrip('/')}{QUOTE_PATH}"
        self.crumb_url, self.cookie_url = f"{base_url.rstrip('/')}{CRUMB_PATH}", cookie_url
        self._crumb: tuple[str, str] | None = None  # (crumb, Cookie header), kept for the run
        self.batch_size, self.pause, self.timeout, self.clock = batch_size, pause, timeout, clock
        self.retry = retry or Retry()
        self.health = (sources or Sources(clock)).register(YAHOO_QUOTE, DOCUMENTS)

    def batches(self) -> list[tuple[str, ...]]:
        n = self.batch_size
        return [self.symbols[i: i + n] for i in range(0, len(self.symbols), n)]

    # the hooks a refresh of another kind overrides (services.members._closes.CloseRefresh)
    name, batch_table, state_id = "member refresh", BATCHES, 1

    async def run(self, day: date) -> bool:
        """Refresh `day`: the batches not yet done today, then the complete snapshot. True when complete."""
        batches = self.batches()
        done = await self.database.run(lambda db: _done_batches(db, day, self.batch_table))
        todo = [i for i in range(len(batches)) if i not in done]
        log.info("%s %s: %d of %d batches done, %d to go", self.name, day, len(done), len(batches), len(todo))
        for n, i in enumerate(todo):
            if n:
                await asyncio.sleep(self.pause)
            try:
                rows = await self._fetch(batches[i])
            except ProviderError as exc:
                log.warning("%s %s: batch %d of %d failed (%s); the next run resumes there",
                            self.name, day, i + 1, len(batches), exc)
                await self.fail(day, f"batch {i + 1} failed: {exc}")
                return False
            await self.database.run(partial(_store_batch, day=day, batch=i, rows=rows, table=self.batch_table))
            log.info("%s %s: batch %d of %d, %d rows", self.name, day, i + 1, len(batches), len(rows))
        return await self.complete(day)

    async def fail(self, day: date, error: str) -> None:
        await self.database.run(partial(_set_state, day=day, error=error, id=self.state_id))

    async def complete(self, day: date) -> bool:
        """Every batch of `day` is in: make them the snapshot. True when that succeeded."""
        await self.database.run(lambda db: _complete(db, day))
        log.info("%s %s: complete snapshot of %d symbols", self.name, day, len(self.symbols))
        return True

    async def crumb(self, renew: bool = False) -> tuple[str, str]:
        """(crumb, Cookie header) of a Yahoo session: the cached one, or a new one (cookie page, then crumb)."""
        if self._crumb is None or renew:
            cookies = await get_cookies(self.session, self.cookie_url, self.timeout)
            if not cookies:
                raise ProviderError(f"no session cookie from {self.cookie_url}", retryable=False)
            cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
            crumb = (await get_text(self.session, self.crumb_url, {}, self.timeout, {"Cookie": cookie})).strip()
            if not crumb or len(crumb) > 64 or any(c.isspace() or c in "<>{}" for c in crumb):
                raise ProviderError(f"unusable crumb: {crumb[:40]!r}", retryable=False)
            self._crumb = crumb, cookie
            log.info("member refresh: new Yahoo crumb")
        return self._crumb

    async def ask(self, url: str, params: dict[str, str]) -> str:
        """One Yahoo request with the session's crumb; on a 401 (the crumb expired) a new crumb, once."""
        async def once(crumb: str, cookie: str) -> str:
            return await get_text(self.session, url, {**params, "crumb": crumb}, self.timeout, {"Cookie": cookie})

        try:
            return await once(*await self.crumb())
        except ProviderError as exc:
            if exc.status != 401:
                raise
            log.info("%s: Yahoo answered 401, renewing the crumb", self.name)
        return await once(*await self.crumb(renew=True))

    async def _quotes(self, batch: Sequence[str]) -> str:
        return await self.ask(self.url, {"symbols": ",".join(batch), "fields": ",".join(QUOTE_FIELDS)})

    async def _fetch(self, batch: Sequence[str]) -> list[dict[str, Any]]:
        async def call() -> list[dict[str, Any]]:
            text = await self._quotes(batch)
            try:
                return await asyncio.to_thread(parse_quotes, text)
            except ValueError as exc:
                raise ProviderError(f"unusable body: {exc}", retryable=False) from exc

        return await guarded(self.health, call, self.retry, self.clock)

    async def snapshot(self) -> MemberSnapshot:
        return await member_snapshot(self.database)


async def member_snapshot(database: Database) -> MemberSnapshot:
    """The last complete live snapshot, stale when a later refresh failed or is unfinished; day None if none."""

    def read(db: Connection) -> MemberSnapshot:
        state = next(iter(db.query(f"select * from {STATE} where id = 1")), None)
        rows = pd.DataFrame(list(db.query(f"select * from {SNAPSHOT}")))
        pending = f"refresh of {state['day']} unfinished: {state['error']}" if state and state["error"] else ""
        if rows.empty:
            return MemberSnapshot(None, pd.DataFrame(), bool(pending), pending or "no live snapshot yet")
        day = date.fromisoformat(str(rows["day"].iloc[0]))
        frame = rows.drop(columns=["day"]).set_index("symbol").astype(float)
        note = f"Yahoo quote snapshot of {day}" + (f" (stale: {pending})" if pending else "")
        return MemberSnapshot(day, frame, bool(pending), note)

    return await database.run(read)


def _done_batches(db: Connection, day: date, table: str = BATCHES) -> set[int]:
    return {r["batch"] for r in db.query(f"select batch from {table} where day = ?", [day.isoformat()])}


def _store_batch(db: Connection, day: date, batch: int, rows: object, table: str = BATCHES) -> None:
    db.execute(f"insert into {table} (day, batch, rows) values (?, ?, ?) on conflict (day, batch) do update "
               "set rows = excluded.rows", [day.isoformat(), batch, json.dumps(rows)])


def _set_state(db: Connection, day: date, error: str, id: int = 1) -> None:
    """The refresh's state row: id 1 the fundamentals, 2 the closes (services.members._closes)."""
    db.execute(f"insert into {STATE} (id, day, error) values (?, ?, ?) on conflict (id) do update "
               "set day = excluded.day, error = excluded.error", [id, day.isoformat(), error])


def _complete(db: Connection, day: date) -> None:
    """The day's batches become the snapshot, in one transaction; older days' batches go."""
    rows = [{"symbol": q["symbol"], "day": day.isoformat(), **{f: q.get(f) for f in QUOTE_FIELDS.values()}}
            for r in db.query(f"select rows from {BATCHES} where day = ? order by batch", [day.isoformat()])
            for q in json.loads(r["rows"])]
    columns = ("symbol", "day", *QUOTE_FIELDS.values())
    with db.atomic():
        db.execute(f"delete from {SNAPSHOT}")
        db.executemany(f"insert into {SNAPSHOT} ({', '.join(columns)}) values ({', '.join('?' * len(columns))}) "
                       f"on conflict (symbol) do update set {', '.join(f'{c} = excluded.{c}' for c in columns[1:])}",
                       [[r[c] for c in columns] for r in rows])
        db.execute(f"delete from {BATCHES} where day < ?", [day.isoformat()])
    _set_state(db, day, "")


REFRESH_LEASE = 60.0  # seconds the daily refresh's lease lasts unrenewed (its holder renews it while it runs)
REFRESH_POLL = 0.5  # seconds between a waiting process's looks at the holder's lease


async def refresh_lease(leases: Leases, database: Database, day: date) -> Lease | None:
    """The lease of `day`'s refresh, once no other process holds it; None when there is nothing to run: the day's
    fundamentals and closes are complete, or this process waited for another that ran the day (complete or not:
    as with one process, a failed day is tried at the next call, not at once by every waiter). A call that finds
    the day failed earlier and nobody at it runs it again (resuming). Without leases (SQLite): the lease at once."""
    name = f"member-refresh:{day.isoformat()}"
    if not leases.enabled:
        return await leases.take(name, REFRESH_LEASE)

    def state(db: Connection) -> tuple[bool, bool]:
        """(the fundamentals ran on `day`, fundamentals and closes both completed on `day`)."""
        rows = {r["id"]: r for r in db.query(f"select id, day, error from {STATE} where id in (1, 2)")}
        ran = {k: r["day"] == day.isoformat() for k, r in rows.items()}
        done = all(ran.get(k) and not rows[k]["error"] for k in (1, 2))
        return ran.get(1, False), done

    waited = False
    while True:
        ran, done = await database.run(state)
        if done or (waited and ran):
            return None
        if (lease := await leases.take(name, REFRESH_LEASE)) is not None:
            ran, done = await database.run(state)  # read again under the lease: the holder may have just let go
            if done or (waited and ran):
                await leases.release(lease)
                return None
            return lease
        waited = True
        await asyncio.sleep(REFRESH_POLL)

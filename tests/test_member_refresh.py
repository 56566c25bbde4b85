"""The live member data against the local provider server: the holdings archive, the batched Yahoo refresh."""

from __future__ import annotations

import gzip
import math
from datetime import date
from pathlib import Path

import pytest

from services.documents import Documents
from services.http import Retry
from services.members import MemberRefresh, archive_holdings, holdings_archive, member_snapshot
from tests.support.provider_server import Clock, ProviderServer, Reply
from tests.support.yahoo_quote import YahooSession, member_rows, quote_body

HOLDINGS = gzip.decompress((Path(__file__).parents[1] / "services" / "data" / "IWM_holdings.2026-05-05.csv.gz")
                           .read_bytes()).decode()
NEXT_DAY = HOLDINGS.replace('"May 05, 2026"', '"May 06, 2026"', 1)
HOLDINGS_PATH = "/holdings.csv"
QUOTE = "/v7/finance/quote"
CRUMB = "/v1/test/getcrumb"
SYMBOLS = ("A", "AAPL", "ABM", "AAOI", "ABAT", "MSFT", "NOSUCH")  # AAOI, ABAT: no P/E; NOSUCH: none
DAY1, DAY2 = date(2026, 8, 4), date(2026, 8, 5)
DUMP1, DUMP2 = "2026-08-04", "2026-08-05"


def csv(text: str) -> Reply:
    return Reply(body=text, content_type="text/csv")


async def test_holdings_are_fetched_once_a_day_and_each_dated_file_archived(server, session, database):
    clock = Clock()
    docs = Documents(session, database=database, clock=clock, backoff=0.01, max_wait=0.05)
    url = f"{server.url}{HOLDINGS_PATH}"
    server.script(HOLDINGS_PATH, csv(HOLDINGS), csv(NEXT_DAY))
    assert await archive_holdings(docs, database, url) == date(2026, 5, 5)
    clock.now += 6 * 3600  # later the same day: the cached file, no request
    assert await archive_holdings(docs, database, url) == date(2026, 5, 5)
    assert server.calls[HOLDINGS_PATH] == 1
    clock.now += 20 * 3600  # the next day: a new dated file
    assert await archive_holdings(docs, database, url) == date(2026, 5, 6)
    assert server.calls[HOLDINGS_PATH] == 2
    archive = await holdings_archive(database)
    assert [a.as_of for a in archive] == [date(2026, 5, 5), date(2026, 5, 6)]
    assert archive[0].text == HOLDINGS and archive[1].text == NEXT_DAY


@pytest.fixture(autouse=True)
def yahoo(server: ProviderServer) -> YahooSession:
    """Every quote request must carry Yahoo's session cookie and crumb, as the real endpoint demands."""
    return YahooSession(server)


def refresh(server: ProviderServer, session, database) -> MemberRefresh:
    return MemberRefresh(session, database, SYMBOLS, base_url=server.url, cookie_url=f"{server.url}/", batch_size=3,
                         pause=0.01, retry=Retry(1, 0.0, 0.0))


def batch_replies(dump: str) -> list[Reply]:
    return [Reply(body=quote_body(SYMBOLS[i: i + 3], dump)) for i in range(0, len(SYMBOLS), 3)]


def asked(server: ProviderServer) -> list[str]:
    return [r.query["symbols"] for r in server.requests if r.path == QUOTE]


def assert_snapshot_is(rows, dump: str) -> None:
    expected = member_rows(dump)
    assert sorted(rows.index) == sorted(s for s in SYMBOLS if s in expected.index)
    for symbol in rows.index:
        for field in ("market_cap", "trailing_pe", "forward_pe", "price_to_book", "price_to_sales"):
            want, got = float(expected.loc[symbol, field]), float(rows.loc[symbol, field])
            assert (math.isnan(want) and math.isnan(got)) or math.isclose(want, got, rel_tol=1e-12), (symbol, field)


async def test_a_full_refresh_stores_a_complete_snapshot(server, session, database):
    assert (await member_snapshot(database)).day is None  # nothing live yet: the bundle answers
    server.script(QUOTE, *batch_replies(DUMP1))
    assert await refresh(server, session, database).run(DAY1)
    assert asked(server) == ["A,AAPL,ABM", "AAOI,ABAT,MSFT", "NOSUCH"]
    snap = await member_snapshot(database)
    assert snap.day == DAY1 and not snap.stale
    assert_snapshot_is(snap.rows, DUMP1)


async def test_a_500_midway_then_the_next_run_resumes_without_repeating_a_batch(server, session, database):
    first, second, third = batch_replies(DUMP1)
    server.script(QUOTE, first, Reply(status=500, body="oops"))
    assert not await refresh(server, session, database).run(DAY1)
    snap = await member_snapshot(database)
    assert snap.day is None and snap.stale and "batch 2 failed: HTTP 500" in snap.note
    server.script(QUOTE, second, third)
    assert await refresh(server, session, database).run(DAY1)
    assert asked(server) == ["A,AAPL,ABM", "AAOI,ABAT,MSFT", "AAOI,ABAT,MSFT", "NOSUCH"]
    snap = await member_snapshot(database)
    assert snap.day == DAY1 and not snap.stale
    assert_snapshot_is(snap.rows, DUMP1)


async def test_a_failed_refresh_leaves_the_previous_snapshot_in_force_marked_stale(server, session, database):
    server.script(QUOTE, *batch_replies(DUMP1))
    assert await refresh(server, session, database).run(DAY1)
    first, *_ = batch_replies(DUMP2)
    server.script(QUOTE, first, Reply(status=500, body="oops"))
    assert not await refresh(server, session, database).run(DAY2)
    snap = await member_snapshot(database)
    assert snap.day == DAY1 and snap.stale
    assert f"{DAY2} unfinished" in snap.note and str(DAY1) in snap.note
    assert_snapshot_is(snap.rows, DUMP1)


async def test_every_quote_request_carries_the_session_cookie_and_crumb(server, session, database, yahoo):
    server.script(QUOTE, *batch_replies(DUMP1))
    assert await refresh(server, session, database).run(DAY1)
    quotes = [r for r in server.requests if r.path == QUOTE]
    assert all(r.query["crumb"] == yahoo.crumb and r.cookies["A3"] == "d=AQABBsession1" for r in quotes)
    assert server.calls["/"] == server.calls[CRUMB] == 1  # one session for the whole run
    assert set(quotes[0].query["fields"].split(",")) >= {"epsTrailingTwelveMonths", "sharesOutstanding"}


async def test_a_crumb_that_expires_midway_is_renewed_once_and_the_run_completes(server, session, database, yahoo):
    first, second, third = batch_replies(DUMP1)
    server.script(QUOTE, first, second, third)
    original = YahooSession._quote

    def expire_after_first(request):  # Yahoo rotates the crumb after the first batch
        if sum(r.path == QUOTE for r in server.requests) == 2 and yahoo.generation == 1:
            yahoo.expire()
        return original(yahoo, request)

    server.handle(QUOTE, expire_after_first)
    assert await refresh(server, session, database).run(DAY1)
    crumbs = [r.query["crumb"] for r in server.requests if r.path == QUOTE]
    assert crumbs == ["Crumb.1x/Y", "Crumb.1x/Y", "Crumb.2x/Y", "Crumb.2x/Y"]  # the 401, then the same batch again
    assert asked(server) == ["A,AAPL,ABM", "AAOI,ABAT,MSFT", "AAOI,ABAT,MSFT", "NOSUCH"]
    assert server.calls["/"] == server.calls[CRUMB] == 2
    snap = await member_snapshot(database)
    assert snap.day == DAY1 and not snap.stale
    assert_snapshot_is(snap.rows, DUMP1)


async def test_without_a_session_the_quote_answers_401_and_the_refresh_fails_cleanly(server, session, database):
    server.handle(CRUMB, lambda request: Reply(status=401, body="Unauthorized"))
    server.script(QUOTE, *batch_replies(DUMP1))
    assert not await refresh(server, session, database).run(DAY1)
    snap = await member_snapshot(database)
    assert snap.day is None and "HTTP 401" in snap.note
    assert server.calls[QUOTE] == 0

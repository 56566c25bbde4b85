"""The live member data against the local provider server: the holdings archive, the batched Yahoo refresh."""

from __future__ import annotations

import asyncio
import gzip
import math
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.documents import Documents
from services.http import Retry
from services.members import (
    CloseRefresh,
    MemberRefresh,
    archive_holdings,
    daily_refresh,
    holdings_archive,
    live_closes,
    member_snapshot,
)
from services.members._closes import spark_range
from services.members._refresh import live_key
from tests.support.member_closes import BUNDLE_END, DATES, full_iwm_members, live_sessions, served, truth
from tests.support.provider_server import SPARK_NOT_FOUND, Clock, ProviderServer, Reply, yahoo_spark_body
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


# --- member closes (Yahoo spark) ------------------------------------------------------------------------------

SPARK = "/v7/finance/spark"
MEMBERS = full_iwm_members(7)
OMITTED, HALTED = MEMBERS[5], MEMBERS[6]  # Yahoo leaves the first out of its answer; the second has no bars
CLOSE_SYMBOLS = (*MEMBERS, "NOSUCH")  # batches of 3: the last is NOSUCH alone, answered 404 "No data found"
LIVE_DAYS = live_sessions()
FIRST, SECOND = LIVE_DAYS[:12], LIVE_DAYS[12:]
GAP = FIRST[4]  # MEMBERS[1] has a null close that session
OVERLAP = [date.fromisoformat(str(d)) for d in DATES[-6:]]  # the bundle's sessions a 1mo range reaches


def close_refresh(server: ProviderServer, session, database) -> CloseRefresh:
    return CloseRefresh(session, database, CLOSE_SYMBOLS, base_url=server.url, cookie_url=f"{server.url}/",
                        batch_size=3, pause=0.01, retry=Retry(1, 0.0, 0.0))


def spark_batches(days: list[date], scales: dict[str, float]) -> list[tuple[Reply, dict[str, pd.Series | None]]]:
    """The four batches' replies for a fetch of `days` and the series each serves (by symbol)."""
    served_now: dict[str, pd.Series | None] = {
        s: served(s, days, scales.get(s, 1.0), missing=[GAP] if s == MEMBERS[1] else ()) for s in MEMBERS}
    served_now[HALTED] = None
    del served_now[OMITTED]
    replies = []
    for i in range(0, len(MEMBERS), 3):
        batch = {s: served_now[s] for s in MEMBERS[i: i + 3] if s in served_now}
        replies.append((Reply(body=yahoo_spark_body(batch)), batch))
    replies.append((Reply(status=404, body=SPARK_NOT_FOUND), {}))
    return replies


def spliced(batches: list[dict[str, pd.Series | None]], held: dict[tuple[str, date], float]) -> dict:
    """The closes a fetch should leave stored, by a plain loop: each symbol's served closes after the bundle,
    times (the close held, or the bundle's, / the served one) on the latest session with both."""
    out = dict(held)
    for batch in batches:
        for symbol, series in batch.items():
            if series is None:
                continue
            ratio = 1.0
            for day, value in reversed(list(series.items())):
                anchor = held.get((symbol, day.date())) if day.date() > BUNDLE_END else truth(symbol, day.date())
                if not math.isnan(value) and anchor is not None:
                    ratio = anchor / value
                    break
            for day, value in series.items():
                if day.date() > BUNDLE_END and not math.isnan(value):
                    out[(symbol, day.date())] = value * ratio
    return out


async def stored_closes(database) -> dict[tuple[str, date], float]:
    live = await live_closes(database)
    if live is None:
        return {}
    return {(s, date.fromisoformat(str(d))): float(live.closes[i, j]) for i, d in enumerate(live.dates)
            for j, s in enumerate(live.symbols) if np.isfinite(live.closes[i, j])}


def spark_asked(server: ProviderServer) -> list[str]:
    return [r.query["symbols"] for r in server.requests if r.path == SPARK]


async def test_closes_refresh_splices_the_spark_closes_onto_the_bundle(server, session, database, yahoo):
    replies = spark_batches(OVERLAP + FIRST, {MEMBERS[0]: 1.02, MEMBERS[2]: 0.5})  # raw vs adjusted; a split
    server.script(SPARK, *(r for r, _ in replies))
    assert await close_refresh(server, session, database).run(FIRST[-1])
    assert spark_asked(server) == [",".join(CLOSE_SYMBOLS[i: i + 3]) for i in range(0, len(CLOSE_SYMBOLS), 3)]
    spark = [r for r in server.requests if r.path == SPARK]
    assert all(r.query["range"] == "1mo" and r.query["interval"] == "1d" and r.query["crumb"] == yahoo.crumb
               for r in spark)
    got, want = await stored_closes(database), spliced([b for _, b in replies], {})
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k], rel=1e-6) for k in want)  # stored float64, read as float32
    assert {s for s, _ in got} == set(MEMBERS) - {OMITTED, HALTED}  # NOSUCH, omitted and halted: none
    assert (MEMBERS[1], GAP) not in got and min(d for _, d in got) > BUNDLE_END
    # spliced: the member quoted at 1.02x and the split one continue the bundle's closes
    for symbol in MEMBERS[0], MEMBERS[2]:
        assert got[(symbol, FIRST[0])] == pytest.approx(truth(symbol, FIRST[0]), rel=1e-6)


@pytest.mark.parametrize("failure", [
    Reply(status=429, body="Too Many Requests", headers={"Retry-After": "0"}),
    Reply(status=503, body="<html>Service Unavailable</html>", content_type="text/html"),
    Reply(body="<!doctype html><html>consent</html>", content_type="text/html"),
    Reply(body='{"spark": {"result": [{"symbol": "A", "response": [{"timestamp": [1, 2]'),
    Reply(body='{"spark": {"result": null, "error": {"code": "Bad Request", "description": "Number of symbols '
               'needs to be less than or equal to 20"}}}'),
], ids=["429", "503", "html", "truncated", "error"])
async def test_a_failed_closes_refresh_keeps_the_last_complete_closes_and_resumes(server, session, database,
                                                                                  failure):
    first = spark_batches(OVERLAP + FIRST, {})
    server.script(SPARK, *(r for r, _ in first))
    assert await close_refresh(server, session, database).run(FIRST[-1])
    complete = await stored_closes(database)
    second = spark_batches(FIRST[-5:] + SECOND, {MEMBERS[3]: 0.25})  # a 4:1 split between the fetches
    server.requests.clear()
    server.script(SPARK, second[0][0], failure)
    assert not await close_refresh(server, session, database).run(SECOND[-1])
    assert await stored_closes(database) == complete  # the last complete closes, untouched
    key = await live_key(database)
    assert key.closes_day == FIRST[-1].isoformat() and key.closes_refreshed == SECOND[-1].isoformat()
    assert key.closes_error.startswith("batch 2 failed")
    # no lost write: the batch that came in is kept, and the next run goes on from the failed one
    server.requests.clear()
    server.script(SPARK, *(r for r, _ in second[1:]))
    assert await close_refresh(server, session, database).run(SECOND[-1])
    assert spark_asked(server) == [",".join(CLOSE_SYMBOLS[i: i + 3]) for i in range(3, len(CLOSE_SYMBOLS), 3)]
    got, want = await stored_closes(database), spliced([b for _, b in second], complete)
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-6) for k in want)
    assert got[(MEMBERS[3], SECOND[0])] == pytest.approx(truth(MEMBERS[3], SECOND[0]), rel=1e-6)
    assert (await live_key(database)).closes_error == ""


async def test_a_crash_mid_batch_resumes_after_the_last_stored_batch(server, session, database):
    replies = spark_batches(OVERLAP + FIRST, {})
    server.script(SPARK, replies[0][0], Reply(hang=True))
    in_flight, crumb_check = asyncio.Event(), server.handlers[SPARK]

    def second_batch_asked(request):
        if server.calls[SPARK] == 2:
            in_flight.set()
        return crumb_check(request)

    server.handle(SPARK, second_batch_asked)
    run = asyncio.create_task(close_refresh(server, session, database).run(FIRST[-1]))
    await in_flight.wait()  # the second batch's request is in flight: the process dies
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await stored_closes(database) == {}  # nothing complete yet
    server.requests.clear()
    server.script(SPARK, *(r for r, _ in replies[1:]))
    assert await close_refresh(server, session, database).run(FIRST[-1])
    assert spark_asked(server) == [",".join(CLOSE_SYMBOLS[i: i + 3]) for i in range(3, len(CLOSE_SYMBOLS), 3)]
    got, want = await stored_closes(database), spliced([b for _, b in replies], {})
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-6) for k in want)


def test_the_range_reaches_back_to_the_last_close_held():
    assert spark_range(date(2026, 8, 28), date(2026, 7, 31)) == "1mo"
    assert spark_range(date(2026, 12, 3), date(2026, 7, 31)) == "6mo"
    assert spark_range(date(2026, 12, 3), date(2026, 12, 2)) == "1mo"


async def test_the_daily_job_archives_then_refreshes_fundamentals_and_closes(server, session, database):
    docs = Documents(session, database=database, clock=Clock(), backoff=0.01, max_wait=0.05)
    server.script(HOLDINGS_PATH, csv(HOLDINGS))
    server.script(QUOTE, Reply(status=500, body="down"))  # the fundamentals fail: the closes still come
    served_now = {s: x for _, batch in spark_batches(OVERLAP + FIRST, {}) for s, x in batch.items()}
    server.script(SPARK, Reply(body=yahoo_spark_body(served_now)))  # 20 symbols a request: one batch
    job = partial(daily_refresh, docs, database, SYMBOLS, FIRST[-1], holdings_url=f"{server.url}{HOLDINGS_PATH}",
                  yahoo_base_url=server.url, yahoo_cookie_url=f"{server.url}/", close_symbols=CLOSE_SYMBOLS,
                  pause=0.0)
    assert not await job()
    assert [a.as_of for a in await holdings_archive(database)] == [date(2026, 5, 5)]
    assert (await member_snapshot(database)).day is None
    assert {s for s, _ in await stored_closes(database)} == set(MEMBERS) - {OMITTED, HALTED}
    key = await live_key(database)
    assert key.closes_day == FIRST[-1].isoformat() and key.closes_error == "" and "HTTP 500" in key.error
    server.script(QUOTE, Reply(body=quote_body(SYMBOLS, DUMP1)))  # 100 symbols a request: one batch
    assert await job()  # the next try: the fundamentals complete; the day's closes are in, not asked again
    assert (await member_snapshot(database)).day == FIRST[-1]
    assert server.calls[SPARK] == 1 and server.calls[QUOTE] == Retry().attempts + 1  # the 500 retried, then one

"""The member answers on the live data: a Yahoo quote snapshot refreshed through the local provider server (real
v7 bodies, Yahoo's cookie/crumb flow), its stale fallback, and the archived holdings' weights. Every figure is
checked against a plain loop over the members."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from cogs.analysis._breadth import breadth_embed
from cogs.analysis._valuation import valuation_embed
from services import market_calendar
from services.breadth import breadth_answer, check_breadth_input
from services.documents import Documents
from services.errors import InputError
from services.http import Retry
from services.members import (
    WINDOWS,
    YEAR_SESSIONS,
    CloseRefresh,
    MemberRefresh,
    archive_holdings,
    load_member_data,
    member_breadth,
    member_data,
    member_valuation,
)
from services.members._sectors import member_sectors
from services.sectors import sectors_answer, with_member_sectors
from services.valuation import valuation_answer
from tests.support.member_closes import DATES, full_iwm_members, live_sessions, served, truth
from tests.support.provider_server import Clock, ProviderServer, Reply, yahoo_spark_body
from tests.support.yahoo_quote import RAW, YahooSession, quote_body

DATA = Path(__file__).parents[1] / "services" / "data"
HOLDINGS = gzip.decompress((DATA / "IWM_holdings.2026-05-05.csv.gz").read_bytes()).decode()
QUOTE = "/v7/finance/quote"
# IWM members (AAOI, ABAT: loss-makers without a trailing P/E), S&P 500 members, one unknown symbol
SYMBOLS = ("AAOI", "ABAT", "ABM", "BE", "CRDO", "A", "AAPL", "MSFT", "NOSUCH")
SERVED = "2026-08-01"  # the live quotes carry this dump's values, so they differ from the bundle's newest
DAY1, DAY2 = date(2026, 11, 2), date(2026, 11, 3)


@pytest.fixture(autouse=True)
def yahoo(server: ProviderServer) -> YahooSession:
    return YahooSession(server)


async def refresh(server: ProviderServer, session, database, day: date, *replies: Reply) -> bool:
    server.script(QUOTE, *replies)
    run = MemberRefresh(session, database, SYMBOLS, base_url=server.url, cookie_url=f"{server.url}/",
                        batch_size=5, pause=0.0, retry=Retry(1, 0.0, 0.0))
    return await run.run(day)


def bodies() -> list[Reply]:
    return [Reply(body=quote_body(SYMBOLS[i: i + 5], SERVED)) for i in range(0, len(SYMBOLS), 5)]


def latest_bundled() -> dict[str, dict]:
    """Each symbol's row from the newest bundled dump that has it (a plain loop over the raw dumps)."""
    rows: dict[str, dict] = {}
    for row in RAW.to_dict("records"):
        if row["symbol"] not in rows or row["dump"] > rows[row["symbol"]]["dump"]:
            rows[row["symbol"]] = row
    return rows


def served_quotes() -> dict[str, dict]:
    """The quotes the server answered, by symbol, parsed straight from the bodies."""
    return {q["symbol"]: q for r in bodies() for q in json.loads(str(r.body))["quoteResponse"]["result"]}


def expected_iwm(weights: dict[str, float]) -> dict[str, float]:
    """Trailing P/E (positive only), trailing P/E incl. loss-makers and the loss-makers' share of weight, by loop:
    a quoted member's figures from its quote (net income = EPS x shares, so its earnings yield is that / market
    cap), every other member's from its newest bundled row (earnings yield = margin / P/S)."""
    quotes, bundled = served_quotes(), latest_bundled()
    pe_w = pe_y = all_w = all_y = losing = known = 0.0
    for symbol, w in weights.items():
        if not w > 0:
            continue
        q, b = quotes.get(symbol), bundled.get(symbol)
        if q is not None:
            pe = q.get("trailingPE", math.nan)
            derivable = all(k in q for k in ("epsTrailingTwelveMonths", "sharesOutstanding", "marketCap",
                                             "priceToSalesTrailing12Months"))
            ps = q.get("priceToSalesTrailing12Months", math.nan)
            if derivable:
                earnings = q["epsTrailingTwelveMonths"] * q["sharesOutstanding"]
                margin = earnings / (q["marketCap"] / ps)
            else:
                margin = b["profit_margin"] if b is not None else math.nan
        elif b is not None:
            pe, ps, margin = b["trailing_pe"], b["price_to_sales"], b["profit_margin"]
        else:
            continue
        if pe > 0:
            pe_w, pe_y = pe_w + w, pe_y + w / pe
        if ps > 0 and not math.isnan(margin):
            all_w, all_y = all_w + w, all_y + w * margin / ps
        if not math.isnan(margin):
            known += w
            losing += w if margin < 0 else 0.0
    return {"trailing_pe": pe_w / pe_y, "trailing_pe_all": all_w / all_y, "loss_share_value": losing / known}


def iwm_weights(data) -> dict[str, float]:
    iwm = data.members[data.members["in_iwm"]]
    return {s: float(w) for s, w in iwm["weight"].items()}


async def test_the_live_snapshot_answers_with_its_figures_and_its_name(server, session, database):
    assert await refresh(server, session, database, DAY1, *bodies())
    data, origin = await member_data(database)
    assert origin.live and not origin.stale and origin.label == f"Yahoo quote snapshot of {DAY1}"
    v = member_valuation(data)
    assert v.as_of == DAY1
    assert v.rows_by_dump[DAY1] == len(SYMBOLS) - 1  # NOSUCH has no quote
    want = expected_iwm(iwm_weights(load_member_data()))
    assert v.small.multiples["trailing_pe"].value == pytest.approx(want["trailing_pe"], rel=1e-9)
    assert v.small.multiples["trailing_pe_all"].value == pytest.approx(want["trailing_pe_all"], rel=1e-9)
    assert v.small.loss_share_value == pytest.approx(want["loss_share_value"], rel=1e-9)
    bundled = member_valuation(load_member_data())
    assert v.small.multiples["trailing_pe_all"].value != pytest.approx(bundled.small.multiples["trailing_pe_all"].value)
    assert "Yahoo v7 quote snapshot of 2026-11-02" in v.source
    # the answer names it; an as_of before the snapshot uses the bundled dumps as before
    report, _ = await valuation_answer(Documents(None), _NoRender(), database=database)
    assert report.members is not None and report.members.as_of == DAY1 and not report.stale
    assert f"members bottom-up (Yahoo quote snapshot of {DAY1})" in valuation_embed(report).footer.text
    old, _ = await valuation_answer(Documents(None), _NoRender(), date(2026, 8, 5), database=database)
    assert old.members is not None and old.members.as_of == date(2026, 8, 5)
    assert "members bottom-up (bundled dump of 2026-08-08)" in valuation_embed(old).footer.text


async def test_a_margin_the_quote_cannot_give_is_carried_from_the_bundle_and_said(server, session, database):
    quotes = served_quotes()
    del quotes["ABM"]["epsTrailingTwelveMonths"]  # Yahoo leaves a key out when it has no value
    lacking = [s for s, q in quotes.items() if "epsTrailingTwelveMonths" not in q or
               "priceToSalesTrailing12Months" not in q]
    assert "ABM" in lacking
    replies = [Reply(body=json.dumps({"quoteResponse": {"error": None, "result": [
        quotes[s] for s in SYMBOLS[i: i + 5] if s in quotes]}})) for i in range(0, len(SYMBOLS), 5)]
    assert await refresh(server, session, database, DAY1, *replies)
    data, _ = await member_data(database)
    _, rows = data.snapshot()
    bundled = latest_bundled()
    for symbol in quotes:
        got = float(rows.loc[symbol, "profit_margin"])
        if symbol in lacking:
            want = bundled[symbol]["profit_margin"]
        else:
            q = quotes[symbol]
            want = q["epsTrailingTwelveMonths"] * q["sharesOutstanding"] * q["priceToSalesTrailing12Months"] / \
                q["marketCap"]
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, rel=1e-9), symbol
    note = " ".join(member_valuation(data).notes)
    assert f"derived from the {DAY1} quote for {len(quotes) - len(lacking)} members" in note
    dumps: dict[str, int] = {}
    for s in lacking:
        dumps[bundled[s]["dump"]] = dumps.get(bundled[s]["dump"], 0) + 1
    carried = ", ".join(f"{n} from {d}" for d, n in sorted(dumps.items(), reverse=True))
    assert f"carried from the bundled dumps for {len(lacking)} whose quote lacks EPS, shares or P/S ({carried})" in note


async def test_a_failed_refresh_leaves_the_previous_snapshot_answering_stale_with_its_age(server, session, database):
    assert await refresh(server, session, database, DAY1, *bodies())
    first = member_valuation((await member_data(database))[0])
    assert not await refresh(server, session, database, DAY2, bodies()[0], Reply(status=500, body="down"))
    data, origin = await member_data(database)
    assert origin.stale and "batch 2 failed: HTTP 500" in origin.note
    reference = market_calendar.last_session_now()
    assert origin.age is not None and origin.age.as_of == DAY1 and origin.age.reference == reference
    assert origin.age.behind == market_calendar.sessions_behind(DAY1, reference) > 0
    again = member_valuation(data)
    assert again.as_of == DAY1 and again.small.multiples == first.small.multiples
    report, _ = await valuation_answer(Documents(None), _NoRender(), database=database)
    assert report.stale and any("stale copy" in n for n in report.notes)
    footer = valuation_embed(report).footer.text
    assert "STALE" in footer and f"{origin.age.behind} sessions behind" in footer


def archived_text() -> str:
    """The bundled holdings file as a later day's: Real Estate weights tripled, BE (Industrials) gone."""
    head, _, rest = HOLDINGS.partition("Ticker,Name,")
    body, blank, footer = ("Ticker,Name," + rest).partition("\n \n")
    rows = list(csv.reader(io.StringIO(body)))
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    out.write(",".join(rows[0]) + "\n")
    for row in rows[1:]:
        if row and row[0] == "BE":
            continue
        if len(row) > 5 and row[2] == "Real Estate":
            row[5] = f"{float(row[5]) * 3:.2f}"
        writer.writerow(row)
    return head.replace('"May 05, 2026"', '"Dec 01, 2026"', 1) + out.getvalue() + blank + footer


async def test_sector_returns_use_the_archived_holdings_weights(server, session, database):
    server.script("/holdings.csv", Reply(body=archived_text(), content_type="text/csv"))
    docs = Documents(session, database=database, clock=Clock(), backoff=0.01, max_wait=0.05)
    assert await archive_holdings(docs, database, f"{server.url}/holdings.csv") == date(2026, 12, 1)
    data, origin = await member_data(database)
    assert data.holdings_as_of == date(2026, 12, 1) and data.holdings_source == "archived"
    assert origin.label == "bundled dump of 2026-08-08"  # no quote snapshot yet: the bundled fundamentals
    assert not data.members.loc["BE", "in_iwm"]
    sectors = member_sectors(data)
    # the loop: archived weights (Real Estate rows of the file), closes straight from the npy
    closes = np.load(DATA / "members" / "closes.npy").astype(float)
    with np.load(DATA / "members" / "members.npz") as npz:
        dates, symbols = npz["dates"], [str(s) for s in npz["symbols"]]
    col = {s: i for i, s in enumerate(symbols)}
    weights: dict[str, float] = {}
    for row in csv.reader(io.StringIO(archived_text().partition("Ticker,Name,")[2].partition("\n \n")[0])):
        if len(row) > 5 and row[2] == "Real Estate" and row[3] == "Equity":
            weights[row[0]] = weights.get(row[0], 0.0) + float(row[5])
    end = len(dates) - 1  # the archive is newer than the closes: weights at the last close
    start = sectors.period_starts["1m"]
    s = int(np.searchsorted(dates, np.datetime64(start, "D")))
    top = bottom = 0.0
    for symbol, w in weights.items():
        if symbol not in col:
            continue
        a_s, a_e, a_h = closes[s, col[symbol]], closes[end, col[symbol]], closes[end, col[symbol]]
        if np.isfinite([a_s, a_e, a_h]).all():
            top, bottom = top + w * a_e / a_h, bottom + w * a_s / a_h
    real_estate = next(x for x in sectors.sectors if x.sector == "Real Estate")
    assert real_estate.weight == pytest.approx(sum(weights.values()))
    assert real_estate.returns["1m"] == pytest.approx((top / bottom - 1) * 100, rel=1e-9)
    assert sectors.source.endswith(", archived")
    bundled = member_sectors(load_member_data())
    assert real_estate.weight == pytest.approx(3 * next(x.weight for x in bundled.sectors if x.sector == "Real Estate"),
                                               abs=0.05)


class _NoRender:
    """A renderer that skips the chart: these tests check figures, not pixels."""

    async def render(self, fn, spec) -> bytes:
        return b""



# --- member closes after the bundle (Yahoo spark) -------------------------------------------------------------

SPARK = "/v7/finance/spark"
CLOSE_MEMBERS = full_iwm_members(6)  # the last one: Yahoo leaves it out (no close after the bundle)
LIVE_DAYS = live_sessions(15)
OVERLAP = [date.fromisoformat(str(d)) for d in DATES[-6:]]


async def refresh_closes(server: ProviderServer, session, database, day: date, *replies: Reply) -> bool:
    server.script(SPARK, *replies)
    run = CloseRefresh(session, database, CLOSE_MEMBERS, base_url=server.url, cookie_url=f"{server.url}/",
                       batch_size=3, pause=0.0, retry=Retry(1, 0.0, 0.0))
    return await run.run(day)


def spark_replies(days: list[date]) -> list[Reply]:
    """Two batches; the first member's closes in a raw basis 3% above the adjusted bundle's."""
    series = {s: served(s, days, 1.03 if s == CLOSE_MEMBERS[0] else 1.0) for s in CLOSE_MEMBERS[:-1]}
    return [Reply(body=yahoo_spark_body({s: series[s] for s in CLOSE_MEMBERS[i: i + 3] if s in series}))
            for i in range(0, len(CLOSE_MEMBERS), 3)]


def loop_breadth(day: date) -> dict[str, int]:
    """Breadth of the members with live closes on `day`, by a plain loop over each member's closes: the bundled
    ones, then the live ones (the replayed closes, see tests/support/member_closes). Counts by name: counted50,
    above50, counted200, above200, advances, declines, highs, lows."""
    timeline = [date.fromisoformat(str(d)) for d in DATES] + [d for d in LIVE_DAYS if d <= day]
    out = dict.fromkeys(["advances", "declines", "highs", "lows", *(f"{k}{n}" for n in WINDOWS
                                                                    for k in ("counted", "above"))], 0)
    for symbol in CLOSE_MEMBERS[:-1]:  # the only IWM members with a close after the bundle
        v = [float(np.float32(truth(symbol, d))) for d in timeline]
        assert all(math.isfinite(x) for x in v[-YEAR_SESSIONS:])  # full_iwm_members: a year of closes
        for n in WINDOWS:
            out[f"counted{n}"] += 1
            out[f"above{n}"] += v[-1] > sum(v[-n:]) / n
        out["advances"] += v[-1] > v[-2]
        out["declines"] += v[-1] < v[-2]
        out["highs"] += v[-1] > max(v[-YEAR_SESSIONS:-1])
        out["lows"] += v[-1] < min(v[-YEAR_SESSIONS:-1])
    return out


async def test_breadth_runs_on_past_the_bundle_with_the_live_closes(server, session, database, resources):
    assert await refresh_closes(server, session, database, LIVE_DAYS[-1], *spark_replies(OVERLAP + LIVE_DAYS))
    data, origin = await member_data(database)
    assert data.as_of == LIVE_DAYS[-1] and not origin.closes_stale
    assert origin.closes_label == f"Yahoo spark daily closes to {LIVE_DAYS[-1]}"
    for day in LIVE_DAYS[0], LIVE_DAYS[7], LIVE_DAYS[-1]:
        d, want = member_breadth(data, "IWM", day).latest, loop_breadth(day)
        assert d.day == day
        for n in WINDOWS:
            assert d.counted[n] == want[f"counted{n}"] == len(CLOSE_MEMBERS) - 1
            assert d.pct_above[n] == pytest.approx(want[f"above{n}"] * 100 / want[f"counted{n}"])
        assert (d.advances, d.declines) == (want["advances"], want["declines"])
        assert (d.new_highs, d.new_lows) == (want["highs"], want["lows"])
    # the answer: the live day, its closes' source and coverage; an as_of in the live closes is accepted
    answer, _ = await breadth_answer(resources.market, _NoRender(), "3mo", database=database)
    assert answer.report.as_of == LIVE_DAYS[-1]
    covered = f"{len(CLOSE_MEMBERS) - 1:,} of {len(load_member_data().symbols):,} members have a close on"
    assert f"Yahoo spark daily closes {LIVE_DAYS[0]} to {LIVE_DAYS[-1]} ({covered} {LIVE_DAYS[-1]})" in \
        answer.report.source
    assert "STALE" not in breadth_embed(answer).footer.text
    await check_breadth_input("1y", LIVE_DAYS[3], database)
    with pytest.raises(InputError, match="outside the member closes"):
        await check_breadth_input("1y", market_calendar.next_session(LIVE_DAYS[-1]), database)
    with pytest.raises(InputError):  # without the live closes, the bundle's end is the limit
        await check_breadth_input("1y", LIVE_DAYS[3])


async def test_sector_returns_run_to_the_last_live_close(server, session, database):
    assert await refresh_closes(server, session, database, LIVE_DAYS[-1], *spark_replies(OVERLAP + LIVE_DAYS))
    sectors = member_sectors((await member_data(database))[0])
    assert sectors.as_of == LIVE_DAYS[-1]
    # the loop: the bundled holdings' weights, the members' closes at the holdings date, the period start and the end
    weights: dict[str, float] = {}
    for row in csv.reader(io.StringIO(HOLDINGS.partition("Ticker,Name,")[2].partition("\n \n")[0])):
        if len(row) > 5 and row[3] == "Equity" and row[0] in CLOSE_MEMBERS[:-1]:
            weights[row[0]] = weights.get(row[0], 0.0) + float(row[5])
    holdings_day = date(2026, 5, 5)
    for period in "1m", "3m":
        start = sectors.period_starts[period]
        assert start is not None
        top = bottom = 0.0
        for symbol, w in weights.items():
            a_h, a_s, a_e = (float(np.float32(truth(symbol, d))) for d in (holdings_day, start, LIVE_DAYS[-1]))
            top, bottom = top + w * a_e / a_h, bottom + w * a_s / a_h
        assert sectors.total.counted[period] == len(weights)
        assert sectors.total.returns[period] == pytest.approx((top / bottom - 1) * 100, rel=1e-6)
    assert "Yahoo spark daily closes" in sectors.source


async def test_a_failed_closes_refresh_answers_the_last_complete_closes_marked_stale(server, session, database,
                                                                                     resources):
    first, later = LIVE_DAYS[:10], LIVE_DAYS[10:]
    assert await refresh_closes(server, session, database, first[-1], *spark_replies(OVERLAP + first))
    assert not await refresh_closes(server, session, database, later[-1], spark_replies(first[-3:] + later)[0],
                                    Reply(status=429, body="Too Many Requests"))
    data, origin = await member_data(database)
    assert data.as_of == first[-1] and origin.closes_stale and "batch 2 failed: HTTP 429" in origin.closes_note
    reference = market_calendar.last_session_now()
    assert origin.closes_age is not None and origin.closes_age.as_of == first[-1]
    assert origin.closes_age.behind == market_calendar.sessions_behind(first[-1], reference) > 0
    answer, _ = await breadth_answer(resources.market, _NoRender(), "3mo", database=database)
    assert answer.report.as_of == first[-1]
    embed = breadth_embed(answer)
    assert "STALE" in embed.footer.text and f"{origin.closes_age.behind} sessions behind" in embed.footer.text
    assert embed.description is not None and "closes refresh of" in embed.description
    # the sectors: the bundled sector funds end 2026-07-31, so their report is moved to the last member close
    report, _ = await sectors_answer(resources.market, Documents(None), _NoRender(), "1m", database=database)
    assert not report.stale  # a day the bundle covers: the failed refresh is not its concern
    later = await with_member_sectors(replace(report, as_of=first[-1]), await resources.market.bars("IWM"), database)
    assert later.members is not None and later.members.sectors.as_of == first[-1] and later.stale
    assert any(f"{origin.closes_age.behind} sessions behind" in n and "closes refresh of" in n for n in later.notes)


async def test_a_first_closes_refresh_that_fails_leaves_the_bundle_answering_stale(server, session, database):
    assert not await refresh_closes(server, session, database, LIVE_DAYS[-1], Reply(status=503, body="down"))
    data, origin = await member_data(database)
    assert data is load_member_data() and origin.closes_stale and "batch 1 failed: HTTP 503" in origin.closes_note
    assert origin.closes_label == f"bundled closes to {data.as_of}"
    assert origin.closes_age is not None and origin.closes_age.as_of == data.as_of
    _, past = await member_data(database, date(2026, 7, 1))  # a day the bundle covers: not stale
    assert not past.closes_stale

"""Market data providers against a local HTTP server serving real-format bodies, with faults."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from services.http import ProviderError
from services.market import (
    GAP_RETRY_SECONDS,
    MarketData,
    StooqProvider,
    UnknownSymbol,
    YahooProvider,
    complete_history,
    parse_stooq_csv,
    parse_yahoo_chart,
    read_bundled_csv,
)
from tests.support.provider_server import Clock, Reply, yahoo_chart_body

FIXTURES = Path(__file__).parent / "fixtures"
YAHOO_BODY = (FIXTURES / "yahoo_chart_v8.SPY.sample.json").read_text()
STOOQ_BODY = (FIXTURES / "stooq.SPY.daily.csv").read_text()
YAHOO_PATH = "/v8/finance/chart/SPY"
STOOQ_PATH = "/q/d/l/"


def market(providers, database=None, clock=None, **kwargs) -> MarketData:
    return MarketData(providers, database=database, clock=clock or Clock(), backoff=0.01, **kwargs)


def test_yahoo_chart_parses_the_real_shape():
    frame = parse_yahoo_chart(YAHOO_BODY, "SPY")
    assert [d.isoformat()[:10] for d in frame.index] == [
        "2026-02-13", "2026-02-17", "2026-02-18", "2026-02-19", "2026-02-20"]
    raw = json.loads(YAHOO_BODY)["chart"]["result"][0]["indicators"]["quote"][0]
    assert frame["close"].tolist() == pytest.approx(raw["close"])
    assert frame["open"].iloc[-1] == pytest.approx(682.3200073242188)
    assert frame["volume"].iloc[-1] == 99952100


def test_yahoo_error_body_is_unknown_symbol():
    body = json.dumps({"chart": {"result": None, "error": {"code": "Not Found", "description": "No data found"}}})
    with pytest.raises(UnknownSymbol):
        parse_yahoo_chart(body, "NOPE")


@pytest.mark.parametrize("body", ["", "<html>rate limited</html>", '{"chart": {}}', YAHOO_BODY[: len(YAHOO_BODY) // 2]])
def test_yahoo_garbage_is_a_provider_error(body):
    with pytest.raises(ProviderError):
        parse_yahoo_chart(body, "SPY")


def test_stooq_csv_parses_the_real_shape():
    frame = parse_stooq_csv(STOOQ_BODY, "SPY")
    assert len(frame) == 2839
    assert frame.index[0].date().isoformat() == "2015-01-02"
    assert frame["close"].iloc[0] == pytest.approx(172.069)
    assert frame["adj_close"].iloc[-1] == frame["close"].iloc[-1]


@pytest.mark.parametrize("body", ["No data", "Exceeded the daily hits limit", "<!DOCTYPE html><html></html>"])
def test_stooq_non_csv_bodies(body):
    with pytest.raises(ProviderError):
        parse_stooq_csv(body, "SPY")


async def test_yahoo_provider_fetches_over_http(server, session):
    server.script(YAHOO_PATH, Reply(body=YAHOO_BODY))
    frame = await YahooProvider(session, server.url).fetch("SPY")
    assert len(frame) == 5
    request = server.requests[0]
    assert request.query["interval"] == "1d" and request.query["range"] == "max"


async def test_stooq_provider_sends_the_key(server, session):
    server.script(STOOQ_PATH, Reply(body=STOOQ_BODY, content_type="text/csv"))
    frame = await StooqProvider(session, server.url, "k3y").fetch("SPY")
    assert len(frame) == 2839
    assert server.requests[0].query["s"] == "spy.us" and server.requests[0].query["apikey"] == "k3y"


async def test_retries_429_and_500_then_succeeds(server, session, database):
    server.script(YAHOO_PATH, Reply(status=429, headers={"Retry-After": "0"}), Reply(status=500),
                  Reply(body=YAHOO_BODY))
    bars = await market([YahooProvider(session, server.url)], database).bars("SPY")
    assert server.calls[YAHOO_PATH] == 3
    assert bars.source == "yahoo" and not bars.stale
    assert bars.as_of.isoformat() == "2026-02-20"


async def test_timeout_then_stale_bundled_fallback(server, session):
    server.script(YAHOO_PATH, Reply(body=YAHOO_BODY, delay=1.0))
    bars = await market([YahooProvider(session, server.url, timeout=0.1)], attempts=2).bars("SPY")
    assert server.calls[YAHOO_PATH] == 2
    assert bars.stale and bars.source == "bundled"
    assert "timed out" in bars.note
    assert bars.as_of.isoformat() == "2026-10-05"  # the bundled SPY history ends there


@pytest.mark.parametrize("reply", [Reply(status=500), Reply(body="<html>oops</html>", content_type="text/html"),
                                   Reply(body=YAHOO_BODY[:300])])
async def test_failures_serve_the_last_cached_copy_marked_stale(server, session, database, reply):
    clock = Clock()
    server.script(YAHOO_PATH, Reply(body=YAHOO_BODY))
    fresh = await market([YahooProvider(session, server.url)], database, clock).bars("SPY")
    assert not fresh.stale
    # A new process (new MarketData, same database), after the cache has expired, with the provider broken.
    server.script(YAHOO_PATH, reply)
    clock.now += 10_000
    bars = await market([YahooProvider(session, server.url)], database, clock).bars("SPY")
    assert bars.stale and bars.source == "yahoo"
    assert bars.as_of == fresh.as_of
    assert bars.frame["close"].tolist() == pytest.approx(fresh.frame["close"].tolist(), nan_ok=True)


async def test_fresh_cache_answers_without_a_call(server, session, database):
    clock = Clock()
    server.script(YAHOO_PATH, Reply(body=YAHOO_BODY))
    await market([YahooProvider(session, server.url)], database, clock).bars("SPY")
    clock.now += 60
    again = await market([YahooProvider(session, server.url)], database, clock).bars("SPY")
    assert server.calls[YAHOO_PATH] == 1
    assert again.source == "yahoo" and not again.stale


async def test_single_flight_50_concurrent_requests_make_one_call(server, session, database):
    server.script("/v8/finance/chart/IWM", Reply(body=YAHOO_BODY.replace('"SPY"', '"IWM"'), delay=0.05))
    service = market([YahooProvider(session, server.url)], database)
    results = await asyncio.gather(*(service.bars("IWM") for _ in range(50)))
    assert server.calls["/v8/finance/chart/IWM"] == 1
    assert all(r is results[0] for r in results)


async def test_falls_back_to_the_keyed_provider(server, session):
    server.script(YAHOO_PATH, Reply(status=503))
    server.script(STOOQ_PATH, Reply(body=STOOQ_BODY, content_type="text/csv"))
    bars = await market([YahooProvider(session, server.url), StooqProvider(session, server.url, "k")]).bars("SPY")
    assert bars.source == "stooq" and not bars.stale
    assert bars.as_of.isoformat() == "2026-04-17"


async def test_circuit_breaker_rests_a_failing_provider_then_probes(server, session):
    clock = Clock()
    server.script(YAHOO_PATH, Reply(status=500))
    service = market([YahooProvider(session, server.url)], clock=clock, attempts=1, ttl=0)
    for _ in range(3):
        assert (await service.bars("SPY")).stale
    assert server.calls[YAHOO_PATH] == 3
    assert service.health["yahoo"].state == "open"
    await service.bars("SPY")  # resting: no call
    assert server.calls[YAHOO_PATH] == 3
    clock.now += service.health["yahoo"].cooldown
    server.script(YAHOO_PATH, Reply(body=YAHOO_BODY))
    assert not (await service.bars("SPY")).stale  # the probe succeeds and closes the breaker
    assert service.health["yahoo"].state == "closed"


async def test_unknown_symbol_offline_is_an_error():
    with pytest.raises(UnknownSymbol):
        await MarketData([]).bars("NOSUCH")


async def test_bundled_history_is_real_and_split_adjusted():
    bars = await MarketData([]).bars("IWM")
    frame = bars.frame
    assert frame.index.is_unique and frame.index.is_monotonic_increasing
    assert frame.index[0].date().isoformat() == "2000-05-26"
    assert bars.as_of.isoformat() == "2026-10-05"
    assert (frame["low"] <= frame["close"]).all() and (frame["close"] <= frame["high"]).all()
    # SOURCES.md sanity points: 2021 closing high 242.56, 2022 low close 163.90.
    assert frame.loc["2021", "close"].max() == pytest.approx(242.56, abs=0.005)
    assert frame.loc["2022", "close"].min() == pytest.approx(163.90, abs=0.005)


async def test_yesterdays_data_forever_is_stale_and_rests_the_provider(server, session):
    """A provider that keeps answering with an old last bar: the answer is marked stale with its as-of date, and
    the breaker stops asking it on every request."""
    from datetime import date

    async def expected() -> date:
        return date(2026, 2, 23)  # the sample's last bar is 2026-02-20 (a Friday); Monday's close has passed

    clock = Clock()
    server.script(YAHOO_PATH, Reply(body=YAHOO_BODY))
    service = market([YahooProvider(session, server.url)], clock=clock, attempts=1, ttl=0,
                     expected_session=expected)
    for _ in range(3):
        bars = await service.bars("SPY")
        assert bars.stale and bars.source == "yahoo" and bars.as_of.isoformat() == "2026-02-20"
        assert "behind the last session 2026-02-23" in bars.note
    assert service.health["yahoo"].state == "open"
    await service.bars("SPY")
    assert server.calls[YAHOO_PATH] == 3  # resting


async def test_fresh_enough_data_is_not_stale(server, session):
    from datetime import date

    async def expected() -> date:
        return date(2026, 2, 20)

    server.script(YAHOO_PATH, Reply(body=YAHOO_BODY))
    bars = await market([YahooProvider(session, server.url)], expected_session=expected).bars("SPY")
    assert not bars.stale


# --- live bars on the bundled base ------------------------------------------------------------------------------

def _bundled_iwm() -> pd.DataFrame:
    return read_bundled_csv("IWM")


def test_live_bars_extend_the_bundled_base_rescaled():
    base = _bundled_iwm()
    live = base.loc["2026-06-01":].copy()
    live["adj_close"] = live["close"]  # another source, adjusted from another date: a different scale
    merged, missing = complete_history(live, base)
    assert missing == [] and merged.index.equals(base.index)
    assert merged.loc["2026-06-01":].equals(live)  # live bars win where they exist
    # the base's older adjusted closes keep their returns, on the live scale (checked on one pair of days)
    factor = live.at[pd.Timestamp("2026-10-05"), "adj_close"] / base.at[pd.Timestamp("2026-10-05"), "adj_close"]
    day = pd.Timestamp("2020-03-16")
    assert merged.at[day, "adj_close"] == pytest.approx(base.at[day, "adj_close"] * factor)
    assert merged.at[day, "close"] == base.at[day, "close"]


def test_a_session_the_live_answer_lacks_is_taken_from_the_base_or_said():
    base = _bundled_iwm()
    live = base.loc["2026-05-01":].drop(pd.Timestamp("2026-10-02"))
    merged, missing = complete_history(live, base)
    assert missing == [] and merged.at[pd.Timestamp("2026-10-02"), "close"] == base.at[
        pd.Timestamp("2026-10-02"), "close"]
    # without a base that has it, the hole is reported (2026-10-02 was a Friday session)
    alone, missing = complete_history(live, None)
    assert missing == [date(2026, 10, 2)] and pd.Timestamp("2026-10-02") not in alone.index


async def test_a_live_answer_with_a_hole_is_marked_and_asked_again_soon(server, session):
    frame = _bundled_iwm().loc["2026-05-01":].drop(pd.Timestamp("2026-10-02"))
    server.script("/v8/finance/chart/ZZZ", Reply(body=yahoo_chart_body(frame, "ZZZ")))  # not bundled: no base
    clock = Clock()
    data = market([YahooProvider(session, server.url)], clock=clock, ttl=900)
    bars = await data.bars("ZZZ")
    assert bars.stale and "lacks 2026-10-02" in bars.note and bars.source == "yahoo"
    clock.now += GAP_RETRY_SECONDS + 1  # well inside the TTL, but the hole makes it ask again
    server.script("/v8/finance/chart/ZZZ", Reply(body=yahoo_chart_body(_bundled_iwm().loc["2026-05-01":], "ZZZ")))
    repaired = await data.bars("ZZZ")
    assert not repaired.stale and pd.Timestamp("2026-10-02") in repaired.frame.index
    assert server.calls["/v8/finance/chart/ZZZ"] == 2

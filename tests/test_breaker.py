"""The fetch pipeline's circuit breaker and deadline against the local provider server, counting upstream requests:
one probe when the cool-down ends, per-symbol "not found" kept apart from provider faults, and an overall deadline
after which the stale answer goes out (a hang, a 5xx storm, a 429 storm with Retry-After)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from services.market import MarketData, UnknownSymbol, YahooProvider, read_bundled_csv
from tests.support.provider_server import Clock, Reply, yahoo_chart_body

# Bundled symbols, so every stale answer has a copy to fall back on (what /iwm sectors asks for at once).
SYMBOLS = ["IWM", "SPY", "QQQ", "PSCF", "PSCI", "PSCH", "PSCD", "PSCE", "PSCM", "PSCT", "PSCU", "PSCC", "KRE",
           "XBI"]
SAMPLE = json.loads((Path(__file__).parent / "fixtures" / "yahoo_chart_v8.SPY.sample.json").read_text())


def path(symbol: str) -> str:
    return f"/v8/finance/chart/{symbol}"


def body(symbol: str) -> str:
    return yahoo_chart_body(read_bundled_csv(symbol).tail(30), symbol)


def market(session, server, clock, **kwargs) -> MarketData:
    timeout = kwargs.pop("timeout", 10.0)
    return MarketData([YahooProvider(session, server.url, timeout)], clock=clock, ttl=0, backoff=0.01, **kwargs)


def upstream(server) -> int:
    return sum(server.calls[path(s)] for s in SYMBOLS)


async def open_breaker(service: MarketData, server) -> None:
    for _ in range(service.health["yahoo"].threshold):
        assert (await service.bars("IWM")).stale
    assert service.health["yahoo"].state == "open"


async def test_one_probe_when_the_cooldown_ends_and_a_failed_probe_reopens(server, session):
    clock = Clock()
    for symbol in SYMBOLS:
        server.script(path(symbol), Reply(status=500))
    service = market(session, server, clock)
    await open_breaker(service, server)
    before = upstream(server)
    assert before == 3 * service.retry.attempts

    clock.now += service.health["yahoo"].cooldown
    answers = await asyncio.gather(*(service.bars(s) for s in SYMBOLS))
    assert upstream(server) - before == 1  # one probe, one attempt (it was 14 symbols x 3 attempts = 42)
    assert all(a.stale and a.source == "bundled" for a in answers)
    health = service.health["yahoo"]
    assert health.state == "open" and health.opened_at == clock.now and not health.probing  # re-opened by the probe

    await asyncio.gather(*(service.bars(s) for s in SYMBOLS))
    assert upstream(server) - before == 1  # resting again for a full cool-down


async def test_callers_during_the_probe_get_the_stale_answer_and_its_success_closes(server, session):
    clock = Clock()
    for symbol in SYMBOLS:
        server.script(path(symbol), Reply(status=503))
    service = market(session, server, clock)
    await open_breaker(service, server)
    before = upstream(server)

    clock.now += service.health["yahoo"].cooldown
    for symbol in SYMBOLS:
        server.script(path(symbol), Reply(body=body(symbol), delay=0.2))  # the probe is slow: others come meanwhile
    answers = await asyncio.gather(*(service.bars(s) for s in SYMBOLS))
    assert upstream(server) - before == 1
    fresh = [a for a in answers if not a.stale]
    assert len(fresh) == 1 and fresh[0].source == "yahoo" and server.calls[path(fresh[0].symbol)] == 1 + (
        3 * service.retry.attempts if fresh[0].symbol == "IWM" else 0)
    assert all(a.source == "bundled" for a in answers if a.stale)
    assert service.health["yahoo"].state == "closed"

    again = await asyncio.gather(*(service.bars(s) for s in SYMBOLS))  # closed: everyone asks again
    assert not any(a.stale for a in again) and upstream(server) - before == 1 + len(SYMBOLS)


@pytest.mark.parametrize("reply", [
    Reply(status=404, body=json.dumps({"chart": {"result": None, "error": {
        "code": "Not Found", "description": "No data found, symbol may be delisted"}}})),
    Reply(body=json.dumps({"chart": {"result": [{"meta": SAMPLE["chart"]["result"][0]["meta"],
                                                 "indicators": {"quote": [{}]}}], "error": None}})),
], ids=["404", "empty chart"])
async def test_an_unknown_symbol_counts_against_itself_not_the_provider(server, session, reply):
    clock = Clock()
    server.script(path("NOSUCH"), reply)
    server.script(path("IWM"), Reply(body=body("IWM")))
    service = market(session, server, clock)
    for _ in range(5):
        with pytest.raises(UnknownSymbol):
            await service.bars("NOSUCH")
    assert server.calls[path("NOSUCH")] == 3  # one attempt each (not retried); then the symbol rests, alone
    assert service.health["yahoo"].state == "closed"
    iwm = await service.bars("IWM")
    assert not iwm.stale and iwm.source == "yahoo" and server.calls[path("IWM")] == 1
    clock.now += service.health["yahoo"].cooldown
    with pytest.raises(UnknownSymbol):
        await service.bars("NOSUCH")
    assert server.calls[path("NOSUCH")] == 4  # asked again after its own cool-down


async def test_a_hanging_provider_answers_stale_at_the_deadline(server, session):
    server.script(path("IWM"), Reply(hang=True))
    service = market(session, server, Clock(), timeout=5.0, deadline=0.5)  # 3 attempts x 5 s without a deadline
    started = time.monotonic()
    bars = await asyncio.wait_for(service.bars("IWM"), 5)
    assert time.monotonic() - started < 1.5
    assert bars.stale and bars.source == "bundled" and "deadline" in bars.note
    assert server.calls[path("IWM")] == 1
    assert service.health["yahoo"].failures == 1  # a hang is a provider fault: three of them open the breaker


async def test_a_5xx_storm_gives_up_at_the_deadline_and_opens_the_breaker(server, session):
    server.script(path("IWM"), Reply(status=502))
    clock = Clock()
    service = MarketData([YahooProvider(session, server.url)], clock=clock, ttl=0, attempts=10, backoff=0.2,
                         deadline=0.5)  # without the deadline: 0.2 + 0.4 + 0.8 + ... up to 10 s per wait
    started = time.monotonic()
    for _ in range(3):
        assert (await asyncio.wait_for(service.bars("IWM"), 5)).stale
    assert time.monotonic() - started < 3
    calls = server.calls[path("IWM")]
    assert 3 <= calls <= 3 * 3  # at most the waits that fit into 0.5 s: 0.2 and the start of 0.4
    assert service.health["yahoo"].state == "open"
    await service.bars("IWM")
    assert server.calls[path("IWM")] == calls


async def test_a_429_storm_with_a_long_retry_after_does_not_wait_past_the_deadline(server, session):
    server.script(path("IWM"), Reply(status=429, headers={"Retry-After": "120"}))
    service = market(session, server, Clock(), deadline=2.0)
    started = time.monotonic()
    for _ in range(3):
        bars = await asyncio.wait_for(service.bars("IWM"), 5)
        assert bars.stale and "HTTP 429" in bars.note
    assert time.monotonic() - started < 1.5  # a wait that ends after the deadline is not waited at all
    assert server.calls[path("IWM")] == 3 and service.health["yahoo"].state == "open"
    await service.bars("IWM")
    assert server.calls[path("IWM")] == 3


async def test_a_short_retry_after_is_honoured_within_the_deadline(server, session):
    server.script(path("IWM"), Reply(status=429, headers={"Retry-After": "0"}), Reply(status=429),
                  Reply(body=body("IWM")))
    bars = await market(session, server, Clock(), deadline=8.0).bars("IWM")
    assert not bars.stale and server.calls[path("IWM")] == 3

"""The document cache (services/documents.py) against a local HTTP server: faults, fallbacks, single flight."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest

from services.bundled import data_file
from services.documents import Documents, DocumentUnavailable, build_documents
from services.http import ProviderError, with_retries
from services.rates import parse_fred_csv
from tests.support.provider_server import Clock, ProviderServer, Reply

PATH = "/graph/fredgraph.csv"
BUNDLED = "FEDFUNDS.monthly.csv.gz"
BUNDLED_TEXT = gzip.decompress(
    (Path(__file__).parents[1] / "services" / "data" / BUNDLED).read_bytes()).decode()
LIVE_TEXT = "observation_date,FEDFUNDS\n" + "\n".join(BUNDLED_TEXT.splitlines()[1:]) + "\n2025-05-01,4.33\n"


def validate(text: str) -> None:
    parse_fred_csv(text, "FEDFUNDS")


def documents(session, database=None, clock=None, **kwargs) -> Documents:
    options = {"backoff": 0.01, "max_wait": 0.05, "timeout": 2.0, **kwargs}
    return Documents(session, database=database, clock=clock or Clock(), **options)


async def get(docs: Documents, server: ProviderServer, bundled: str | None = BUNDLED):
    return await docs.get(f"{server.url}{PATH}", params={"id": "FEDFUNDS"}, bundled=bundled, validate=validate)


async def test_live_fetch_is_cached_and_a_fresh_cache_makes_no_request(server, session, database):
    server.script(PATH, Reply(body=LIVE_TEXT, content_type="text/csv"))
    first = await get(documents(session, database), server)
    assert first.source == "live" and not first.stale and first.text == LIVE_TEXT
    assert server.requests[0].query["id"] == "FEDFUNDS"
    rows = await database.run(lambda db: list(db.query("SELECT * FROM documents_cache")))
    assert len(rows) == 1 and rows[0]["text"] == LIVE_TEXT
    second = await get(documents(session, database), server)  # a new instance: answered from SQLite
    assert second.text == LIVE_TEXT and second.fetched_at == first.fetched_at
    assert server.calls[PATH] == 1
    assert "fetched" in second.describe("FRED FEDFUNDS")


async def test_html_instead_of_csv_falls_back_to_the_bundled_file_marked_stale(server, session):
    server.script(PATH, Reply(body="<!DOCTYPE html><html><body>Sign in</body></html>", content_type="text/html"))
    doc = await get(documents(session), server)
    assert doc.stale and doc.source == "bundled" and doc.fetched_at is None
    assert doc.text.startswith("DATE,FEDFUNDS")
    assert "HTML" in doc.note
    assert server.calls[PATH] == 1  # an unusable body is not retried
    assert doc.describe("FRED FEDFUNDS") == "FRED FEDFUNDS, bundled file (stale)"


async def test_garbage_falls_back(server, session):
    server.script(PATH, Reply(body="\x00\x01 not a csv", content_type="text/csv"))
    doc = await get(documents(session), server)
    assert doc.stale and doc.source == "bundled" and "unusable" in doc.note


async def test_timeout_falls_back(server, session):
    server.script(PATH, Reply(body=LIVE_TEXT, delay=1.0))
    doc = await get(documents(session, timeout=0.1, attempts=2), server)
    assert server.calls[PATH] == 2
    assert doc.stale and "timed out" in doc.note


async def test_429_with_retry_after_then_500_then_success(server, session):
    server.script(PATH, Reply(status=429, headers={"Retry-After": "1"}), Reply(status=500),
                  Reply(body=LIVE_TEXT, content_type="text/csv"))
    doc = await get(documents(session), server)
    assert server.calls[PATH] == 3
    assert doc.source == "live" and not doc.stale and doc.text == LIVE_TEXT


async def test_server_errors_fall_back_to_the_expired_cached_copy(server, session, database):
    clock = Clock()
    server.script(PATH, Reply(body=LIVE_TEXT, content_type="text/csv"), Reply(status=500))
    await get(documents(session, database, clock), server)
    clock.now += 10_000  # past the ttl
    doc = await get(documents(session, database, clock), server)
    assert doc.stale and doc.source == "cache" and doc.text == LIVE_TEXT
    assert "HTTP 500" in doc.note and "cached copy" in doc.describe("FRED")
    assert server.calls[PATH] == 1 + 3


async def test_no_fallback_raises_document_unavailable(server, session):
    server.script(PATH, Reply(status=404))
    with pytest.raises(DocumentUnavailable, match="HTTP 404"):
        await get(documents(session), server, bundled=None)


async def test_single_flight_per_url(server, session):
    server.script(PATH, Reply(body=LIVE_TEXT, content_type="text/csv", delay=0.2))
    docs = documents(session)
    results = await asyncio.gather(*(get(docs, server) for _ in range(5)))
    assert server.calls[PATH] == 1
    assert {r.text for r in results} == {LIVE_TEXT}


async def test_offline_returns_the_bundled_file_without_requests(server):
    doc = await get(Documents(None), server)
    assert doc.source == "bundled" and not doc.stale and doc.text == BUNDLED_TEXT
    assert server.calls == {}
    with pytest.raises(DocumentUnavailable):
        await get(Documents(None), server, bundled=None)


async def test_build_documents_is_offline_for_the_bundled_provider(session):
    class S:
        provider, cache_ttl_seconds, http_timeout_seconds, fetch_deadline_seconds = "bundled", 900, 10.0, 8.0

    assert not build_documents(S(), session, None).live
    S.provider = "yahoo"
    assert build_documents(S(), session, None).live


async def test_with_retries_stops_on_a_non_retryable_error():
    calls = []

    async def call() -> str:
        calls.append(1)
        raise ProviderError("HTTP 404", retryable=False)

    with pytest.raises(ProviderError):
        await with_retries(call, attempts=3, backoff=0.01, max_wait=0.01)
    assert len(calls) == 1


def test_bundled_text_matches_the_data_file():
    assert data_file(BUNDLED).read().decode() == BUNDLED_TEXT


async def test_a_failing_host_rests_after_three_failures(server, session):
    server.script(PATH, Reply(status=503))
    docs = documents(session, attempts=1)
    for _ in range(3):
        assert (await get(docs, server)).stale
    assert server.calls[PATH] == 3
    doc = await get(docs, server)
    assert server.calls[PATH] == 3 and doc.stale and "resting after 3 failures" in doc.note

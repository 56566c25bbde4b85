"""Text documents over HTTP (FRED CSVs, iShares holdings, Yahoo quoteSummary JSON) with a SQLite cache.

Fresh cache -> no request. Otherwise one request per document at a time (single flight), retried with backoff;
a body the caller's validator rejects (HTML instead of CSV, garbage) counts as a failure. When the live fetch
fails: the last cached copy, else the bundled file, both marked stale. Offline (no session) the bundled file
is the source and is returned directly. Each source (a host, or the name the caller gives it) has a breaker in
the shared `Sources` registry, so `/iwm status` lists it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from services.bundled import bundled_text
from services.http import (
    DOCUMENTS,
    CachedFetch,
    CacheTable,
    ProviderError,
    Resting,
    Retry,
    Sources,
    Stamped,
    get_text,
    guarded,
)
from services.storage import Database

log = logging.getLogger(__name__)

Validator = Callable[[str], Any]  # raises ValueError (or ProviderError) when a body is unusable


class DocumentUnavailable(ProviderError):
    """Neither the network, the cache nor a bundled file has the document."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class Document:
    key: str
    text: str
    source: str  # "live", "cache" (a stale cached copy) or "bundled"
    url: str | None
    fetched_at: datetime | None  # UTC time of the download; None for a bundled file
    stale: bool = False
    note: str = ""

    def describe(self, upstream: str) -> str:
        """Short source label for embeds, e.g. "FRED FEDFUNDS, fetched 2026-08-21 14:00 UTC"."""
        if self.fetched_at is None:
            where = "bundled file"
        else:
            when = self.fetched_at.strftime("%Y-%m-%d %H:%M UTC")
            where = f"cached copy from {when}" if self.source == "cache" else f"fetched {when}"
        return f"{upstream}, {where}{' (stale)' if self.stale else ''}"


def url_key(url: str, params: dict[str, str] | None = None) -> str:
    return f"{url}?{urlencode(sorted(params.items()))}" if params else url


def looks_like_html(text: str) -> bool:
    head = text.lstrip("\ufeff \t\r\n")[:200].lower()
    return head.startswith("<") or "<html" in head or "<!doctype" in head


def yahoo_envelope(text: str, key: str, what: str) -> Any:
    """The object under `key` of a Yahoo JSON answer (`{"quoteResponse": {"result": ..., "error": null}}` and its
    kin), with "result" and "error". ValueError, naming `what`, for an HTML page, a body of another shape or
    Yahoo's error."""
    if looks_like_html(text):
        raise ValueError(f"HTML page instead of {what} JSON")
    try:
        inner = json.loads(text)[key]
        error = inner.get("error")
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed {what} response: {type(exc).__name__}") from exc
    if error:
        raise ValueError(f"{what} error: {error}")
    return inner


def _encode_document(document: Document, fetched_at: float) -> dict[str, Any]:
    return {"key": document.key, "url": document.url, "fetched_at": fetched_at, "text": document.text}


def _decode_document(key: str, row: dict[str, Any]) -> Document:
    return Document(key, row["text"], "live", row["url"], datetime.fromtimestamp(row["fetched_at"], UTC))


DOCUMENTS_CACHE = CacheTable("documents_cache", "key", _encode_document, _decode_document)


class Documents:
    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        *,
        database: Database | None = None,
        ttl: float = 900.0,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.5,
        max_wait: float = 10.0,
        clock: Callable[[], float] = time.time,
        sources: Sources | None = None,
        deadline: float | None = None,
    ) -> None:
        self.deadline = deadline  # seconds one answer may spend on the live source in all (see MarketData)
        self.session, self.timeout, self.retry, self.clock = session, timeout, Retry(attempts, backoff, max_wait), clock
        self.sources = sources or Sources(clock)  # per source: one that keeps failing rests a while
        self._cache = CachedFetch(DOCUMENTS_CACHE, database, ttl=ttl, clock=clock, deadline=deadline)

    @property
    def live(self) -> bool:
        return self.session is not None

    async def get(
        self,
        url: str,
        *,
        params: dict[str, str] | None = None,
        bundled: str | None = None,
        validate: Validator | None = None,
        ttl: float | None = None,
        source: str | None = None,
    ) -> Document:
        """The document at `url` (see the module docstring for the order of sources). `bundled` names a file in
        services/data/. `source` names the upstream in `/iwm status` (default: the URL's host). Raises
        DocumentUnavailable when no source has it."""
        key = url_key(url, params)
        if not self.live:
            return self._bundled(key, bundled, stale=False, why="offline")
        host = urlsplit(url).netloc
        live = partial(self._live, key, url, params or {}, validate, source or host)
        return await self._cache.get(key, live, partial(self._fallback, key, host, bundled), ttl=ttl)

    async def _live(self, key: str, url: str, params: dict[str, str], validate: Validator | None,
                    source: str) -> Stamped[Document]:
        assert self.session is not None
        session = self.session

        async def fetch() -> str:
            text = await get_text(session, url, params, self.timeout)
            if validate is not None:
                try:
                    await asyncio.to_thread(validate, text)  # parsing a large CSV should not block the loop
                except (ValueError, ProviderError) as exc:
                    raise ProviderError(f"unusable body: {exc}", retryable=False) from exc
            return text

        try:
            deadline = None if self.deadline is None else asyncio.get_running_loop().time() + self.deadline
            text = await guarded(self.sources.register(source, DOCUMENTS), fetch, self.retry, self.clock, key=key,
                                 deadline=deadline)
        except Resting:
            raise
        except ProviderError as exc:
            log.warning("document %s failed: %s", key, exc)
            raise
        now = self.clock()
        return now, Document(key, text, "live", url, datetime.fromtimestamp(now, UTC))

    async def _fallback(self, key: str, host: str, bundled: str | None, cached: Stamped[Document] | None,
                        error: ProviderError) -> Document:
        why = f"{host} {error}" if isinstance(error, Resting) else str(error)
        if cached:
            return replace(cached[1], source="cache", stale=True, note=f"live fetch failed ({why}); cached copy")
        return self._bundled(key, bundled, stale=True, why=f"live fetch failed ({why})")

    @staticmethod
    def _bundled(key: str, bundled: str | None, *, stale: bool, why: str) -> Document:
        if bundled is None:
            raise DocumentUnavailable(f"{why}; no cached or bundled copy of {key}")
        return Document(key, bundled_text(bundled), "bundled", None, None, stale=stale, note=f"{why}; bundled copy")


def build_documents(settings: Any, session: aiohttp.ClientSession | None, database: Database | None,
                    sources: Sources | None = None) -> Documents:
    """Documents for the settings: offline (bundled files only) when the provider is "bundled". `sources`: the
    registry the market data's providers are in, so `/iwm status` lists both."""
    live = session if settings.provider != "bundled" else None
    return Documents(live, database=database, ttl=settings.cache_ttl_seconds, timeout=settings.http_timeout_seconds,
                     sources=sources, deadline=settings.fetch_deadline_seconds)

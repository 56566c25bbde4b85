"""Text documents over HTTP (FRED CSVs, iShares holdings, Yahoo quoteSummary JSON) with a SQLite cache.

Fresh cache -> no request. Otherwise one request per document at a time (single flight), retried with backoff;
a body the caller's validator rejects (HTML instead of CSV, garbage) counts as a failure. When the live fetch
fails: the last cached copy, else the bundled file, both marked stale. Offline (no session) the bundled file
is the source and is returned directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from services.market import ProviderError, ProviderHealth, _get_text, bundled_text, single_flight, with_retries
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
    ) -> None:
        self.session, self.database = session, database
        self.ttl, self.timeout, self.attempts, self.backoff, self.max_wait = ttl, timeout, attempts, backoff, max_wait
        self.clock = clock
        self._memo: dict[str, tuple[float, Document]] = {}
        self._inflight: dict[str, asyncio.Future[Document]] = {}
        self.health: dict[str, ProviderHealth] = {}  # per host: a host that keeps failing rests a while

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
    ) -> Document:
        """The document at `url` (see the module docstring for the order of sources). `bundled` names a file in
        services/data/. Raises DocumentUnavailable when no source has it."""
        key = url_key(url, params)
        if not self.live:
            return self._bundled(key, bundled, stale=False, why="offline")
        ttl = self.ttl if ttl is None else ttl
        memo = self._memo.get(key)
        if memo and self.clock() - memo[0] < ttl:
            return memo[1]
        return await single_flight(self._inflight, key,
                                   lambda: self._load(key, url, params or {}, bundled, validate, ttl))

    async def _load(self, key: str, url: str, params: dict[str, str], bundled: str | None,
                    validate: Validator | None, ttl: float) -> Document:
        cached = await self._read_cache(key)
        if cached and self.clock() - cached[0] < ttl:
            self._memo[key] = cached
            return cached[1]
        assert self.session is not None
        session = self.session

        async def fetch() -> str:
            text = await _get_text(session, url, params, self.timeout)
            if validate is not None:
                try:
                    await asyncio.to_thread(validate, text)  # parsing a large CSV should not block the loop
                except (ValueError, ProviderError) as exc:
                    raise ProviderError(f"unusable body: {exc}", retryable=False) from exc
            return text

        host = urlsplit(url).netloc
        health = self.health.setdefault(host, ProviderHealth(host))
        if not health.available(self.clock()):
            return self._fallback(key, cached, bundled, f"{host} resting after {health.failures} failures")
        try:
            text = await with_retries(fetch, self.attempts, self.backoff, self.max_wait)
        except ProviderError as exc:
            health.failed(self.clock(), str(exc))
            log.warning("document %s failed: %s", key, exc)
            return self._fallback(key, cached, bundled, str(exc))
        health.succeeded(self.clock())
        now = self.clock()
        document = Document(key, text, "live", url, datetime.fromtimestamp(now, UTC))
        await self._write_cache(document, now)
        self._memo[key] = (now, document)
        return document

    def _fallback(self, key: str, cached: tuple[float, Document] | None, bundled: str | None, why: str) -> Document:
        if cached:
            return replace(cached[1], source="cache", stale=True, note=f"live fetch failed ({why}); cached copy")
        return self._bundled(key, bundled, stale=True, why=f"live fetch failed ({why})")

    @staticmethod
    def _bundled(key: str, bundled: str | None, *, stale: bool, why: str) -> Document:
        if bundled is None:
            raise DocumentUnavailable(f"{why}; no cached or bundled copy of {key}")
        return Document(key, bundled_text(bundled), "bundled", None, None, stale=stale, note=f"{why}; bundled copy")

    async def _read_cache(self, key: str) -> tuple[float, Document] | None:
        if self.database is None:
            return None

        row = await self.database.cached_row("documents_cache", "key", key)
        if row is None:
            return None
        fetched = datetime.fromtimestamp(row["fetched_at"], UTC)
        return row["fetched_at"], Document(key, row["text"], "live", row["url"], fetched)

    async def _write_cache(self, document: Document, now: float) -> None:
        if self.database is None:
            return
        row = {"key": document.key, "url": document.url, "fetched_at": now, "text": document.text}
        await self.database.cache_row("documents_cache", "key", row)


def build_documents(settings: Any, session: aiohttp.ClientSession | None, database: Database | None) -> Documents:
    """Documents for the settings: offline (bundled files only) when the provider is "bundled"."""
    live = session if settings.provider != "bundled" else None
    return Documents(live, database=database, ttl=settings.cache_ttl_seconds, timeout=settings.http_timeout_seconds)

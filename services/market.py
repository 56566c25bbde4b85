"""Daily bars for any symbol: providers (Yahoo, Stooq, bundled), a SQLite cache, retries and stale fallback.

A bar frame has a tz-naive DatetimeIndex of trading days and float columns
open, high, low, close (traded, split-adjusted), adj_close (split + dividend adjusted) and volume.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import io
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import partial
from importlib import resources
from typing import Any, Protocol, TypeVar

import aiohttp
import pandas as pd

from services.errors import InputError
from services.storage import Database

log = logging.getLogger(__name__)

COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
T = TypeVar("T")


@dataclass(frozen=True)
class Bars:
    symbol: str
    frame: pd.DataFrame
    source: str
    stale: bool = False
    note: str = ""

    @property
    def as_of(self) -> date:
        return self.frame.index[-1].date()

    def check_as_of(self, day: date | None) -> None:
        """InputError when a command is asked about a day these bars do not cover: before the first bar or after
        the latest (None, the latest data, is always covered). A day between bars means the bar before it."""
        if day is None:
            return
        first = self.frame.index[0].date()
        if day < first:
            raise InputError(f"as_of {day} is before the first {self.symbol} bar ({first})")
        if day > self.as_of:
            raise InputError(f"as_of {day} is after the latest {self.symbol} bar ({self.as_of}, source {self.source})")

    def until(self, day: date | None) -> Bars:
        """Only the bars up to and including `day` (all of them when `day` is None); see `check_as_of`."""
        if day is None:
            return self
        return replace(self, frame=self.frame.loc[: pd.Timestamp(day)])


def stale_prices_note(bars: Iterable[Bars]) -> str | None:
    """The note an answer shows when some of its prices are a stale fallback; None when none is."""
    stale = [b for b in bars if b.stale]
    if not stale:
        return None
    return f"Prices for {', '.join(b.symbol for b in stale)} are a stale fallback: {stale[0].note}"[:300]


class ProviderError(Exception):
    """An upstream answer we cannot use. `retry_after` is the server's wish in seconds, when it said one."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class UnknownSymbol(ProviderError):
    def __init__(self, symbol: str) -> None:
        super().__init__(f"no data for symbol {symbol!r}", retryable=False)


class Provider(Protocol):
    name: str

    async def fetch(self, symbol: str) -> pd.DataFrame: ...


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in the standard order, float, sorted unique dates, rows without any price dropped."""
    frame = frame.reindex(columns=COLUMNS).astype("float64")
    frame.index = pd.DatetimeIndex(frame.index).normalize()
    frame.index.name = "date"
    frame = frame[~frame.index.duplicated(keep="last")].sort_index()
    return frame.dropna(subset=["close", "adj_close"], how="all")


# --- bundled ----------------------------------------------------------------------------------------------

def data_file(name: str) -> io.BytesIO:
    """A bundled data file (see services/data/SOURCES.md), decompressed."""
    raw = resources.files("services").joinpath("data", name).read_bytes()
    return io.BytesIO(gzip.decompress(raw) if name.endswith(".gz") else raw)


@functools.cache
def bundled_text(name: str) -> str:
    """A bundled file's text (BOM dropped), read once per process: package data never changes while the bot runs."""
    return data_file(name).read().decode("utf-8-sig")


def read_bundled_csv(symbol: str) -> pd.DataFrame:
    name = f"{symbol.upper().lstrip('^')}.csv.gz"
    try:
        fh = data_file(name)
    except FileNotFoundError as exc:
        raise UnknownSymbol(symbol) from exc
    frame = pd.read_csv(fh, index_col="date", parse_dates=["date"])
    return normalise(frame)


class BundledProvider:
    """Real daily history shipped with the bot: the offline default and the last-resort fallback."""

    name = "bundled"

    def __init__(self) -> None:
        self._frames: dict[str, pd.DataFrame] = {}

    async def fetch(self, symbol: str) -> pd.DataFrame:
        key = symbol.upper()
        if key not in self._frames:
            self._frames[key] = await asyncio.to_thread(read_bundled_csv, key)
        return self._frames[key]


# --- live providers ---------------------------------------------------------------------------------------

async def _get_text(session: aiohttp.ClientSession, url: str, params: dict[str, str], timeout: float) -> str:
    try:
        async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.text(errors="replace")
            if resp.status == 429 or resp.status >= 500:
                retry_after = resp.headers.get("Retry-After")
                raise ProviderError(
                    f"HTTP {resp.status}",
                    retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
                )
            if resp.status >= 400:
                raise ProviderError(f"HTTP {resp.status}", retryable=False)
            return body
    except TimeoutError as exc:
        raise ProviderError(f"timed out after {timeout:g}s") from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(f"connection failed: {type(exc).__name__}") from exc


class YahooProvider:
    """Yahoo's public chart API: /v8/finance/chart/{symbol}?range=max&interval=1d."""

    name = "yahoo"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float = 10.0) -> None:
        self.session, self.base_url, self.timeout = session, base_url.rstrip("/"), timeout

    async def fetch(self, symbol: str) -> pd.DataFrame:
        url = f"{self.base_url}/v8/finance/chart/{symbol}"
        params = {"range": "max", "interval": "1d", "includeAdjustedClose": "true", "events": "div,split"}
        return parse_yahoo_chart(await _get_text(self.session, url, params, self.timeout), symbol)


def parse_yahoo_chart(body: str, symbol: str) -> pd.DataFrame:
    try:
        chart = json.loads(body)["chart"]
        if chart.get("error"):
            raise UnknownSymbol(symbol)
        result = chart["result"][0]
        tz = result["meta"].get("exchangeTimezoneName", "America/New_York")
        quote = result["indicators"]["quote"][0]
        adj = (result["indicators"].get("adjclose") or [{}])[0].get("adjclose", quote["close"])
        index = pd.to_datetime(result["timestamp"], unit="s", utc=True).tz_convert(tz).tz_localize(None)
        frame = pd.DataFrame(
            {
                "open": quote["open"], "high": quote["high"], "low": quote["low"],
                "close": quote["close"], "adj_close": adj, "volume": quote["volume"],
            },
            index=index,
            dtype="float64",
        )
    except ProviderError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ProviderError(f"malformed chart body: {type(exc).__name__}") from exc
    frame = normalise(frame)
    if frame.empty:
        raise ProviderError("chart body has no bars")
    return frame


class StooqProvider:
    """Stooq's daily CSV download (needs an API key since 2026). Its prices are split- and dividend-adjusted."""

    name = "stooq"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str, timeout: float = 10.0):
        self.session, self.base_url, self.api_key, self.timeout = session, base_url.rstrip("/"), api_key, timeout

    async def fetch(self, symbol: str) -> pd.DataFrame:
        code = symbol.lower().lstrip("^") if symbol.startswith("^") else f"{symbol.lower()}.us"
        params = {"s": code, "i": "d", "apikey": self.api_key}
        return parse_stooq_csv(await _get_text(self.session, f"{self.base_url}/q/d/l/", params, self.timeout),
                               symbol)


def parse_stooq_csv(body: str, symbol: str) -> pd.DataFrame:
    head = body.lstrip()[:200].lower()
    if head.startswith("no data"):
        raise UnknownSymbol(symbol)
    if not head.startswith("date,open,high,low,close"):
        raise ProviderError(f"malformed CSV body: starts {body.strip()[:40]!r}")
    try:
        raw = pd.read_csv(io.StringIO(body), parse_dates=["Date"], index_col="Date")
        frame = raw.rename(columns=str.lower).assign(adj_close=raw["Close"])
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise ProviderError(f"malformed CSV body: {type(exc).__name__}") from exc
    frame = normalise(frame)
    if frame.empty:
        raise ProviderError("CSV body has no bars")
    return frame


# --- the service ------------------------------------------------------------------------------------------

async def single_flight(inflight: dict[str, asyncio.Future[T]], key: str, load: Callable[[], Awaitable[T]]) -> T:
    """`await load()` once for concurrent callers with the same key: the rest await its result (or its error)."""
    if key in inflight:
        return await asyncio.shield(inflight[key])
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    inflight[key] = future
    try:
        result = await load()
        future.set_result(result)
        return result
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # mark retrieved: waiters re-raise it themselves
        raise
    finally:
        del inflight[key]


async def with_retries(call: Callable[[], Awaitable[T]], attempts: int, backoff: float, max_wait: float) -> T:
    """`await call()`, retrying a retryable ProviderError up to `attempts` times in all: the server's Retry-After
    when it gave one, else exponential backoff from `backoff` seconds, capped at `max_wait`, with 10% jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except ProviderError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            delay = exc.retry_after if exc.retry_after is not None else backoff * 2 ** (attempt - 1)
            await asyncio.sleep(min(delay, max_wait) * (1 + random.random() * 0.1))
    raise AssertionError("unreachable")


@dataclass
class ProviderHealth:
    """A small circuit breaker: after `threshold` failures in a row the provider rests for `cooldown` seconds,
    then one request probes it again."""

    name: str
    threshold: int = 3
    cooldown: float = 60.0
    failures: int = 0
    opened_at: float | None = None
    last_error: str = ""
    last_success: float | None = None

    def available(self, now: float) -> bool:
        return self.opened_at is None or now - self.opened_at >= self.cooldown

    def succeeded(self, now: float) -> None:
        self.failures, self.opened_at, self.last_error, self.last_success = 0, None, "", now

    def failed(self, now: float, error: str) -> None:
        self.failures += 1
        self.last_error = error
        if self.failures >= self.threshold:
            self.opened_at = now

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"


class MarketData:
    """Bars with caching: fresh cache -> no call; otherwise one upstream call per symbol at a time (single
    flight), retried with backoff across the live providers in order; when they all fail, the last cached or
    bundled bars, marked stale. A provider whose latest bar is older than `expected_session()` counts as
    failing (it would otherwise serve yesterday's data forever); its bars are used, marked stale, only when
    nothing fresher exists."""

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        database: Database | None = None,
        bundled: BundledProvider | None = None,
        ttl: float = 900.0,
        attempts: int = 3,
        backoff: float = 0.5,
        max_wait: float = 10.0,
        clock: Callable[[], float] = time.time,
        expected_session: Callable[[], Awaitable[date]] | None = None,
    ) -> None:
        self.providers = list(providers)
        self.database = database
        self.bundled = bundled or BundledProvider()
        self.ttl, self.attempts, self.backoff, self.max_wait, self.clock = ttl, attempts, backoff, max_wait, clock
        self.expected_session = expected_session  # the last completed session: live bars older than it are stale
        self.health = {p.name: ProviderHealth(p.name) for p in self.providers}
        self._memo: dict[str, tuple[float, Bars]] = {}
        self._inflight: dict[str, asyncio.Future[Bars]] = {}

    @property
    def live(self) -> bool:
        return bool(self.providers)

    async def bars(self, symbol: str) -> Bars:
        symbol = symbol.upper()
        if not self.live:
            return Bars(symbol, await self.bundled.fetch(symbol), "bundled")
        memo = self._memo.get(symbol)
        if memo and self.clock() - memo[0] < self.ttl:
            return memo[1]
        return await single_flight(self._inflight, symbol, lambda: self._load(symbol))

    async def _load(self, symbol: str) -> Bars:
        cached = await self._read_cache(symbol)
        if cached and self.clock() - cached[0] < self.ttl:
            self._memo[symbol] = cached
            return cached[1]
        errors: list[str] = []
        lagging: Bars | None = None
        expected = await self.expected_session() if self.expected_session else None
        for provider in self.providers:
            health = self.health[provider.name]
            if not health.available(self.clock()):
                errors.append(f"{provider.name}: resting after {health.failures} failures")
                continue
            try:
                frame = await with_retries(partial(provider.fetch, symbol), self.attempts, self.backoff,
                                           self.max_wait)
                if expected is not None and frame.index[-1].date() < expected:
                    # Yesterday's data forever is a failure too: try the next provider, rest this one.
                    lagging = lagging or Bars(symbol, frame, provider.name)
                    raise ProviderError(f"latest bar {frame.index[-1].date()} is behind the last session {expected}")
            except ProviderError as exc:
                health.failed(self.clock(), str(exc))
                errors.append(f"{provider.name}: {exc}")
                log.warning("provider %s failed for %s: %s", provider.name, symbol, exc)
                continue
            health.succeeded(self.clock())
            bars = Bars(symbol, frame, provider.name)
            await self._write_cache(bars)
            self._memo[symbol] = (self.clock(), bars)
            return bars
        if lagging is not None and (cached is None or lagging.as_of >= cached[1].as_of):
            bars = replace(lagging, stale=True, note="; ".join(errors))
            self._memo[symbol] = (self.clock(), bars)  # for the TTL: the breaker decides when to ask again
            return bars
        return await self._fallback(symbol, cached, "; ".join(errors))

    async def _fallback(self, symbol: str, cached: tuple[float, Bars] | None, why: str) -> Bars:
        if cached:
            return replace(cached[1], stale=True, note=f"live data unavailable ({why}); cached copy")
        return Bars(symbol, await self.bundled.fetch(symbol), "bundled", stale=True,
                    note=f"live data unavailable ({why})")

    async def _read_cache(self, symbol: str) -> tuple[float, Bars] | None:
        if self.database is None:
            return None

        row = await self.database.cached_row("bars_cache", "symbol", symbol)
        if row is None:
            return None
        frame = pd.read_csv(io.StringIO(row["csv"]), index_col="date", parse_dates=["date"])
        return row["fetched_at"], Bars(symbol, normalise(frame), row["source"])

    async def _write_cache(self, bars: Bars) -> None:
        if self.database is None:
            return
        row = {"symbol": bars.symbol, "source": bars.source, "fetched_at": self.clock(),
               "as_of": bars.as_of.isoformat(), "csv": bars.frame.to_csv(float_format="%.6f")}
        await self.database.cache_row("bars_cache", "symbol", row)

    def status(self) -> list[dict[str, Any]]:
        """Each live provider's breaker state and the age of the newest cached bars (for `/iwm status`)."""
        now = self.clock()
        return [
            {"provider": h.name, "state": h.state, "failures": h.failures, "last_error": h.last_error,
             "last_success_age_s": None if h.last_success is None else now - h.last_success}
            for h in self.health.values()
        ] + [
            {"symbol": s, "source": b.source, "as_of": b.as_of.isoformat(), "age_s": now - t}
            for s, (t, b) in sorted(self._memo.items())
        ]


def build_providers(settings: Any, session: aiohttp.ClientSession) -> list[Provider]:
    """The live providers the settings ask for, in fallback order (empty: bundled data only)."""
    providers: list[Provider] = []
    if settings.provider == "yahoo":
        providers.append(YahooProvider(session, settings.yahoo_base_url, settings.http_timeout_seconds))
    if settings.provider in ("yahoo", "stooq") and settings.stooq_api_key:
        providers.append(StooqProvider(session, settings.stooq_base_url, settings.stooq_api_key,
                                       settings.http_timeout_seconds))
    return providers

"""Daily bars for any symbol: providers (Yahoo, Stooq, bundled), a SQLite cache, retries and stale fallback.

A bar frame has a tz-naive DatetimeIndex of trading days and float columns
open, high, low, close (traded, split-adjusted), adj_close (split + dividend adjusted) and volume.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import partial
from typing import Any, Protocol

import aiohttp
import pandas as pd

from services import market_calendar
from services.bundled import data_file
from services.errors import InputError
from services.http import (
    MARKET_DATA,
    CachedFetch,
    CacheTable,
    DeadlinePassed,
    NotFound,
    ProviderError,
    Resting,
    Retry,
    SourceHealth,
    Sources,
    Stamped,
    get_text,
    guarded,
)
from services.storage import Database

log = logging.getLogger(__name__)

COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]


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
        """InputError when a command is asked about a day these bars cannot answer: before the first bar or in
        the future. None (the latest data) is always answered; a day between bars means the bar before it, and a
        day after the latest bar (up to today) the latest bar, which the answer's `DataAge` then marks as behind."""
        if day is None:
            return
        first = self.frame.index[0].date()
        if day < first:
            raise InputError(f"as_of {day} is before the first {self.symbol} bar ({first})")
        if day > date.today():
            raise InputError(f"as_of {day} is in the future (the latest {self.symbol} bar is {self.as_of})")

    def until(self, day: date | None) -> Bars:
        """Only the bars up to and including `day` (all of them when `day` is None); see `check_as_of`."""
        if day is None:
            return self
        return replace(self, frame=self.frame.loc[: pd.Timestamp(day)])


@dataclass(frozen=True)
class DataAge:
    """How far the newest bar behind an answer is from the session it should have: `reference`, the last
    completed session (or, for an as-of answer, the last session on or before the day asked for)."""

    as_of: date
    reference: date
    behind: int  # sessions closed after `as_of` up to `reference`

    def describe(self) -> str | None:
        """`data ends 2026-10-05, 40 sessions behind the last close (2026-12-01)`; None when not behind."""
        if not self.behind:
            return None
        return (f"data ends {self.as_of}, {self.behind} session{'s' if self.behind != 1 else ''} behind "
                f"the last close ({self.reference})")


def stale_prices_note(bars: Iterable[Bars]) -> str | None:
    """The note an answer shows when some of its prices are a stale fallback; None when none is."""
    stale = [b for b in bars if b.stale]
    if not stale:
        return None
    return f"Prices for {', '.join(b.symbol for b in stale)} are a stale fallback: {stale[0].note}"[:300]


class UnknownSymbol(NotFound):
    """No bars for this symbol: counted against the symbol, never against the provider (see ProviderHealth)."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"no data for symbol {symbol!r}")


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

    def loaded(self) -> list[tuple[str, pd.DataFrame]]:
        """The frames read so far, by symbol."""
        return sorted(self._frames.items())

    async def fetch(self, symbol: str) -> pd.DataFrame:
        key = symbol.upper()
        if key not in self._frames:
            self._frames[key] = await asyncio.to_thread(read_bundled_csv, key)
        return self._frames[key]


# --- live providers ---------------------------------------------------------------------------------------

class YahooProvider:
    """Yahoo's public chart API: /v8/finance/chart/{symbol}?range=max&interval=1d."""

    name = "yahoo"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float = 10.0) -> None:
        self.session, self.base_url, self.timeout = session, base_url.rstrip("/"), timeout

    async def fetch(self, symbol: str) -> pd.DataFrame:
        url = f"{self.base_url}/v8/finance/chart/{symbol}"
        params = {"range": "max", "interval": "1d", "includeAdjustedClose": "true", "events": "div,split"}
        return parse_yahoo_chart(await get_text(self.session, url, params, self.timeout), symbol)


def parse_yahoo_chart(body: str, symbol: str) -> pd.DataFrame:
    try:
        chart = json.loads(body)["chart"]
        if chart.get("error"):
            raise UnknownSymbol(symbol)
        result = chart["result"][0]
        if not result.get("timestamp"):  # a well-formed chart without a single bar: nothing for this symbol
            raise UnknownSymbol(symbol)
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
    if frame.empty:  # bars without a single price
        raise UnknownSymbol(symbol)
    return frame


class StooqProvider:
    """Stooq's daily CSV download (needs an API key since 2026). Its prices are split- and dividend-adjusted."""

    name = "stooq"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str, timeout: float = 10.0):
        self.session, self.base_url, self.api_key, self.timeout = session, base_url.rstrip("/"), api_key, timeout

    async def fetch(self, symbol: str) -> pd.DataFrame:
        code = symbol.lower().lstrip("^") if symbol.startswith("^") else f"{symbol.lower()}.us"
        params = {"s": code, "i": "d", "apikey": self.api_key}
        return parse_stooq_csv(await get_text(self.session, f"{self.base_url}/q/d/l/", params, self.timeout),
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
    if frame.empty:  # the header alone: no bars for this symbol
        raise UnknownSymbol(symbol)
    return frame


# --- the service ------------------------------------------------------------------------------------------

class Behind(ProviderError):
    """A provider answered, but its latest bar is older than the last completed session."""

    def __init__(self, frame: pd.DataFrame, expected: date) -> None:
        # Not retryable: asking again at once gives the same bars. The next provider is tried instead.
        super().__init__(f"latest bar {frame.index[-1].date()} is behind the last session {expected}", retryable=False)
        self.frame = frame


class NoLiveBars(ProviderError):
    """Every live provider failed for a symbol. `lagging`: the first bars that failed only by being behind."""

    def __init__(self, why: str, lagging: Bars | None) -> None:
        super().__init__(why, retryable=False)
        self.lagging = lagging


async def current_frame(provider: Provider, symbol: str, expected: date | None) -> pd.DataFrame:
    """The provider's bars for `symbol`; Behind when they end before the `expected` session."""
    frame = await provider.fetch(symbol)
    if expected is not None and frame.index[-1].date() < expected:
        raise Behind(frame, expected)
    return frame


GAP_CHECK_DAYS = 120  # how far back a live answer is checked for missing sessions
GAP_RETRY_SECONDS = 60.0  # a live answer with a hole is asked again after this, not after the full TTL


def complete_history(live: pd.DataFrame, base: pd.DataFrame | None) -> tuple[pd.DataFrame, list[date]]:
    """The live bars extending the bundled `base`: base bars before the first live bar come first, and a recent
    session the live answer lacks is taken from the base when it has it. Returns the bars and the recent
    sessions still missing (the answer is then marked, and asked again soon). The base's adjusted closes are
    rescaled to the live ones on the last day both have (sources adjust from different dates); without such a
    day the base is not used."""
    common = (live["adj_close"].dropna().index.intersection(base["adj_close"].dropna().index)
              if base is not None else pd.DatetimeIndex([]))
    if base is not None and len(common):
        day = common[-1]
        base = base.assign(adj_close=base["adj_close"] * (live.at[day, "adj_close"] / base.at[day, "adj_close"]))
        older = base.loc[base.index < live.index[0]]
        holes = base.index.difference(live.index)
        patch = base.loc[holes[(holes > live.index[0]) & (holes < live.index[-1])]]
        live = pd.concat([older, patch, live]).sort_index() if len(older) or len(patch) else live
    since = (live.index[-1] - pd.Timedelta(days=GAP_CHECK_DAYS)).date()
    return live, market_calendar.missing_sessions(live.index, max(since, live.index[0].date()))


def _encode_bars(bars: Bars, fetched_at: float) -> dict[str, Any]:
    return {"symbol": bars.symbol, "source": bars.source, "fetched_at": fetched_at,
            "as_of": bars.as_of.isoformat(), "csv": bars.frame.to_csv(float_format="%.6f")}


def _decode_bars(symbol: str, row: dict[str, Any]) -> Bars:
    frame = pd.read_csv(io.StringIO(row["csv"]), index_col="date", parse_dates=["date"])
    return Bars(symbol, normalise(frame), row["source"])


BARS_CACHE = CacheTable("bars_cache", "symbol", _encode_bars, _decode_bars)


@dataclass(frozen=True)
class CachedSeries:
    """Bars in memory, as `/iwm status` shows them."""

    symbol: str
    source: str
    as_of: date
    age_s: float | None  # since they were fetched (or, for a stale answer, since it was given); None: bundled


@dataclass(frozen=True)
class MarketStatus:
    sources: list[SourceHealth]  # every source in the registry market data shares (documents' hosts too)
    series: list[CachedSeries]


class MarketData:
    """Bars with caching: fresh cache -> no call; otherwise one upstream call per symbol at a time (single
    flight), retried with backoff across the live providers in order; when they all fail, the last cached or
    bundled bars, marked stale. A provider whose latest bar is older than `expected_session()` counts as
    failing (it would otherwise serve yesterday's data forever); its bars are used, marked stale, only when
    nothing fresher exists. Each provider's breaker is registered in `sources`. `deadline`: seconds one answer may
    spend on the live providers in all (retries included) before the stale answer goes out; None: no bound."""

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
        sources: Sources | None = None,
        deadline: float | None = None,
    ) -> None:
        self.providers = list(providers)
        self.deadline = deadline
        self.bundled = bundled or BundledProvider()
        self.retry, self.clock = Retry(attempts, backoff, max_wait), clock
        self.expected_session = expected_session  # the last completed session: live bars older than it are stale
        self.sources = sources or Sources(clock)
        self.health = {p.name: self.sources.register(p.name, MARKET_DATA) for p in self.providers}
        self._cache = CachedFetch(BARS_CACHE, database, ttl=ttl, clock=clock, deadline=deadline)

    @property
    def live(self) -> bool:
        return bool(self.providers)

    async def last_session(self) -> date:
        """The last completed NYSE session (`expected_session`, else the calendar's for now)."""
        if self.expected_session:
            return await self.expected_session()
        return await asyncio.to_thread(market_calendar.last_session_now)

    async def age(self, newest: date, asked: date | None = None) -> DataAge:
        """The age of an answer whose newest bar is `newest`, for the latest data (`asked` None) or as of the
        day asked for: the sessions it is behind the last one that has closed (by then)."""
        reference = await self.last_session()
        if asked is not None and asked < reference:
            reference = await asyncio.to_thread(market_calendar.session_on_or_before, asked)
        behind = await asyncio.to_thread(market_calendar.sessions_behind, newest, reference)
        return DataAge(newest, reference, behind)

    async def bars(self, symbol: str) -> Bars:
        symbol = symbol.upper()
        if not self.live:
            return Bars(symbol, await self.bundled.fetch(symbol), "bundled")
        return await self._cache.get(symbol, partial(self._live, symbol), partial(self._fallback, symbol))

    async def cached_bars(self, symbol: str) -> Bars:
        """The bars in memory, asking no provider (autocomplete has 3 seconds): the live copy last fetched,
        else the bundled history."""
        symbol = symbol.upper()
        remembered = dict(self._cache.remembered())
        if symbol in remembered:
            return remembered[symbol][1]
        return Bars(symbol, await self.bundled.fetch(symbol), "bundled")

    async def _live(self, symbol: str) -> Stamped[Bars]:
        errors: list[str] = []
        lagging: Bars | None = None
        deadline = None if self.deadline is None else asyncio.get_running_loop().time() + self.deadline
        expected = await self.expected_session() if self.expected_session else None
        for provider in self.providers:
            try:
                frame = await guarded(self.health[provider.name], partial(current_frame, provider, symbol, expected),
                                      self.retry, self.clock, key=symbol, deadline=deadline)
            except ProviderError as exc:
                errors.append(f"{provider.name}: {exc}")
                if isinstance(exc, Behind):  # yesterday's data forever is a failure too: try the next provider
                    lagging = lagging or Bars(symbol, exc.frame, provider.name)
                if not isinstance(exc, Resting | DeadlinePassed):
                    log.warning("provider %s failed for %s: %s", provider.name, symbol, exc)
                continue
            return await self._completed(symbol, frame, provider.name)
        raise NoLiveBars("; ".join(errors), lagging)

    async def _completed(self, symbol: str, frame: pd.DataFrame, source: str) -> Stamped[Bars]:
        """Live bars on the bundled base (see `complete_history`). Sessions still missing are said in the note and
        the bars count as fresh for GAP_RETRY_SECONDS only, so the next answer asks the provider again."""
        try:
            base: pd.DataFrame | None = await self.bundled.fetch(symbol)
        except UnknownSymbol:
            base = None
        frame, missing = await asyncio.to_thread(complete_history, frame, base)
        if not missing:
            return self.clock(), Bars(symbol, frame, source)
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        shown = ", ".join(str(day) for day in missing[:3]) + more
        log.warning("%s answer for %s lacks sessions %s", source, symbol, shown)
        stamp = self.clock() - self._cache.ttl + GAP_RETRY_SECONDS
        return stamp, Bars(symbol, frame, source, stale=True, note=f"{source}'s answer lacks {shown}")

    async def _fallback(self, symbol: str, cached: Stamped[Bars] | None, error: ProviderError) -> Bars:
        why = str(error)
        lagging = error.lagging if isinstance(error, NoLiveBars) else None
        if lagging is not None and (cached is None or lagging.as_of >= cached[1].as_of):
            bars = replace(lagging, stale=True, note=why)
            self._cache.remember(symbol, bars)  # for the TTL: the breaker decides when to ask again
            return bars
        if cached:
            return replace(cached[1], stale=True, note=f"live data unavailable ({why}); cached copy")
        return Bars(symbol, await self.bundled.fetch(symbol), "bundled", stale=True,
                    note=f"live data unavailable ({why})")

    def status(self) -> MarketStatus:
        """Every registered source's breaker and the bars in memory with their age (for `/iwm status`)."""
        now = self.clock()
        return MarketStatus(self.sources.status(), [
            CachedSeries(symbol, bars.source, bars.as_of, now - fetched_at)
            for symbol, (fetched_at, bars) in self._cache.remembered()
        ] + [CachedSeries(symbol, "bundled", frame.index[-1].date(), None)
             for symbol, frame in self.bundled.loaded() if not self.live])


def build_providers(settings: Any, session: aiohttp.ClientSession) -> list[Provider]:
    """The live providers the settings ask for, in fallback order (empty: bundled data only)."""
    providers: list[Provider] = []
    if settings.provider == "yahoo":
        providers.append(YahooProvider(session, settings.yahoo_base_url, settings.http_timeout_seconds))
    if settings.provider in ("yahoo", "stooq") and settings.stooq_api_key:
        providers.append(StooqProvider(session, settings.stooq_base_url, settings.stooq_api_key,
                                       settings.http_timeout_seconds))
    return providers

"""How upstream data comes in, for market data and documents alike.

`get_text` makes one GET (`get_cookies` one that only sets cookies); `with_retries` retries it with backoff;
`ProviderHealth` is a source's circuit breaker and `Sources` the registry of every source's breaker (what
`/iwm status` lists); `guarded` puts a call through both, within an answer's deadline. `CachedFetch` is the flow
around them: memo -> database cache -> single flight -> lease across processes -> live fetch -> stale fallback.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp

from services.lease import Lease, Leases
from services.storage import Database

T = TypeVar("T")
Stamped = tuple[float, T]  # (fetched_at, value): a value with the clock time it was fetched

MARKET_DATA, DOCUMENTS = "market data", "documents"  # the kinds of source in the registry


class ProviderError(Exception):
    """An upstream answer we cannot use. `retry_after` is the server's wish in seconds, when it said one."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status  # the HTTP status, when the server answered


class NotFound(ProviderError):
    """The source answered that it has nothing for this key (HTTP 404/410, an unknown symbol, a chart without bars):
    not a fault of the source, so it counts against the key only, never against the source's breaker."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class Resting(ProviderError):
    """The source's breaker (or the key's) is open, or another request is probing it: no request was made."""

    def __init__(self, failures: int, what: str = "") -> None:
        super().__init__(f"{what}resting after {failures} failures", retryable=False)


class DeadlinePassed(ProviderError):
    """The answer's deadline passed before this source was tried: no request was made, nothing recorded."""

    def __init__(self) -> None:
        super().__init__("no time left before the deadline", retryable=False)


# --- one request, retried -----------------------------------------------------------------------------------

async def get_text(session: aiohttp.ClientSession, url: str, params: dict[str, str], timeout: float,
                   headers: dict[str, str] | None = None) -> str:
    """The body of a GET. 429 and 5xx are retryable ProviderErrors (with the server's Retry-After), other 4xx are
    not; a timeout or a connection failure is a retryable ProviderError too."""
    try:
        async with session.get(url, params=params, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.text(errors="replace")
            if resp.status == 429 or resp.status >= 500:
                retry_after = resp.headers.get("Retry-After")
                raise ProviderError(
                    f"HTTP {resp.status}", status=resp.status,
                    retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
                )
            if resp.status in (404, 410):
                raise NotFound(f"HTTP {resp.status}")
            if resp.status >= 400:
                raise ProviderError(f"HTTP {resp.status}", retryable=False, status=resp.status)
            return body
    except TimeoutError as exc:
        raise ProviderError(f"timed out after {timeout:g}s") from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(f"connection failed: {type(exc).__name__}") from exc


async def get_cookies(session: aiohttp.ClientSession, url: str, timeout: float) -> dict[str, str]:
    """The cookies a GET sets, whatever its status (a cookie-setting page may well answer 404); a timeout or a
    connection failure is a retryable ProviderError."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            await resp.read()
            if resp.status == 429 or resp.status >= 500:
                raise ProviderError(f"HTTP {resp.status}", status=resp.status)
            return {name: morsel.value for name, morsel in resp.cookies.items()}
    except TimeoutError as exc:
        raise ProviderError(f"timed out after {timeout:g}s") from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(f"connection failed: {type(exc).__name__}") from exc


async def with_retries(call: Callable[[], Awaitable[T]], attempts: int, backoff: float, max_wait: float,
                       deadline: float | None = None) -> T:
    """`await call()`, retrying a retryable ProviderError up to `attempts` times in all: the server's Retry-After
    when it gave one, else exponential backoff from `backoff` seconds, capped at `max_wait`, with 10% jitter. A wait
    that would end after `deadline` (event-loop time) is not waited: the last error is raised at once."""
    loop = asyncio.get_running_loop()
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except ProviderError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            delay = exc.retry_after if exc.retry_after is not None else backoff * 2 ** (attempt - 1)
            wait = min(delay, max_wait) * (1 + random.random() * 0.1)
            if deadline is not None and loop.time() + wait >= deadline:
                raise
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Retry:
    """How hard one source is tried per request (see with_retries)."""

    attempts: int = 3
    backoff: float = 0.5
    max_wait: float = 10.0


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


# --- sources' health ----------------------------------------------------------------------------------------

KEYS_KEPT = 1024  # keys whose "not found" answers a breaker remembers (the oldest are forgotten first)


@dataclass
class ProviderHealth:
    """A small circuit breaker with a half-open state. After `threshold` source faults in a row (timeouts, 429, 5xx,
    garbage) the source rests for `cooldown` seconds; then exactly one request, one attempt, probes it while every
    other caller gets Resting (and so the stale answer); the probe's success closes the breaker, its failure opens it
    for another cool-down. A key the source keeps answering "not found" for (an unknown symbol) rests the same way
    on its own, and the source stays closed for every other key."""

    name: str
    threshold: int = 3
    cooldown: float = 60.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    last_error: str = ""
    last_success: float | None = None
    keys: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)  # key -> (not founds, last at)

    def admit(self, now: float, key: str | None = None) -> bool:
        """May a request go out now? False: yes, as usual; True: yes, as the one probe of a half-open breaker (one
        attempt; call `probe_done` after it). Raises Resting when the source or the key rests."""
        if key is not None and key in self.keys:
            count, last = self.keys[key]
            if count >= self.threshold and now - last < self.cooldown:
                raise Resting(count, f"{key}: ")
        if self.opened_at is None:
            return False
        if self.probing or now - self.opened_at < self.cooldown:
            raise Resting(self.failures)
        self.probing = True
        return True

    def probe_done(self) -> None:
        """The probe ended (recorded by `succeeded`/`failed`, or cancelled): the next caller may probe."""
        self.probing = False

    def succeeded(self, now: float, key: str | None = None) -> None:
        self.failures, self.opened_at, self.last_error, self.last_success = 0, None, "", now
        if key is not None:
            self.keys.pop(key, None)

    def failed(self, now: float, error: str) -> None:
        """A source fault: counted; the threshold reached (or a failed probe) opens the breaker from `now`."""
        self.failures += 1
        self.last_error = error
        if self.failures >= self.threshold:
            self.opened_at = now

    def not_found(self, now: float, key: str | None, error: str) -> None:
        """The source answered, with nothing for `key`: the source is up (its faults in a row start again), the key
        counts a failure."""
        self.failures, self.opened_at, self.last_error = 0, None, error
        if key is None:
            return
        count = self.keys.pop(key, (0, now))[0] + 1
        self.keys[key] = (count, now)
        while len(self.keys) > KEYS_KEPT:
            self.keys.popitem(last=False)

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"


@dataclass(frozen=True)
class SourceHealth:
    """One source's breaker as `/iwm status` shows it."""

    name: str
    kind: str  # MARKET_DATA or DOCUMENTS
    state: str  # "closed" (answering) or "open" (resting after failures)
    failures: int
    last_error: str
    last_success_age_s: float | None  # None: no success yet


class Sources:
    """Every live source's breaker, by name, in the order they were first used: market data registers its providers,
    documents their hosts, and `/iwm status` lists them all."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._entries: dict[str, tuple[str, ProviderHealth]] = {}

    def register(self, name: str, kind: str) -> ProviderHealth:
        """The breaker of source `name` (made the first time)."""
        if name not in self._entries:
            self._entries[name] = (kind, ProviderHealth(name))
        return self._entries[name][1]

    def status(self) -> list[SourceHealth]:
        now = self.clock()
        return [
            SourceHealth(h.name, kind, h.state, h.failures, h.last_error,
                         None if h.last_success is None else now - h.last_success)
            for kind, h in self._entries.values()
        ]


async def guarded(health: ProviderHealth, call: Callable[[], Awaitable[T]], retry: Retry,
                  clock: Callable[[], float], *, key: str | None = None, deadline: float | None = None) -> T:
    """`await call()` with retries through the source's breaker (see ProviderHealth): while it rests, Resting and no
    request; a probe makes one attempt. The outcome is recorded in `health`: NotFound against `key` only, any other
    failure against the source. `deadline` (event-loop time) ends the retries and the attempt in flight: a source that
    has not answered by then has failed (DeadlinePassed, with nothing recorded, when it comes before the first try)."""
    loop = asyncio.get_running_loop()
    if deadline is not None and loop.time() >= deadline:
        raise DeadlinePassed()
    probe = health.admit(clock(), key)
    attempts = 1 if probe else retry.attempts
    try:
        async with asyncio.timeout_at(deadline):
            result = await with_retries(call, attempts, retry.backoff, retry.max_wait, deadline)
    except NotFound as exc:
        health.not_found(clock(), key, str(exc))
        raise
    except ProviderError as exc:
        health.failed(clock(), str(exc))
        raise
    except TimeoutError as exc:  # the deadline, not a request's own timeout (get_text makes that a ProviderError)
        error = ProviderError("no answer before the deadline")
        health.failed(clock(), str(error))
        raise error from exc
    finally:
        if probe:
            health.probe_done()
    health.succeeded(clock(), key)
    return result


# --- the flow around them -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheTable(Generic[T]):
    """How values of one kind sit in their cache table: one row per key, with a `fetched_at` column."""

    name: str
    key: str  # the key column
    encode: Callable[[T, float], dict[str, Any]]  # (value, fetched_at) -> row
    decode: Callable[[str, dict[str, Any]], T]  # (key, row) -> value


Live = Callable[[], Awaitable[Stamped[T]]]
Fallback = Callable[[Stamped[T] | None, ProviderError], Awaitable[T]]


WAIT_SECONDS = 8.0  # how long a process waits for another's fetch when no deadline is given (FETCH_DEADLINE_SECONDS')
LEASE_POLL = 0.05  # seconds between a waiting process's looks at another's lease


class CachedFetch(Generic[T]):
    """Values by key through a memo and a database cache: a fresh memo or cached row answers without a request;
    otherwise one `live()` per key at a time (single flight), stored on success; when it fails, `fallback(cached,
    error)` answers (from the expired cached copy, a bundled file, ...).

    On PostgreSQL, shared by several processes, a process fetches a key only under its lease (services.lease): the
    others wait, up to `deadline` seconds (the fetch's), for the holder's result to reach the shared cache and serve
    it: one upstream call per key and refresh however many processes ask. A holder whose fetch fails keeps the lease
    to its time with the error, and the waiters answer from `fallback` with that error, as in-process single flight
    shares it. The lease lasts half the deadline and is renewed while the holder works, so one that dies leaves it
    to lapse within half a deadline: a waiter takes it over and fetches (its answer may then take 1.5 deadlines).
    A waiter that sees none of these within the deadline answers from `fallback`."""

    def __init__(self, table: CacheTable[T], database: Database | None, *, ttl: float,
                 clock: Callable[[], float], deadline: float | None = None) -> None:
        self.table, self.database, self.ttl, self.clock = table, database, ttl, clock
        self.wait_seconds = WAIT_SECONDS if deadline is None else deadline
        self.lease_seconds = self.wait_seconds / 2
        self.leases = Leases(database)
        self._memo: dict[str, Stamped[T]] = {}
        self._inflight: dict[str, asyncio.Future[T]] = {}

    async def get(self, key: str, live: Live[T], fallback: Fallback[T], *, ttl: float | None = None) -> T:
        ttl = self.ttl if ttl is None else ttl
        memo = self._memo.get(key)
        if memo and self.clock() - memo[0] < ttl:
            return memo[1]
        return await single_flight(self._inflight, key, lambda: self._load(key, live, fallback, ttl))

    async def _load(self, key: str, live: Live[T], fallback: Fallback[T], ttl: float) -> T:
        cached = await self._read(key)
        if cached and self.clock() - cached[0] < ttl:
            self._memo[key] = cached
            return cached[1]
        lease: Lease | None = None
        if self.leases.enabled:
            lease, stored = await self._lease(key, cached)
            if isinstance(stored, ProviderError):
                return await fallback(cached, stored)
            if stored is not None:  # another process fetched it meanwhile
                self._memo[key] = stored
                return stored[1]
        try:
            async with self.leases.kept(lease, self.lease_seconds):
                try:
                    fetched = await live()
                except ProviderError as exc:
                    if lease is not None:  # the waiting processes share this failure
                        await self.leases.fail(lease, str(exc))
                        lease = None
                    return await fallback(cached, exc)
                await self._write(fetched)  # before the lease goes: a waiter that takes it then finds the row
        finally:
            if lease is not None:
                await self.leases.release(lease)
        self._memo[key] = fetched
        return fetched[1]

    async def _lease(self, key: str, cached: Stamped[T] | None) -> tuple[Lease | None,
                                                                         Stamped[T] | ProviderError | None]:
        """(the key's lease, None) when this process is to fetch; else (None, what another process left: a row
        newer than `cached`, or the error its fetch failed with, or that the lease did not come in time)."""
        name = f"{self.table.name}:{key}"
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.wait_seconds
        lease = await self.leases.take(name, self.lease_seconds)
        while lease is None:  # another process holds it: look (reads only) until it lets go, fails or lapses
            held, error = await self.leases.held(name)
            if error is not None:
                return None, ProviderError(f"fetched by another process: {error}", retryable=False)
            if loop.time() >= give_up:
                return None, ProviderError(f"another process is fetching {key}: no answer within "
                                           f"{self.wait_seconds:g}s", retryable=False)
            if held:
                await asyncio.sleep(LEASE_POLL)
            else:
                lease = await self.leases.take(name, self.lease_seconds)
        stamp = await self._stamp(key)  # read again under the lease: the last holder may have just let go
        if stamp is not None and (cached is None or stamp > cached[0]):
            stored = await self._read(key)
            await self.leases.release(lease)
            return None, stored
        return lease, None

    async def _stamp(self, key: str) -> float | None:
        """The cached row's `fetched_at` (None: no row), without reading the row."""
        assert self.database is not None
        sql = f"select fetched_at from {self.table.name} where {self.table.key} = ?"
        row = await self.database.run(lambda db: db.execute(sql, [key]).fetchone())
        return None if row is None else float(row[0])

    def remember(self, key: str, value: T) -> None:
        """Keep `value` in the memo for the TTL (not in the database cache): an answer not worth asking again soon."""
        self._memo[key] = (self.clock(), value)

    def remembered(self) -> list[tuple[str, Stamped[T]]]:
        """The memo by key: (key, (when, value))."""
        return sorted(self._memo.items(), key=lambda item: item[0])

    async def _read(self, key: str) -> Stamped[T] | None:
        if self.database is None:
            return None
        row = await self.database.cached_row(self.table.name, self.table.key, key)
        if row is None:
            return None
        return row["fetched_at"], self.table.decode(key, row)

    async def _write(self, fetched: Stamped[T]) -> None:
        if self.database is None:
            return
        await self.database.cache_row(self.table.name, self.table.key, self.table.encode(fetched[1], fetched[0]))

"""A local stand-in for upstream HTTP providers: an aiohttp server on 127.0.0.1 whose answers tests script.

Each route answers from a queue of `Reply`s (the last one repeats), and every request is recorded, so a test
can say "first a 429, then a 500, then the real body" and count the upstream calls.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Reply:
    status: int = 200
    body: str | bytes = ""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a timeout, when longer than the client's)
    hang: bool = False  # never answer: the request waits until the server closes (a provider that hangs)


class ProviderServer:
    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.handlers: dict[str, Callable[[web.Request], Reply | None]] = {}
        self.requests: list[web.Request] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(self.app, host="127.0.0.1")
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def script(self, path: str, *replies: Reply) -> None:
        """Answer requests to `path` with these replies in turn; the last one repeats."""
        self.replies[path] = list(replies)

    def handle(self, path: str, handler: Callable[[web.Request], Reply | None]) -> None:
        """Answer requests to `path` with `handler(request)` first; when it returns None, the scripted replies
        answer (for a server that checks what a request carries, e.g. a cookie and a crumb)."""
        self.handlers[path] = handler

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.calls[request.path] += 1
        handler = self.handlers.get(request.path)
        reply = handler(request) if handler else None
        queue = self.replies.get(request.path)
        if reply is None and not queue:
            return web.Response(status=404, text="not scripted")
        if reply is None:
            assert queue
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if reply.hang:
            await self._closing.wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        return web.Response(status=reply.status, body=body, headers={"Content-Type": reply.content_type,
                                                                       **reply.headers})

    async def __aenter__(self) -> ProviderServer:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # hanging requests end, so closing does not wait for them
        await self.server.close()


class Clock:
    """A clock a test moves by hand (`clock.now += 60`), for TTLs and circuit breakers."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


YAHOO_SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "yahoo_chart_v8.SPY.sample.json"


def yahoo_chart_body(frame: pd.DataFrame, symbol: str) -> str:
    """Daily bars (services.market's frame) as Yahoo's v8 chart API answers them, in the shape of the real sample
    (tests/fixtures/yahoo_chart_v8.SPY.sample.json): each bar stamped at 09:30 New York time, missing values
    null, the sample's meta with this symbol and the last bar's price."""
    sample = json.loads(YAHOO_SAMPLE.read_text())["chart"]["result"][0]
    opens = frame.index.tz_localize("America/New_York") + pd.Timedelta(hours=9, minutes=30)

    def column(name: str) -> list[float | None]:
        return [None if math.isnan(v) else v for v in frame[name].tolist()]

    last = frame.iloc[-1]
    meta = {**sample["meta"], "symbol": symbol, "regularMarketPrice": float(last["close"]),
            "regularMarketTime": int(opens[-1].timestamp()) + 23400, "regularMarketDayHigh": float(last["high"]),
            "regularMarketDayLow": float(last["low"]), "longName": symbol, "shortName": symbol}
    quote = {name: column(name) for name in ("open", "close", "high", "volume", "low")}
    result = {"meta": meta, "timestamp": [int(t.timestamp()) for t in opens],
              "indicators": {"quote": [quote], "adjclose": [{"adjclose": column("adj_close")}]}}
    return json.dumps({"chart": {"result": [result], "error": None}})


# a batch of symbols none of which Yahoo knows (HTTP 404)
SPARK_NOT_FOUND = json.dumps({"spark": {"result": None, "error": {"code": "Not Found",
                                                                    "description": "No data found for spark symbols"}}})


def yahoo_spark_body(closes: Mapping[str, pd.Series | None], range_: str = "1mo") -> str:
    """Daily closes as Yahoo's v7 spark answers a batch: `{"spark": {"result": [{"symbol", "response": [chart]}],
    "error": null}}`, one result per symbol of `closes` in turn (leave a symbol out for one Yahoo does not know: it
    is simply not there). Each chart is in the shape of the real v8 sample: its meta with this symbol, the last
    close, the range and a daily granularity; a timestamp per session at 09:30 New York time;
    `indicators.quote[0].close` with null where the close is NaN. A symbol given None has no bars in the range
    (a halted one): its chart is the meta and an empty quote, no timestamps."""
    sample = json.loads(YAHOO_SAMPLE.read_text())["chart"]["result"][0]["meta"]
    results = []
    for symbol, series in closes.items():
        meta = {**sample, "symbol": symbol, "longName": symbol, "shortName": symbol, "range": range_,
                "dataGranularity": "1d"}
        if series is None:
            results.append({"symbol": symbol, "response": [{"meta": meta, "indicators": {"quote": [{}]}}]})
            continue
        opens = pd.DatetimeIndex(series.index).tz_localize("America/New_York") + pd.Timedelta(hours=9, minutes=30)
        values = [None if math.isnan(v) else float(v) for v in series.tolist()]
        last = next((v for v in reversed(values) if v is not None), None)
        meta.update(regularMarketPrice=last, chartPreviousClose=values[0],
                    regularMarketTime=int(opens[-1].timestamp()) + 23400)
        results.append({"symbol": symbol, "response": [{
            "meta": meta, "timestamp": [int(t.timestamp()) for t in opens],
            "indicators": {"quote": [{"close": values}]}}]})
    return json.dumps({"spark": {"result": results, "error": None}})

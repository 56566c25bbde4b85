"""Yahoo's v7 quote bodies built from the bundled member fundamentals, for tests that script the provider server,
and Yahoo's session flow (cookie page, crumb, 401 "Invalid Crumb") on it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd
from aiohttp import web

from tests.support.member_files import dump_rows
from tests.support.provider_server import ProviderServer, Reply

RAW = dump_rows()  # the bundled fundamentals
PRICE = 50.0  # the quote's price is not in the dumps: shares = market cap / PRICE, EPS = net income / shares
KEYS = {"market_cap": "marketCap", "trailing_pe": "trailingPE", "forward_pe": "forwardPE",
        "price_to_book": "priceToBook", "price_to_sales": "priceToSalesTrailing12Months"}


def member_rows(dump: str) -> pd.DataFrame:
    """The bundled fundamentals of one dump, by symbol (the values a live refresh of that day should store)."""
    return RAW[RAW["dump"] == dump].set_index("symbol")


def quote_body(symbols: Sequence[str], dump: str) -> str:
    """A /v7/finance/quote body as Yahoo answers it: one result per known symbol (unknown ones left out, as Yahoo
    does), the usual identity and market fields, and a figure's key missing where Yahoo has no value (a loss maker
    has no trailingPE)."""
    rows = member_rows(dump)
    results = []
    for symbol in symbols:
        if symbol not in rows.index:
            continue
        row = rows.loc[symbol]
        quote: dict[str, object] = {
            "language": "en-US", "region": "US", "quoteType": "EQUITY", "typeDisp": "Equity",
            "quoteSourceName": "Nasdaq Real Time Price", "triggerable": True, "currency": "USD",
            "exchange": "NYQ", "market": "us_market", "marketState": "POST", "tradeable": False,
            "exchangeTimezoneName": "America/New_York", "exchangeTimezoneShortName": "EDT",
            "gmtOffSetMilliseconds": -14400000, "esgPopulated": False, "sourceInterval": 15,
            "exchangeDataDelayedBy": 0, "priceHint": 2, "shortName": symbol, "symbol": symbol,
        }
        for field, key in KEYS.items():
            value = float(row[field])
            if not math.isnan(value):
                quote[key] = int(value) if key == "marketCap" else value
        cap, ps, margin = float(row["market_cap"]), float(row["price_to_sales"]), float(row["profit_margin"])
        if not math.isnan(cap):
            quote["sharesOutstanding"] = shares = round(cap / PRICE)
            if not (math.isnan(ps) or math.isnan(margin)) and ps > 0:  # net income = margin x sales, sales = cap / P/S
                quote["epsTrailingTwelveMonths"] = margin * cap / ps / shares
        results.append(quote)
    return json.dumps({"quoteResponse": {"result": results, "error": None}})


COOKIE = "A3"
UNAUTHORIZED = json.dumps({"finance": {"result": None, "error": {"code": "Unauthorized",
                                                                   "description": "Invalid Crumb"}}})


class YahooSession:
    """Yahoo's session on the provider server, as the real one behaves: GET / (fc.yahoo.com) answers 404 with a
    Set-Cookie A3, GET /v1/test/getcrumb with that cookie answers the crumb as text/plain, and the quote endpoint
    answers 401 "Invalid Crumb" unless the request carries both. `expire()` makes the current crumb invalid (Yahoo
    rotates crumbs), so the next quote (or spark) request gets a 401 until a new crumb is fetched."""

    def __init__(self, server: ProviderServer,
                 paths: tuple[str, ...] = ("/v7/finance/quote", "/v7/finance/spark")) -> None:
        self.generation = 1
        self.cookie_url = f"{server.url}/"
        server.handle("/", self._cookie)
        server.handle("/v1/test/getcrumb", self._crumb)
        for path in paths:
            server.handle(path, self._quote)

    @property
    def crumb(self) -> str:
        return f"Crumb.{self.generation}x/Y"

    def expire(self) -> None:
        self.generation += 1

    def _cookie(self, request: web.Request) -> Reply:
        cookie = f"{COOKIE}=d=AQABBsession{self.generation}; Path=/; HttpOnly; SameSite=None; Secure"
        return Reply(status=404, body="<html>404</html>", content_type="text/html", headers={"Set-Cookie": cookie})

    def _has_cookie(self, request: web.Request) -> bool:
        return request.cookies.get(COOKIE, "").startswith("d=AQABBsession")

    def _crumb(self, request: web.Request) -> Reply:
        if not self._has_cookie(request):
            return Reply(status=401, body=UNAUTHORIZED)
        return Reply(body=self.crumb, content_type="text/plain")

    def _quote(self, request: web.Request) -> Reply | None:
        if not self._has_cookie(request) or request.query.get("crumb") != self.crumb:
            return Reply(status=401, body=UNAUTHORIZED)
        return None  # the scripted quote bodies answer

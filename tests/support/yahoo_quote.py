"""Yahoo's v7 quote bodies built from the bundled member fundamentals, for tests that script the provider server."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

DATA = Path(__file__).parents[2] / "services" / "data" / "members" / "fundamentals.csv.gz"
RAW = pd.read_csv(DATA, dtype={"symbol": str}).dropna(subset=["dump"])
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
        results.append(quote)
    return json.dumps({"quoteResponse": {"result": results, "error": None}})

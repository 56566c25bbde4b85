"""FRED series for /iwm rates: constants, parsing, fetching through the documents cache."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import pandas as pd

from services.config import Settings
from services.documents import Document, Documents, looks_like_html

FRED_BASE_URL = Settings.fred_base_url
MONTHLY = "FEDFUNDS"
DAILY = ("DFF", "DFEDTARU", "DFEDTARL", "DGS2", "DGS10")  # fetched in this order, after MONTHLY
BUNDLED_MONTHLY, BUNDLED_DAILY = "FEDFUNDS.monthly.csv.gz", "rates.daily.csv.gz"
LISTED_FIRST_CUTS = "fomc_first_cuts.csv"
WINDOWS = (3, 6, 12, 24)  # months after the first cut
CURVE_MONTHS = (3, 12)  # the 2s10s spread's change over these months
PAUSE_MONTHS = 3  # a cut after at least this long without a change (and no hike) is a resumption
STANCE_MONTHS = 6  # a change decided within this long of the latest observation: easing / tightening
STUDY_START = pd.Timestamp("2000-01-01")
RULE = ("first cut = the FOMC decision day of a cut whose previous target change was a hike; returns from that "
        "day's close")
RESUME_RULE = (f"a cut after ≥{PAUSE_MONTHS} months without a change and no hike between continues the cycle "
               "(listed as a resumption, not counted)")
SMALL_N_WARNING = ("Small sample: {n} since 2000, each with its own cause, too few to establish a pattern; the "
                   "mean, median and count describe these cycles only.")
CURVE_BACKGROUND = ("Background: regional banks (a large part of IWM's financials) fund short and lend long, so a "
                    "steeper curve tends to widen their margins and an inverted one to squeeze them.")


@dataclass(frozen=True)
class FredSeries:
    values: pd.Series  # by date (daily series: day; FEDFUNDS: first of the month), %
    document: Document  # where they came from: live, cached or bundled, and when


def parse_fred_csv(text: str, series_id: str) -> pd.Series:
    """A fredgraph.csv body (`observation_date,SERIES`, or the older `DATE` header) -> float Series by date;
    FRED's "." (no value) and empty cells are dropped. The bundled wide table (`date,DFF,DFEDTARL,...`) parses
    the same way, one column at a time. ValueError when the body is not such a CSV."""
    if looks_like_html(text):
        raise ValueError("HTML page instead of a FRED CSV")
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    header = [h.strip() for h in first.split(",")]
    if len(header) < 2 or header[0] not in ("observation_date", "DATE", "date") or series_id not in header[1:]:
        raise ValueError(f"not a FRED {series_id} CSV (header {first[:60]!r})")
    try:
        raw = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), dtype=str, skipinitialspace=True)
        values = pd.to_numeric(raw[series_id].str.strip().replace(".", None), errors="raise")
        index = pd.DatetimeIndex(pd.to_datetime(raw[header[0]], format="%Y-%m-%d"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed FRED CSV: {exc}") from exc
    series = pd.Series(values.to_numpy(dtype="float64"), index=index, name=series_id).dropna().sort_index()
    if series.empty:
        raise ValueError(f"FRED {series_id} CSV has no values")
    return series[~series.index.duplicated(keep="last")]


async def fred_series(documents: Documents, series_id: str, base_url: str = FRED_BASE_URL,
                      bundled: str | None = None) -> FredSeries:
    """A FRED series via the documents cache (bundled fallback when named). Raises DocumentUnavailable."""
    document = await documents.get(f"{base_url.rstrip('/')}/graph/fredgraph.csv", params={"id": series_id},
                                    bundled=bundled, validate=lambda text: parse_fred_csv(text, series_id),
                                    source="FRED")
    return FredSeries(await asyncio.to_thread(parse_fred_csv, document.text, series_id), document)



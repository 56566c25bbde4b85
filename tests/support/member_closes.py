"""Live member closes for tests: sessions after the bundled closes, whose closes replay the bundle's last ones,
served as Yahoo's spark bodies (tests/support/provider_server.yahoo_spark_body)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from services import market_calendar

MEMBERS = Path(__file__).parents[2] / "services" / "data" / "members"
CLOSES = np.load(MEMBERS / "closes.npy")
with np.load(MEMBERS / "members.npz") as _npz:
    DATES, SYMBOLS = _npz["dates"], [str(s) for s in _npz["symbols"]]
    IWM = sorted(str(s) for s in _npz["member"][_npz["in_iwm"]])
COLUMN = {s: i for i, s in enumerate(SYMBOLS)}
BUNDLE_END = date.fromisoformat(str(DATES[-1]))
LIVE = 20  # live sessions at most


def live_sessions(n: int = LIVE) -> list[date]:
    """The first `n` NYSE sessions after the bundled closes' last."""
    days = [market_calendar.next_session(BUNDLE_END)]
    while len(days) < n:
        days.append(market_calendar.next_session(days[-1]))
    return days


def full_iwm_members(k: int, rows: int = 260) -> list[str]:
    """The first `k` IWM members (by symbol) with a close on each of the bundle's last `rows` sessions."""
    found = [s for s in IWM if s in COLUMN and np.isfinite(CLOSES[-rows:, COLUMN[s]]).all()]
    return found[:k]


def truth(symbol: str, day: date) -> float:
    """The close of `symbol` on a bundled session, or on a live one: the bundle's close LIVE sessions before the
    bundle's end plus the live session's number (a replay of its last month)."""
    if day <= BUNDLE_END:
        row = int(np.searchsorted(DATES, np.datetime64(day, "D")))
    else:
        row = len(DATES) - LIVE + live_sessions().index(day)
    return float(CLOSES[row, COLUMN[symbol]])


def served(symbol: str, days: Sequence[date], scale: float = 1.0, missing: Sequence[date] = ()) -> pd.Series:
    """What one spark fetch serves for `symbol` over `days`: the closes in that fetch's basis (x `scale`, e.g. a
    split or the raw close against an adjusted one), NaN (null) on `missing` days."""
    values = [math.nan if d in missing else truth(symbol, d) * scale for d in days]
    return pd.Series(values, index=pd.DatetimeIndex(days))


"""Russell 2000 sector returns measured from the members: each holdings sector (Real Estate included, which no
sector fund covers) as the basket of its IWM members.

A sector's return from session s to session e is that of the holdings basket held unchanged: each member's fund
weight on the holdings date h, carried to s and e by its own adjusted close, so
return = sum(w * A(e) / A(h)) / sum(w * A(s) / A(h)) - 1 (a constant-shares portfolio, like an index between
rebalancings). Members without closes on s, e and h are left out; coverage is the share of the sector's fund
weight that is counted. Periods as `/iwm sectors`: 1 month, 3 months, year to date, 1 year back from the day,
from the last close on or before the calendar start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from services.members._data import MemberData
from services.sectors import PERIODS, period_start

ALL = "All members"
METHOD = ("Sector return = the basket of the sector's IWM members at their fund weights on the holdings date, "
          "held unchanged: sum(w * A(end) / A(holdings date)) / sum(w * A(start) / A(holdings date)) - 1, A = "
          "adjusted close (dividends reinvested); members without those closes are left out (see coverage).")


@dataclass(frozen=True)
class MemberSector:
    sector: str  # iShares holdings sector, or ALL
    weight: float  # % of IWM
    members: int  # IWM holdings in the sector
    returns: dict[str, float | None]  # period -> total return %, None: the closes do not reach the start
    coverage: dict[str, float]  # period -> share of the sector's fund weight counted, 0..1
    counted: dict[str, int]  # period -> members counted


@dataclass(frozen=True)
class MemberSectors:
    as_of: date  # the session the returns end on
    requested: date | None
    period_starts: dict[str, date | None]  # period -> the session returns are measured from (None: before the data)
    sectors: tuple[MemberSector, ...]  # largest weight first
    total: MemberSector  # every member together
    holdings_as_of: date
    source: str
    method: str
    caveat: str


def _start_row(data: MemberData, end: date, period: str) -> int | None:
    start = period_start(pd.Timestamp(end), period).date()
    return None if start < data.first_day else data.session(start)


def _sector(name: str, weights: np.ndarray, closes: np.ndarray, base: np.ndarray, end: int,
            starts: dict[str, int | None]) -> MemberSector:
    """One sector from its members' weights, closes (sessions x members; `end` and `starts` are rows of it) and
    closes on the holdings date."""
    returns: dict[str, float | None] = {}
    coverage: dict[str, float] = {}
    counted: dict[str, int] = {}
    for period, start in starts.items():
        if start is None:
            returns[period], coverage[period], counted[period] = None, 0.0, 0
            continue
        ok = np.isfinite(closes[start]) & np.isfinite(closes[end]) & np.isfinite(base)
        shares = weights[ok] / base[ok]
        value_end, value_start = float(np.sum(shares * closes[end, ok])), float(np.sum(shares * closes[start, ok]))
        returns[period] = (value_end / value_start - 1) * 100 if value_start > 0 else None  # 0: weightless
        coverage[period] = float(weights[ok].sum() / weights.sum())
        counted[period] = int(ok.sum())
    return MemberSector(name, float(weights.sum()), len(weights), returns, coverage, counted)


def _archived(data: MemberData) -> str:
    return ", archived" if data.holdings_source == "archived" else ""


def member_sectors(data: MemberData, as_of: date | None = None) -> MemberSectors:
    """Every holdings sector's return over PERIODS ending on the last session on or before `as_of` (default: the
    last close); InputError outside the closes."""
    end = data.session(as_of)
    end_day = data.day(end)
    starts = {p: _start_row(data, end_day, p) for p in PERIODS}
    base_row = data.session(min(data.holdings_as_of, data.as_of))  # an archived file newer than the closes
    rows = sorted({end, base_row, *(r for r in starts.values() if r is not None)})  # the sessions read
    at = {row: i for i, row in enumerate(rows)}
    iwm = data.members[data.members["in_iwm"]]
    position = {s: i for i, s in enumerate(data.symbols)}
    picked = np.asarray(data.closes[rows], dtype=np.float64)  # len(rows) x symbols
    column = np.array([position.get(s, -1) for s in iwm.index], dtype=np.intp)
    closes = np.where(column >= 0, picked[:, column], np.nan)  # a member without closes: NaN
    local = {p: None if r is None else at[r] for p, r in starts.items()}
    base = closes[at[base_row]]
    weights = iwm["weight"].to_numpy(dtype=float)
    sector = iwm["holdings_sector"].to_numpy()
    lines = []
    for name in iwm.groupby("holdings_sector")["weight"].sum().sort_values(ascending=False).index:
        mine = sector == name
        lines.append(_sector(str(name), weights[mine], closes[:, mine], base[mine], at[end], local))
    return MemberSectors(
        as_of=end_day, requested=as_of,
        period_starts={p: None if r is None else data.day(r) for p, r in starts.items()},
        sectors=tuple(lines), total=_sector(ALL, weights, closes, base, at[end], local),
        holdings_as_of=data.holdings_as_of,
        source=f"{data.closes_source}; iShares IWM holdings {data.holdings_as_of}{_archived(data)}",
        method=METHOD, caveat=data.survivorship(),
    )

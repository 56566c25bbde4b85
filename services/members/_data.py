"""The bundled member data: who is in IWM and the S&P 500, their Yahoo fundamentals, their daily closes.

Files in `services/data/members/` (built by `scripts/bundle_data.py`; sources in `services/data/SOURCES.md`,
section "Members"): `members.npz` (who is in IWM and the S&P 500, IWM weights and sectors from the bundled iShares
holdings file the membership was taken from, and the dates and symbols of the closes), `fundamentals.npz` (one row
per member and daily dump, as columns), `closes.npy` (adjusted closes as an uncompressed float32 dates x symbols
matrix, NaN where a member has no close) and `breadth.npz` (the breadth counts of those closes, see _breadth.py).

Loading takes a few milliseconds: the small files are read whole, the closes matrix is memory-mapped (its pages
are read as an answer touches them: breadth uses its precomputed counts, sector returns a few sessions). It is
done once per process, on first use, in whatever thread asks first: callers on the event loop use
`await asyncio.to_thread(load_member_data)`.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from services.bundled import data_path
from services.errors import InputError
from services.sectors import parse_holdings

MEMBERS_FILE = "members/members.npz"
FUNDAMENTALS_FILE = "members/fundamentals.npz"
CLOSES_FILE = "members/closes.npy"
INDEXES = {"IWM": "Russell 2000 (IWM holdings)", "SP500": "S&P 500"}
FIELDS = ("market_cap", "trailing_pe", "forward_pe", "price_to_book", "price_to_sales", "profit_margin")
FUNDAMENTALS_SOURCE = "Yahoo .info daily dumps (pacificsafetygroup-glitch/edge-scanner-data), bundled"
CLOSES_SOURCE = "adjusted daily closes (dsturdy/Factor_Attribution), bundled"
SURVIVORSHIP = ("Survivorship bias: the members are today's lists (IWM holdings of {holdings}, S&P 500 of 2026-08-08) "
                "applied to every past day, so companies that left the index, were acquired or went bust are missing "
                "and later entrants count only from their first close.")


def index_name(index: str) -> str:
    """The display name of "IWM" or "SP500"; InputError for anything else."""
    if index not in INDEXES:
        raise InputError(f"index {index!r}: choose one of {', '.join(INDEXES)}")
    return INDEXES[index]


@dataclass(frozen=True, eq=False)
class MemberData:
    members: pd.DataFrame  # index symbol (Yahoo form): in_iwm, in_sp500, weight (% of IWM), holdings_sector
    dumps: pd.DataFrame  # one row per member and dump: symbol, dump (date), sector (Yahoo's), FIELDS
    closes: np.ndarray  # float32, len(dates) x len(symbols), NaN where there is no close (bundled: mmap)
    dates: np.ndarray  # datetime64[D], sessions in order
    symbols: tuple[str, ...]  # the columns of `closes`
    holdings_as_of: date
    source: str
    fundamentals_source: str = FUNDAMENTALS_SOURCE  # where the newest fundamentals come from
    holdings_source: str = "bundled"  # "bundled" or "archived" (the database's holdings archive)
    notes: tuple[str, ...] = ()  # what a live snapshot carried over from the bundle
    closes_source: str = CLOSES_SOURCE  # where the closes come from (live closes appended: services.members._closes)

    @property
    def first_day(self) -> date:
        return _day(self.dates[0])

    @property
    def as_of(self) -> date:
        """The last close in the data."""
        return _day(self.dates[-1])

    @functools.cached_property
    def dump_dates(self) -> tuple[date, ...]:
        return tuple(sorted(set(self.dumps["dump"])))

    @functools.cached_property
    def fundamentals(self) -> pd.DataFrame:
        """One row per member: its row from the latest dump that has it (NaN, dump NaT, where none has)."""
        return self.snapshot()[1]

    def snapshot(self, as_of: date | None = None) -> tuple[date, pd.DataFrame]:
        """(the dump date used, one row per member from the latest dump on or before `as_of` that has it). The
        dumps are daily (some days missing), so a day without a dump uses the one before; InputError outside them."""
        days = self.dump_dates
        if as_of is not None and not days[0] <= as_of <= days[-1]:
            raise InputError(f"as_of {as_of}: member fundamentals exist only from {days[0]} to {days[-1]} "
                             f"(daily dumps: {', '.join(d.isoformat() for d in days)})")
        day = days[-1] if as_of is None else max(d for d in days if d <= as_of)
        rows = self.dumps[self.dumps["dump"] <= day].groupby("symbol").tail(1).set_index("symbol")
        return day, self.members.join(rows)

    def session(self, as_of: date | None = None) -> int:
        """The row of the last session on or before `as_of` (a weekend or holiday means the session before it);
        InputError when `as_of` is before the first close or after the last."""
        if as_of is None:
            return len(self.dates) - 1
        if not self.first_day <= as_of <= self.as_of:
            raise InputError(f"as_of {as_of} is outside the member closes ({self.first_day} to {self.as_of}, "
                             f"{self.closes_source})")
        return int(np.searchsorted(self.dates, np.datetime64(as_of, "D"), side="right")) - 1

    def day(self, row: int) -> date:
        return _day(self.dates[row])

    def columns(self, index: str) -> np.ndarray:
        """The `closes` columns of an index's members ("IWM" or "SP500")."""
        index_name(index)
        flag = self.members["in_iwm" if index == "IWM" else "in_sp500"]
        return np.flatnonzero(flag.reindex(list(self.symbols)).to_numpy(dtype=bool))

    def survivorship(self) -> str:
        return SURVIVORSHIP.format(holdings=self.holdings_as_of)


def _day(value: np.datetime64) -> date:
    return date.fromisoformat(str(value))


def holdings_weights(text: str) -> tuple[date, pd.DataFrame]:
    """(as-of date, per ticker: weight % of IWM and sector) from an iShares holdings file, equity rows only."""
    table = parse_holdings(text)
    as_of, frame = table.as_of, table.rows
    equity = frame[(frame["Asset Class"] == "Equity") & (frame["Ticker"] != "-")]
    grouped = equity.groupby("Ticker").agg(weight=("Weight (%)", "sum"), holdings_sector=("Sector", "first"))
    return as_of, grouped


def _labels(codes: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Codes into `names` as an object column (code -1: NaN); rows share one string object per name."""
    return np.append(names.astype(object), np.nan)[codes]


def _load() -> MemberData:
    with np.load(data_path(MEMBERS_FILE), allow_pickle=False) as npz:
        m = dict(npz)
    symbol = m["member"].astype(object)
    members = pd.DataFrame({"in_iwm": m["in_iwm"], "in_sp500": m["in_sp500"], "weight": m["weight"],
                            "holdings_sector": _labels(m["holdings_sector"], m["holdings_sectors"])},
                           index=pd.Index(symbol, name="symbol"))
    with np.load(data_path(FUNDAMENTALS_FILE), allow_pickle=False) as npz:
        f = dict(npz)
    days, day = np.unique(f["dump"], return_inverse=True)
    dumps = pd.DataFrame({"symbol": symbol[f["symbol"]],
                          "dump": np.array([_day(d) for d in days], dtype=object)[day],
                          "sector": _labels(f["sector"], f["sectors"]), **{name: f[name] for name in FIELDS}})
    holdings_as_of = _day(m["holdings_as_of"])
    return MemberData(
        members=members, dumps=dumps, closes=np.load(data_path(CLOSES_FILE), mmap_mode="r", allow_pickle=False),
        dates=m["dates"], symbols=tuple(str(s) for s in m["symbols"]), holdings_as_of=holdings_as_of,
        source=f"{FUNDAMENTALS_SOURCE}; {CLOSES_SOURCE}; iShares IWM holdings {holdings_as_of}, bundled",
    )


_lock = threading.Lock()
_data: MemberData | None = None


def load_member_data() -> MemberData:
    """The bundled member data, loaded on first call and shared afterwards (thread-safe). Blocking: call it
    through `asyncio.to_thread` from the event loop."""
    global _data
    if _data is None:
        with _lock:
            if _data is None:
                _data = _load()
    return _data

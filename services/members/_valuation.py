"""Bottom-up valuation: the Russell 2000 (IWM members, fund weights) and the S&P 500 (members, market caps) valued
as one company each.

An index multiple is total market value / total earnings (book, sales): sum(w) / sum(w / multiple), the weighted
harmonic mean of the members' multiples, where w is the member's weight in IWM (holdings file) or its Yahoo market
cap (S&P 500). Yahoo gives no trailing P/E for a loss-maker, and the positive-only aggregates leave out members
whose multiple is missing or not positive; "trailing P/E incl. loss-makers" instead counts every member with sales
and a profit margin: net income = sales x profit margin, sales = market value / P/S, so its earnings yield is
margin / P/S and losses cut total earnings (no figure when total earnings are not positive).
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from services.members._data import MemberData, index_name

METRICS = {  # metric -> (label, which members it counts)
    "forward_pe": ("Forward P/E", "members with a positive forward P/E (on analysts' estimated earnings)"),
    "trailing_pe": ("Trailing P/E", "members with a positive trailing P/E (loss-makers have none at Yahoo)"),
    "trailing_pe_all": ("Trailing P/E incl. loss-makers",
                        "members with P/S and a profit margin: earnings yield = profit margin / P/S, losses included"),
    "price_to_book": ("Price/book", "members with a positive P/B (negative book value left out)"),
    "price_to_sales": ("Price/sales", "members with a positive trailing 12-month P/S"),
}
METHOD = ("Index aggregate = total market value / total earnings (book, sales) = sum(w) / sum(w / multiple), "
          "the weighted harmonic mean of member multiples; w = the member's IWM fund weight (iShares holdings) for "
          "the Russell 2000, its Yahoo market cap for the S&P 500. A member loses money when its trailing 12-month "
          "profit margin is negative.")


@dataclass(frozen=True)
class Aggregate:
    metric: str  # a key of METRICS
    label: str
    value: float | None  # None: no member counted, or total earnings not positive
    members: int  # members counted
    coverage: float  # share of the index counted, 0..1 (fund weight for IWM, members for the S&P 500)
    counts: str  # which members are counted


@dataclass(frozen=True)
class IndexValuation:
    index: str  # "IWM" or "SP500"
    name: str
    weighting: str  # what w is
    members: int  # members in the index list
    with_data: int  # members the fundamentals dumps have
    coverage: float  # share of the index with fundamentals, 0..1
    coverage_basis: str  # "fund weight" or "members"
    multiples: dict[str, Aggregate]  # metric -> aggregate, in METRICS order
    loss_makers: int  # members with a negative profit margin
    loss_share_members: float | None  # loss-makers / members with a profit margin, 0..1
    loss_share_value: float | None  # their share of w among members with a profit margin, 0..1


@dataclass(frozen=True)
class MemberValuation:
    as_of: date  # the dump date: each member's row is from the latest dump on or before it
    requested: date | None
    small: IndexValuation  # Russell 2000 (IWM)
    large: IndexValuation  # S&P 500
    ratios: dict[str, float | None]  # metric -> small / large
    rows_by_dump: dict[date, int]  # dump date -> members whose row comes from it
    holdings_as_of: date
    source: str
    method: str
    notes: tuple[str, ...]


def weighted_multiple(weights: np.ndarray, yields: np.ndarray) -> tuple[float | None, np.ndarray]:
    """(sum(w) / sum(w * earnings yield) over the counted members, which members are counted). Counted: finite
    yield and positive finite weight; None when the total yield is not positive."""
    counted = np.isfinite(yields) & np.isfinite(weights) & (weights > 0)
    total = float(np.sum(weights[counted] * yields[counted]))
    value = float(np.sum(weights[counted])) / total if counted.any() and total > 0 else None
    return value, counted


def _yields(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """metric -> each member's yield (1 / multiple, NaN where the metric does not count it)."""
    def inverse(column: str) -> np.ndarray:
        x = rows[column].to_numpy(dtype=float)
        return np.where(x > 0, 1.0 / np.where(x > 0, x, 1.0), np.nan)

    ps = rows["price_to_sales"].to_numpy(dtype=float)
    margin = rows["profit_margin"].to_numpy(dtype=float)
    with_losses = np.where(ps > 0, margin / np.where(ps > 0, ps, 1.0), np.nan)
    return {"forward_pe": inverse("forward_pe"), "trailing_pe": inverse("trailing_pe"),
            "trailing_pe_all": with_losses, "price_to_book": inverse("price_to_book"),
            "price_to_sales": inverse("price_to_sales")}


def index_valuation(rows: pd.DataFrame, index: str) -> IndexValuation:
    """The valuation of one index from its members' rows (a `MemberData.snapshot` frame cut to the index)."""
    iwm = index == "IWM"
    weights = rows["weight" if iwm else "market_cap"].to_numpy(dtype=float)
    basis = rows["weight"].to_numpy(dtype=float) if iwm else np.ones(len(rows))  # what coverage is a share of
    has_data = rows["dump"].notna().to_numpy()
    multiples = {}
    for metric, yields in _yields(rows).items():
        value, counted = weighted_multiple(weights, yields)
        multiples[metric] = Aggregate(metric, METRICS[metric][0], value, int(counted.sum()),
                                      float(basis[counted].sum() / basis.sum()), METRICS[metric][1])
    margin = rows["profit_margin"].to_numpy(dtype=float)
    known = np.isfinite(margin)
    losing = known & (margin < 0)
    valued = known & np.isfinite(weights) & (weights > 0)
    return IndexValuation(
        index=index, name=index_name(index),
        weighting="IWM fund weight (iShares holdings)" if iwm else "Yahoo market cap",
        members=len(rows), with_data=int(has_data.sum()),
        coverage=float(basis[has_data].sum() / basis.sum()), coverage_basis="fund weight" if iwm else "members",
        multiples=multiples, loss_makers=int(losing.sum()),
        loss_share_members=float(losing.sum() / known.sum()) if known.any() else None,
        loss_share_value=float(weights[losing & valued].sum() / weights[valued].sum()) if valued.any() else None,
    )


def _ratio(small: float | None, large: float | None) -> float | None:
    return None if small is None or large is None else small / large


_cache: weakref.WeakKeyDictionary[MemberData, dict[date | None, MemberValuation]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def member_valuation(data: MemberData, as_of: date | None = None) -> MemberValuation:
    """The Russell 2000 (IWM) and S&P 500 valued from their members' fundamentals as of `as_of` (default: the
    latest dump); InputError outside the dumps. Computed once per member data and as_of (kept while that data
    is: a snapshot's figures never change)."""
    known = _cache.get(data, {})
    if as_of in known:
        return known[as_of]
    valuation = _valuation(data, as_of)
    with _lock:
        _cache.setdefault(data, {})[as_of] = valuation
    return valuation


def _valuation(data: MemberData, as_of: date | None) -> MemberValuation:
    day, rows = data.snapshot(as_of)
    small = index_valuation(rows[rows["in_iwm"]], "IWM")
    large = index_valuation(rows[rows["in_sp500"]], "SP500")
    ratios = {m: _ratio(small.multiples[m].value, large.multiples[m].value) for m in METRICS}
    used = rows[rows["in_iwm"] | rows["in_sp500"]]["dump"].dropna()
    by_dump: dict[date, int] = dict(sorted(Counter(used).items()))
    notes = [f"Each member's row is from the latest dump on or before {day} that has it: "
             + ", ".join(f"{n} from {d}" for d, n in sorted(by_dump.items(), reverse=True)) + ".",
             f"IWM membership and weights are the iShares holdings of {data.holdings_as_of} (weights not carried "
             "forward by price); the S&P 500 list is of 2026-08-08.",
             "Yahoo's definitions: trailing P/E on trailing 12-month earnings, forward P/E on analysts' estimated "
             "earnings; values as Yahoo served them on each dump date.", *data.notes]
    return MemberValuation(
        as_of=day, requested=as_of, small=small, large=large, ratios=ratios, rows_by_dump=by_dump,
        holdings_as_of=data.holdings_as_of,
        source=f"{data.fundamentals_source}; iShares IWM holdings {data.holdings_as_of}, {data.holdings_source}",
        method=METHOD, notes=tuple(notes),
    )

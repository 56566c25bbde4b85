"""Return since a day: the one rule every analysis uses (levels, sectors, rates, compare).

A return runs from the last value on or before the start day to the last value on or before the end day (default:
the last value), so a start or end on a weekend or holiday uses the close before it. A start before the series
begins has no value on or before it: there is no return (None, or NaN from `returns_between`), never one measured
from a later first close. Neither is there one when no value comes after the start value up to the end day.
The return is `end value / start value * 100 - 100`, in %.

`series`: values by date on a sorted DatetimeIndex with no missing values (drop them first), e.g. adjusted
closes for a total return, or the IWM/SPY ratio for the change in relative strength.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TypeAlias

import numpy as np
import pandas as pd

Days: TypeAlias = "pd.DatetimeIndex | list[date]"


@dataclass(frozen=True)
class TotalReturn:
    start: date  # the close the return is measured from
    end: date  # the close it is measured to
    pct: float


def _spans(series: pd.Series, starts: Days, ends: Days | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each start (and end) day: the positions of the start and end values under the module's rule, and
    whether there is a return."""
    index = series.index
    first = index.searchsorted(pd.DatetimeIndex(starts), side="right") - 1
    if ends is None:
        last = np.full(len(first), len(index) - 1)
    else:
        last = index.searchsorted(pd.DatetimeIndex(ends), side="right") - 1
    return first, last, (first >= 0) & (last > first)


def _span(series: pd.Series, start: date, end: date | None) -> tuple[int, int] | None:
    first, last, found = _spans(series, [start], None if end is None else [end])
    return (int(first[0]), int(last[0])) if found[0] else None


def total_return(series: pd.Series, start: date, end: date | None = None) -> TotalReturn | None:
    """The % change of `series` from `start` to `end` (module docstring: which values; None when there is none)."""
    span = _span(series, start, end)
    if span is None:
        return None
    first, last = span
    values = series.to_numpy()
    return TotalReturn(series.index[first].date(), series.index[last].date(),
                       float(values[last] / values[first] * 100 - 100))


def return_pct(series: pd.Series, start: date, end: date | None = None) -> float | None:
    """`total_return`'s percentage alone."""
    span = _span(series, start, end)
    if span is None:
        return None
    values = series.to_numpy()
    return float(values[span[1]] / values[span[0]] * 100 - 100)


def returns_between(series: pd.Series, starts: Days, ends: Days) -> np.ndarray:
    """`return_pct` for many (start, end) pairs at once; NaN where there is no return."""
    first, last, found = _spans(series, starts, ends)
    values = series.to_numpy()
    pct = np.full(len(first), np.nan)
    pct[found] = values[last[found]] / values[first[found]] * 100 - 100
    return pct


def rebased(series: pd.Series, start: date, end: date | None = None) -> pd.Series | None:
    """The values `total_return` runs over, rebased to 100 at the start value (its last point is 100 plus the
    return); None when there is no return."""
    span = _span(series, start, end)
    if span is None:
        return None
    window = series.iloc[span[0]:span[1] + 1]
    return window / window.iloc[0] * 100

"""services.returns: the one "return since a day" rule, on a small hand-made series (test values, not market data)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from services.returns import TotalReturn, rebased, return_pct, returns_between, total_return

# Fri 2024-01-05, Mon 01-08, Tue 01-09, Wed 01-10
SERIES = pd.Series([100.0, 110.0, 99.0, 121.0], index=pd.DatetimeIndex(["2024-01-05", "2024-01-08", "2024-01-09",
                                                                        "2024-01-10"]))


def test_from_the_last_value_on_or_before_the_start_to_the_last_on_or_before_the_end():
    assert total_return(SERIES, date(2024, 1, 7), date(2024, 1, 9)) == TotalReturn(
        date(2024, 1, 5), date(2024, 1, 9), pytest.approx(-1.0))  # Sunday start: Friday's 100 -> 99
    assert return_pct(SERIES, date(2024, 1, 8)) == pytest.approx(10.0)  # no end: to the last value, 110 -> 121
    assert return_pct(SERIES, pd.Timestamp("2024-01-05"), date(2030, 1, 1)) == pytest.approx(21.0)


@pytest.mark.parametrize(("start", "end"), [
    (date(2024, 1, 4), None),  # before the series begins: never measured from its first value instead
    (date(2024, 1, 10), None),  # no value after the start value
    (date(2024, 1, 9), date(2024, 1, 9)),
    (date(2024, 1, 9), date(2024, 1, 8)),  # end before start
])
def test_no_return(start, end):
    assert total_return(SERIES, start, end) is None and return_pct(SERIES, start, end) is None
    assert rebased(SERIES, start, end) is None


def test_no_return_from_an_empty_series():
    assert return_pct(pd.Series(dtype="float64", index=pd.DatetimeIndex([])), date(2024, 1, 5)) is None


def test_rebased_runs_over_the_same_values_and_ends_at_100_plus_the_return():
    line = rebased(SERIES, date(2024, 1, 6), date(2024, 1, 9))
    assert line is not None
    assert list(line.index.date) == [date(2024, 1, 5), date(2024, 1, 8), date(2024, 1, 9)]
    assert line.tolist() == pytest.approx([100.0, 110.0, 99.0])


def test_many_pairs_at_once_match_one_at_a_time():
    starts = [date(2024, 1, 4), date(2024, 1, 5), date(2024, 1, 8), date(2024, 1, 6)]
    ends = [date(2024, 1, 10), date(2024, 1, 8), date(2024, 1, 10), date(2024, 1, 7)]
    got = returns_between(SERIES, starts, ends)
    assert np.isnan(got[0]) and np.isnan(got[3])
    assert got[1:3].tolist() == pytest.approx([10.0, 10.0])

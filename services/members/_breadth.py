"""Market breadth from the members' daily closes: how many members are above their 50- and 200-day averages,
advances and declines, new 52-week highs and lows.

Definitions (closes only: the data has no intraday highs or lows):
- above the N-day average: the close is above the mean of the last N closes (today's included); a member counts
  on a day only if it has all N closes (a member with a gap in its data drops out until N closes follow the gap);
- advance / decline / unchanged: the close is above / below / equal to the previous session's close (both needed);
  the A/D line is the running sum of advances minus declines from the first day of the data;
- new 52-week high (low): the close is above (below) every close of the previous 251 sessions, so the highest
  (lowest) of 252 sessions; counted once a member has 252 closes in a row.

The figures are built from the day's counts (`breadth_counts`, CHUNK members at a time). The bundled closes' counts
are precomputed by scripts/bundle_data.py (breadth.npz): the bot counts only days after them (live closes appended
to the matrix) or every day for another member list (an archived holdings file).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date

import numpy as np

from services.bundled import data_path
from services.members._data import INDEXES, MemberData, index_name, load_member_data

WINDOWS = (50, 200)
YEAR_SESSIONS = 252
LOOKBACK = max(YEAR_SESSIONS, *WINDOWS)  # sessions a day's figures look back over, the day included
CHUNK = 256  # members whose closes are counted at a time
BREADTH_FILE = "members/breadth.npz"
METHOD = ("Per day, over the members with enough closes: % closing above their 50- and 200-day simple averages "
          "(all 50/200 closes needed); advances/declines vs the previous close and their running sum (A/D line); "
          "new 52-week highs/lows = the highest/lowest close of the last 252 sessions. Adjusted closes, so "
          "dividends do not show as declines.")


@dataclass(frozen=True, eq=False)
class BreadthSeries:
    dates: np.ndarray  # datetime64[D]
    pct_above: dict[int, np.ndarray]  # window -> % of counted members above their average (NaN: none counted)
    counted: dict[int, np.ndarray]  # window -> members with all `window` closes up to that day
    advances: np.ndarray
    declines: np.ndarray
    unchanged: np.ndarray
    ad_line: np.ndarray  # running sum of advances - declines, 0 on the first day
    new_highs: np.ndarray
    new_lows: np.ndarray
    high_low_counted: np.ndarray  # members with YEAR_SESSIONS closes in a row up to that day

    def until(self, row: int) -> BreadthSeries:
        """The series from the first day through `row`: the same as computing it on the closes up to `row`, since
        every figure of a day uses only that day and the ones before it."""
        cut = slice(0, row + 1)
        return BreadthSeries(
            self.dates[cut], {n: x[cut] for n, x in self.pct_above.items()},
            {n: x[cut] for n, x in self.counted.items()}, self.advances[cut], self.declines[cut],
            self.unchanged[cut], self.ad_line[cut], self.new_highs[cut], self.new_lows[cut],
            self.high_low_counted[cut])


def _rolling(values: np.ndarray, n: int, pick: np.ufunc) -> np.ndarray:
    """pick (np.maximum or np.minimum) over each cell and the n - 1 cells above it, by doubling spans; rows
    before the first full window hold partial results."""
    level, span = values, 1
    while span * 2 <= n:
        wider = level.copy()
        wider[span:] = pick(level[span:], level[:-span])
        level, span = wider, span * 2
    rest = n - span  # level[t] covers rows t - span + 1 .. t; level[t - rest] covers the first rows of the window
    out = level.copy()
    out[rest:] = pick(level[rest:], level[: len(level) - rest])
    return out


Counts = dict[str, np.ndarray]  # per day: above_N, counted_N (each window), advances, declines, unchanged,
#                                 new_highs, new_lows, high_low_counted


def _chunk_counts(values: np.ndarray, windows: tuple[int, ...]) -> Counts:
    """The day's counts over the members whose closes (float32) are the columns of `values`."""
    valid = np.isfinite(values)
    rows, members = values.shape
    runs = np.zeros((rows + 1, members), dtype=np.int32)  # runs[t + 1] - runs[t + 1 - n] == n: n closes up to t
    np.cumsum(valid, axis=0, out=runs[1:])
    sums = np.zeros((rows + 1, members))  # float64 running sums for the averages
    np.cumsum(np.where(valid, values, 0), axis=0, dtype=np.float64, out=sums[1:])

    def full(n: int) -> np.ndarray:
        ends = np.zeros(values.shape, dtype=bool)
        ends[n - 1:] = (runs[n:] - runs[:-n]) == n
        return ends

    counts: Counts = {}
    for n in windows:
        above = np.zeros(values.shape, dtype=bool)
        above[n - 1:] = values[n - 1:] > (sums[n:] - sums[:-n]) / n
        have = full(n)
        counts[f"above_{n}"], counts[f"counted_{n}"] = (above & have).sum(axis=1), have.sum(axis=1)
    zero = np.zeros(1, dtype=np.int64)
    counts["advances"] = np.concatenate([zero, (values[1:] > values[:-1]).sum(axis=1)])
    counts["declines"] = np.concatenate([zero, (values[1:] < values[:-1]).sum(axis=1)])
    counts["unchanged"] = np.concatenate([zero, (values[1:] == values[:-1]).sum(axis=1)])
    year = full(YEAR_SESSIONS)  # the close and the previous 251 are all there
    prior = YEAR_SESSIONS - 1
    prior_high = np.vstack([values[:1], _rolling(np.where(valid, values, -np.inf), prior, np.maximum)[:-1]])
    counts["new_highs"] = (year & (values > prior_high)).sum(axis=1)
    prior_low = np.vstack([values[:1], _rolling(np.where(valid, values, np.inf), prior, np.minimum)[:-1]])
    counts["new_lows"] = (year & (values < prior_low)).sum(axis=1)
    counts["high_low_counted"] = year.sum(axis=1)
    return counts


def breadth_counts(closes: np.ndarray, columns: np.ndarray, windows: tuple[int, ...] = WINDOWS) -> Counts:
    """The day's counts over the members in `columns` of `closes` (dates x symbols, NaN = no close), CHUNK
    members at a time: the work arrays of 1,650 members at once were most of the bot's peak memory."""
    total: Counts | None = None
    for first in range(0, max(len(columns), 1), CHUNK):
        part = _chunk_counts(np.asarray(closes[:, columns[first:first + CHUNK]], dtype=np.float32), windows)
        total = part if total is None else {key: total[key] + counts for key, counts in part.items()}
    assert total is not None
    return total


def series_from_counts(dates: np.ndarray, counts: Counts, windows: tuple[int, ...] = WINDOWS) -> BreadthSeries:
    with np.errstate(invalid="ignore", divide="ignore"):
        pct_above = {n: np.where(counts[f"counted_{n}"] > 0,
                                 counts[f"above_{n}"] * 100.0 / counts[f"counted_{n}"], np.nan) for n in windows}
    return BreadthSeries(
        dates=dates, pct_above=pct_above, counted={n: counts[f"counted_{n}"] for n in windows},
        advances=counts["advances"], declines=counts["declines"], unchanged=counts["unchanged"],
        ad_line=np.cumsum(counts["advances"] - counts["declines"]), new_highs=counts["new_highs"],
        new_lows=counts["new_lows"], high_low_counted=counts["high_low_counted"],
    )


def compute_breadth(closes: np.ndarray, dates: np.ndarray, windows: tuple[int, ...] = WINDOWS) -> BreadthSeries:
    """Breadth of the members whose closes are the columns of `closes` (dates x members, NaN = no close)."""
    return series_from_counts(dates, breadth_counts(closes, np.arange(closes.shape[1]), windows), windows)


def bundle_arrays(data: MemberData) -> dict[str, np.ndarray]:
    """breadth.npz (scripts/bundle_data.py): per index, its columns of the closes and their counts of every day."""
    arrays = {}
    for index in INDEXES:
        columns = data.columns(index)
        arrays[f"{index}_columns"] = columns.astype(np.int16)
        arrays.update({f"{index}_{key}": c.astype(np.int16) for key, c in breadth_counts(data.closes, columns).items()})
    return arrays


@functools.cache
def _bundled_counts() -> Counts:
    with np.load(data_path(BREADTH_FILE), allow_pickle=False) as npz:
        return {key: npz[key].astype(np.int64) for key in npz.files}  # int64: the A/D line's sum needs it


def _known_counts(data: MemberData, index: str, columns: np.ndarray) -> Counts | None:
    """The bundled counts of `index`, when `data`'s closes begin with the bundled closes and its members are the
    bundled ones (live closes appended after them keep them; an archived holdings list does not)."""
    bundled, stored = load_member_data(), _bundled_counts()
    n = len(bundled.dates)
    same = (data.symbols == bundled.symbols and np.array_equal(columns, stored[f"{index}_columns"])
            and np.array_equal(data.dates[:n], bundled.dates)
            and (data.closes is bundled.closes or np.array_equal(data.closes[:n], bundled.closes, equal_nan=True)))
    prefix = f"{index}_"
    return {key.removeprefix(prefix): c for key, c in stored.items()
            if key.startswith(prefix) and key != f"{index}_columns"} if same else None


@dataclass(frozen=True)
class BreadthDay:
    day: date
    pct_above: dict[int, float | None]  # window -> % above the average (None: no member has the history)
    counted: dict[int, int]
    advances: int
    declines: int
    unchanged: int
    ad_line: int
    new_highs: int
    new_lows: int
    high_low_counted: int


@dataclass(frozen=True, eq=False)
class BreadthReport:
    index: str  # "IWM" or "SP500"
    name: str
    as_of: date  # the session reported (the last one on or before the requested day)
    requested: date | None
    latest: BreadthDay
    series: BreadthSeries  # from the first close through as_of: nothing after it
    members: int  # index members with closes
    listed: int  # index members
    source: str
    method: str
    caveat: str


def breadth_day(series: BreadthSeries, row: int) -> BreadthDay:
    def pct(x: np.ndarray) -> float | None:
        return None if np.isnan(x[row]) else float(x[row])

    return BreadthDay(
        day=date.fromisoformat(str(series.dates[row])),
        pct_above={n: pct(x) for n, x in series.pct_above.items()},
        counted={n: int(x[row]) for n, x in series.counted.items()},
        advances=int(series.advances[row]), declines=int(series.declines[row]), unchanged=int(series.unchanged[row]),
        ad_line=int(series.ad_line[row]), new_highs=int(series.new_highs[row]), new_lows=int(series.new_lows[row]),
        high_low_counted=int(series.high_low_counted[row]),
    )


@functools.lru_cache(maxsize=2 * len(INDEXES))  # the bundled and the live member data
def _whole_series(data: MemberData, index: str) -> BreadthSeries:
    """An index's breadth over all the closes, once per process: the bundled counts (breadth.npz) for the bundled
    closes, computed for the days after them (live closes) or for every day (another member list)."""
    columns = data.columns(index)
    counts = _known_counts(data, index, columns) or {}
    done = len(counts.get("advances", ()))
    if done < len(data.dates):
        start = max(0, done - LOOKBACK)  # a day's figures use closes up to LOOKBACK sessions back
        new = breadth_counts(data.closes[start:], columns)
        counts = {key: np.concatenate([counts.get(key, c[:0]), c[done - start:]]) for key, c in new.items()}
    return series_from_counts(data.dates, counts)


def member_breadth(data: MemberData, index: str = "IWM", as_of: date | None = None) -> BreadthReport:
    """Breadth of an index's members ("IWM" or "SP500") as of `as_of` (default: the last close); InputError
    outside the closes. Every figure uses closes up to that day only."""
    name = index_name(index)
    row = data.session(as_of)
    columns = data.columns(index)
    series = _whole_series(data, index).until(row)
    flag = "in_iwm" if index == "IWM" else "in_sp500"
    return BreadthReport(
        index=index, name=name, as_of=data.day(row), requested=as_of, latest=breadth_day(series, row),
        series=series, members=len(columns), listed=int(data.members[flag].sum()),
        source=data.closes_source + ("" if data.holdings_source == "bundled" else
                                f"; IWM members: iShares holdings of {data.holdings_as_of}, {data.holdings_source}"),
        method=METHOD, caveat=data.survivorship(),
    )

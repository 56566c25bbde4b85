"""services.members on the bundled member data: every figure against an independent computation here (plain Python
loops over the bundle files read with csv/gzip/numpy, or literals copied from the source files), breadth against
a published S&P 500 series, the bundled breadth counts against a fresh computation, and as_of outside the data."""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from services.errors import InputError
from services.members import (
    ALL,
    METRICS,
    BreadthSeries,
    MemberData,
    compute_breadth,
    load_member_data,
    member_breadth,
    member_sectors,
    member_valuation,
    weighted_multiple,
)
from services.members._breadth import _known_counts

DATA = Path(__file__).parents[1] / "services" / "data"
FIXTURES = Path(__file__).parent / "fixtures"
LAST_DUMP = "2026-08-08"


@pytest.fixture(scope="module")
def data() -> MemberData:
    return load_member_data()


# --- independent readers: the bundle files through csv / gzip / numpy only -----------------------------------

def raw_fundamentals() -> list[dict[str, str]]:
    """The rows of the member dumps as text (a member no dump has: once, without a dump date), from the npz
    columns: floats as their shortest round-trip decimals, missing values as ""."""
    with np.load(DATA / "members" / "members.npz") as m, np.load(DATA / "members" / "fundamentals.npz") as f:
        symbols, iwm, sp500 = [str(s) for s in m["member"]], m["in_iwm"].tolist(), m["in_sp500"].tolist()
        fields = [name for name in f.files if name not in ("symbol", "dump", "sector", "sectors")]
        columns = {name: f[name].tolist() for name in fields}
        sectors = [str(s) for s in f["sectors"]]
        codes, dumps, sector = f["symbol"].tolist(), [str(d) for d in f["dump"]], f["sector"].tolist()
    rows = []
    for i, code in enumerate(codes):
        row = {"symbol": symbols[code], "in_iwm": str(iwm[code]), "in_sp500": str(sp500[code]), "dump": dumps[i],
               "sector": sectors[sector[i]] if sector[i] >= 0 else ""}
        rows.append(row | {name: "" if math.isnan(columns[name][i]) else repr(columns[name][i]) for name in fields})
    for code in sorted(set(range(len(symbols))) - set(codes)):
        rows.append({"symbol": symbols[code], "in_iwm": str(iwm[code]), "in_sp500": str(sp500[code]), "dump": ""})
    return rows


def raw_closes() -> tuple[np.ndarray, list[str], list[str]]:
    closes = np.load(DATA / "members" / "closes.npy")
    with np.load(DATA / "members" / "members.npz") as npz:
        return closes, [str(d) for d in npz["dates"]], [str(s) for s in npz["symbols"]]


def raw_holdings() -> dict[str, tuple[float, str]]:
    """ticker -> (weight %, sector), equity rows of the bundled iShares file, read with the csv module."""
    text = gzip.decompress((DATA / "IWM_holdings.2026-05-05.csv.gz").read_bytes()).decode("utf-8-sig")
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Ticker,Name,Sector"))
    out: dict[str, tuple[float, str]] = {}
    for row in csv.reader(lines[header + 1:]):
        if len(row) < 6:
            break
        if row[3] == "Equity" and row[0] != "-":
            weight, sector = out.get(row[0], (0.0, row[2]))
            out[row[0]] = (weight + float(row[5].replace(",", "")), sector)
    return out


def latest(rows: list[dict[str, str]], day: str) -> dict[str, dict[str, str]]:
    best: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["dump"] and row["dump"] <= day and row["dump"] > best.get(row["symbol"], {"dump": ""})["dump"]:
            best[row["symbol"]] = row
    return best


def number(row: dict[str, str] | None, field: str) -> float:
    return float(row[field]) if row is not None and row[field] else math.nan


# --- valuation ------------------------------------------------------------------------------------------------

def earnings_yield(row: dict[str, str] | None, metric: str) -> float | None:
    if metric == "trailing_pe_all":
        ps, margin = number(row, "price_to_sales"), number(row, "profit_margin")
        return margin / ps if ps > 0 and not math.isnan(margin) else None
    x = number(row, metric)
    return 1 / x if x > 0 else None


def expected_index(members: dict[str, float], basis: dict[str, float], rows: dict[str, dict[str, str]]) -> dict:
    """Loop: members -> weight w, basis -> what coverage is a share of; aggregate = sum(w) / sum(w * yield)."""
    sums = {m: [0.0, 0.0, 0.0, 0] for m in METRICS}  # sum w, sum w*y, basis counted, members counted
    have = 0.0
    losing = known = 0
    value_known = value_losing = 0.0
    for symbol, w in members.items():
        row = rows.get(symbol)
        if row is None:
            continue
        have += basis[symbol]
        for metric in METRICS:
            y = earnings_yield(row, metric)
            if y is not None and w > 0:
                sums[metric][0] += w
                sums[metric][1] += w * y
                sums[metric][2] += basis[symbol]
                sums[metric][3] += 1
        margin = number(row, "profit_margin")
        if not math.isnan(margin):
            known += 1
            losing += margin < 0
            if w > 0:
                value_known += w
                value_losing += w if margin < 0 else 0.0
    total = sum(basis.values())
    return {
        "values": {m: s[0] / s[1] if s[1] > 0 else None for m, s in sums.items()},
        "coverage": {m: s[2] / total for m, s in sums.items()},
        "counted": {m: s[3] for m, s in sums.items()},
        "with_data": have / total, "losing": losing, "loss_members": losing / known,
        "loss_value": value_losing / value_known,
    }


def expected_valuation(day: str, iwm_by_market_cap: bool = False) -> tuple[dict, dict]:
    rows = raw_fundamentals()
    best = latest(rows, day)
    holdings = raw_holdings()
    sp500 = {r["symbol"] for r in rows if r["in_sp500"] == "True"}
    iwm_weights = {s: (number(best.get(s), "market_cap") if iwm_by_market_cap else w) for s, (w, _) in holdings.items()}
    iwm_weights = {s: (0.0 if math.isnan(w) else w) for s, w in iwm_weights.items()}
    small = expected_index(iwm_weights, {s: w for s, (w, _) in holdings.items()}, best)
    caps = {s: number(best.get(s), "market_cap") for s in sp500}
    large = expected_index({s: 0.0 if math.isnan(c) else c for s, c in caps.items()}, dict.fromkeys(sp500, 1.0), best)
    return small, large


def check_index(got, want: dict) -> None:
    for metric in METRICS:
        aggregate = got.multiples[metric]
        assert aggregate.value == pytest.approx(want["values"][metric], rel=1e-9), metric
        assert aggregate.coverage == pytest.approx(want["coverage"][metric], rel=1e-9), metric
        assert aggregate.members == want["counted"][metric], metric
    assert got.coverage == pytest.approx(want["with_data"], rel=1e-9)
    assert got.loss_makers == want["losing"]
    assert got.loss_share_members == pytest.approx(want["loss_members"], rel=1e-9)
    assert got.loss_share_value == pytest.approx(want["loss_value"], rel=1e-9)


def test_valuation_matches_a_loop_over_every_member(data):
    report = member_valuation(data)
    small, large = expected_valuation(LAST_DUMP)
    assert report.as_of == date(2026, 8, 8) and report.holdings_as_of == date(2026, 5, 5)
    check_index(report.small, small)
    check_index(report.large, large)
    for metric in METRICS:
        assert report.ratios[metric] == pytest.approx(small["values"][metric] / large["values"][metric], rel=1e-9)
    assert (report.small.members, report.small.with_data) == (1920, 1650)  # 1,920 tickers, 1,650 in the dumps
    assert (report.large.members, report.large.with_data) == (503, 500)  # no BRK-B, BF-B, CBOE in any dump
    assert sum(report.rows_by_dump.values()) == 2150
    assert report.source and report.method and report.notes


def test_valuation_agrees_with_the_published_smoke_test(data):
    """The shared fundamentals/SOURCES.md (copied here): on the union, cap-weighted harmonic means, IWM trailing
    20.4, forward 15.6, P/B 2.53, P/S 1.60; S&P 500 trailing 25.8, forward 20.3, P/B 5.80, P/S 3.94. Those weight
    IWM members by Yahoo market cap; the service weights them by fund weight, so the loop checks the published
    IWM figures and the service the S&P 500's."""
    small_by_cap, _ = expected_valuation(LAST_DUMP, iwm_by_market_cap=True)
    published_small = {"trailing_pe": 20.4, "forward_pe": 15.6, "price_to_book": 2.53, "price_to_sales": 1.60}
    published_large = {"trailing_pe": 25.8, "forward_pe": 20.3, "price_to_book": 5.80, "price_to_sales": 3.94}
    for metric, value in published_small.items():
        assert small_by_cap["values"][metric] == pytest.approx(value, abs=0.05 if value > 10 else 0.005)
    large = member_valuation(data).large
    for metric, value in published_large.items():
        assert large.multiples[metric].value == pytest.approx(value, abs=0.05 if value > 10 else 0.005)
    small = member_valuation(data).small.multiples["forward_pe"].value
    assert 14.5 < small < 16.5 < 19.5 < large.multiples["forward_pe"].value  # small caps cheaper on forward P/E


def test_fundamentals_rows_are_the_source_rows(data):
    # literals from fundamentals_union_latest_per_symbol_2026-08-01_to_08.csv (symbol, trailingPE, forwardPE,
    # priceToBook, priceToSalesTrailing12Months, marketCap, profitMargins, sector, asof)
    source = [
        ("BE", 292.45334, 44.802216, 39.916286, 20.75121, 64601628672.0, 0.07868, "Industrials", "2026-08-08"),
        ("AAOI", None, 29.691334, 9.684399, 22.623524, 11470126080.0, -0.085480005, "Technology", "2026-08-08"),
        ("CABO", None, 2.3760684, 0.17061037, None, None, -0.21936001, "Communication Services", "2026-08-07"),
        ("SKYT", 13.871795, -249.6923, 8.854337, 2.9493918, 1597181312.0, 0.21042, "Technology", "2026-08-01"),
        ("NVDA", 33.577213, 17.37413, 27.75217, 21.39932, 5424535306240.0, 0.62966, "Technology", "2026-08-08"),
    ]
    fields = ["trailing_pe", "forward_pe", "price_to_book", "price_to_sales", "market_cap", "profit_margin"]
    table = data.fundamentals
    for symbol, *values, sector, dump in source:
        row = table.loc[symbol]
        for field, value in zip(fields, values, strict=True):
            assert (math.isnan(row[field]) if value is None else row[field] == value), (symbol, field)
        assert (row["sector"], row["dump"]) == (sector, date.fromisoformat(dump))
    assert table.loc["BE", "weight"] == 1.93 and table.loc["BE", "holdings_sector"] == "Industrials"
    assert table.loc["NVDA", "in_sp500"] and not table.loc["NVDA", "in_iwm"]
    assert math.isnan(table.loc["BRK-B", "forward_pe"]) and table.loc["BRK-B", "in_sp500"]


def test_weighted_multiple_by_hand():
    # BE, AAOI and CABO above with their fund weights (1.93, 0.36, 0.03 %): forward P/E 44.802216, 29.691334,
    # 2.3760684; a NaN yield and a zero weight are not counted
    weights = np.array([1.93, 0.36, 0.03, 0.5, 0.0])
    yields = np.array([1 / 44.802216, 1 / 29.691334, 1 / 2.3760684, np.nan, 0.1])
    value, counted = weighted_multiple(weights, yields)
    assert value == pytest.approx(2.32 / (1.93 / 44.802216 + 0.36 / 29.691334 + 0.03 / 2.3760684), rel=1e-12)
    assert counted.tolist() == [True, True, True, False, False]
    assert weighted_multiple(np.array([1.0, 1.0]), np.array([0.05, -0.07]))[0] is None  # net losses: no P/E


def test_valuation_as_of_uses_only_dumps_up_to_that_day(data):
    report = member_valuation(data, date(2026, 8, 3))  # Monday, no dump: the Saturday 2026-08-01 dump
    small, large = expected_valuation("2026-08-03")
    assert report.as_of == date(2026, 8, 1) and set(report.rows_by_dump) == {date(2026, 8, 1)}
    check_index(report.small, small)
    check_index(report.large, large)
    assert member_valuation(data, date(2026, 8, 5)).as_of == date(2026, 8, 5)


@pytest.mark.parametrize("day", [date(2026, 7, 31), date(2026, 8, 9), date(2023, 1, 3)])
def test_valuation_as_of_outside_the_dumps(data, day):
    with pytest.raises(InputError, match="2026-08-01 to 2026-08-08"):
        member_valuation(data, day)


# --- breadth --------------------------------------------------------------------------------------------------

def loop_breadth_day(columns: list[list[float]], t: int) -> dict:
    """One day's breadth over members' closes (Python floats, NaN = none), by plain loops."""
    above = {50: 0, 200: 0}
    counted = {50: 0, 200: 0}
    adv = dec = unch = highs = lows = year = 0
    for x in columns:
        for n in (50, 200):
            window = x[t - n + 1: t + 1] if t >= n - 1 else []
            if window and not any(math.isnan(v) for v in window):
                counted[n] += 1
                above[n] += x[t] > sum(window) / n
        if t > 0 and not math.isnan(x[t]) and not math.isnan(x[t - 1]):
            adv += x[t] > x[t - 1]
            dec += x[t] < x[t - 1]
            unch += x[t] == x[t - 1]
        window = x[t - 251: t + 1] if t >= 251 else []
        if window and not any(math.isnan(v) for v in window):
            year += 1
            highs += x[t] > max(window[:-1])
            lows += x[t] < min(window[:-1])
    return {"pct": {n: above[n] * 100 / counted[n] if counted[n] else None for n in (50, 200)}, "counted": counted,
            "adv": adv, "dec": dec, "unch": unch, "highs": highs, "lows": lows, "year": year}


def iwm_columns() -> tuple[list[list[float]], list[str]]:
    closes, dates, symbols = raw_closes()
    members = raw_holdings()
    return [closes[:, j].astype(float).tolist() for j, s in enumerate(symbols) if s in members], dates


@pytest.mark.parametrize("day", ["2026-07-31", "2025-04-08", "2024-01-22"])
def test_breadth_day_matches_a_loop_over_every_iwm_member(data, day):
    columns, dates = iwm_columns()
    t = dates.index(day)
    want = loop_breadth_day(columns, t)
    got = member_breadth(data, "IWM", date.fromisoformat(day))
    assert got.as_of == date.fromisoformat(day) and got.members == len(columns) == 1848 and got.listed == 1920
    day_ = got.latest
    for n in (50, 200):
        assert day_.pct_above[n] == pytest.approx(want["pct"][n], rel=1e-12)
        assert day_.counted[n] == want["counted"][n]
    assert (day_.advances, day_.declines, day_.unchanged) == (want["adv"], want["dec"], want["unch"])
    assert (day_.new_highs, day_.new_lows, day_.high_low_counted) == (want["highs"], want["lows"], want["year"])
    assert day_.ad_line - int(got.series.ad_line[t - 1]) == want["adv"] - want["dec"]
    assert len(got.series.dates) == t + 1  # nothing after as_of


def test_breadth_published_smoke_figure(data):
    """The shared prices/SOURCES.md (copied here): IWM members' % above the 200-day average 13.3% on 2025-04-08."""
    assert member_breadth(data, "IWM", date(2025, 4, 8)).latest.pct_above[200] == pytest.approx(13.3, abs=0.05)


def test_breadth_series_of_a_few_members_every_day():
    """Members with awkward data: MVIS (nine missing days in 2026-07), DEC (zero closes before its US listing,
    bundled as missing), a late starter, and two plain ones; compute_breadth on their columns vs the loop."""
    closes, dates, symbols = raw_closes()
    picked = ["MVIS", "DEC", "BE", "AAMI", "CRDO"]
    index = [symbols.index(s) for s in picked]
    columns = [closes[:, j].astype(float).tolist() for j in index]
    assert sum(math.isnan(v) for v in columns[0]) == 9 and math.isnan(columns[1][0])
    series = compute_breadth(closes[:, index], np.array(dates, dtype="datetime64[D]"))
    line = 0
    for t in range(len(dates)):
        want = loop_breadth_day(columns, t)
        for n in (50, 200):
            got = series.pct_above[n][t]
            assert (math.isnan(got) if want["pct"][n] is None else got == pytest.approx(want["pct"][n])), (t, n)
        assert [series.advances[t], series.declines[t], series.unchanged[t]] == [want["adv"], want["dec"],
                                                                                  want["unch"]], t
        assert [series.new_highs[t], series.new_lows[t]] == [want["highs"], want["lows"]], t
        line += want["adv"] - want["dec"]
        assert series.ad_line[t] == line


def test_sp500_breadth_tracks_the_published_series(data):
    """Our breadth function on the S&P 500 members' closes vs heliar-k/market-base's % of S&P 500 members above their
    50/200-day averages (tests/fixtures, byte-exact copy), on the 287 common days 2025-06-10..2026-07-31.
    Tolerance: mean gap within 2.0 (50-day) / 3.0 (200-day) points, no day beyond 5 / 6 points, correlation
    0.99 / 0.98. The gap is not noise: 498 of the 503 members here against the reference's own member list
    (about 497-499 names per day), and dividend-adjusted closes here (past closes lowered by later dividends pull
    the average down, so slightly more members sit above it: our series runs 1-2.5 points higher)."""
    with open(FIXTURES / "heliar-k_sp500_pct_above_ma_abv.csv", newline="") as fh:
        reference = {row["date"]: row for row in csv.DictReader(fh)}
    report = member_breadth(data, "SP500")
    assert report.members == 498 and report.listed == 503
    days = [str(d) for d in report.series.dates]
    common = [d for d in days if d in reference]
    assert len(common) == 287 and common[0] == "2025-06-10" and common[-1] == "2026-07-31"
    for n, column, mean_gap, max_gap, correlation in [(50, "ABV50", 2.0, 5.0, 0.99), (200, "ABV200", 3.0, 6.0, 0.98)]:
        ours = np.array([report.series.pct_above[n][days.index(d)] for d in common])
        theirs = np.array([float(reference[d][column]) for d in common])
        gaps = ours - theirs
        assert np.abs(gaps).mean() < mean_gap and np.abs(gaps).max() < max_gap, column
        assert np.corrcoef(ours, theirs)[0, 1] > correlation, column


@pytest.mark.parametrize(("asked", "answered"), [
    (date(2026, 7, 25), date(2026, 7, 24)),  # Saturday -> Friday
    (date(2026, 7, 3), date(2026, 7, 2)),  # Independence Day observed (NYSE closed) -> the day before
    (date(2023, 1, 3), date(2023, 1, 3)),  # the first session
])
def test_breadth_as_of_a_non_session_is_the_session_before(data, asked, answered):
    assert member_breadth(data, "IWM", asked).as_of == answered


@pytest.mark.parametrize("day", [date(2023, 1, 2), date(2026, 8, 1), date(2026, 8, 3)])
def test_breadth_as_of_outside_the_closes(data, day):
    with pytest.raises(InputError, match="2023-01-03 to 2026-07-31"):
        member_breadth(data, "IWM", day)


def test_breadth_unknown_index(data):
    with pytest.raises(InputError, match="IWM, SP500"):
        member_breadth(data, "QQQ")


# --- the bundled breadth counts (breadth.npz), and closes the bundle does not have -------------------------------

def assert_same_series(got: BreadthSeries, want: BreadthSeries) -> None:
    assert np.array_equal(got.dates, want.dates)
    for n in (50, 200):
        assert np.array_equal(got.pct_above[n], want.pct_above[n], equal_nan=True), n
        assert np.array_equal(got.counted[n], want.counted[n]), n
    for field in ("advances", "declines", "unchanged", "ad_line", "new_highs", "new_lows", "high_low_counted"):
        assert np.array_equal(getattr(got, field), getattr(want, field)), field


@pytest.mark.parametrize("index", ["IWM", "SP500"])
def test_bundled_breadth_counts_equal_a_fresh_count(data, index):
    """What the bot reads from breadth.npz equals compute_breadth on the raw closes of the index's members."""
    closes, dates, symbols = raw_closes()
    members = set(raw_holdings()) if index == "IWM" else {r["symbol"] for r in raw_fundamentals()
                                                          if r["in_sp500"] == "True"}
    columns = [j for j, s in enumerate(symbols) if s in members]
    fresh = compute_breadth(closes[:, columns], np.array(dates, dtype="datetime64[D]"))
    assert_same_series(member_breadth(data, index).series, fresh)


def test_breadth_of_live_closes_after_the_bundled_ones(data):
    """Closes appended after 2026-07-31 (here: the last 30 sessions' closes again, on the next 30 weekdays): the
    bundled counts, extended by the new days, equal a count over the whole matrix."""
    days = np.busday_offset(data.dates[-1], np.arange(1, 31), roll="forward")
    closes = np.vstack([data.closes, data.closes[-30:]])
    live = replace(data, closes=closes, dates=np.concatenate([data.dates, days]))
    columns = live.columns("IWM")
    assert _known_counts(live, "IWM", columns) is not None  # the bundled days are not counted again
    report = member_breadth(live, "IWM")
    assert report.as_of == date.fromisoformat(str(days[-1]))
    assert_same_series(report.series, compute_breadth(closes[:, columns], live.dates))
    earlier = member_breadth(live, "IWM", date(2025, 4, 8)).latest  # an as_of inside the bundle: the same day
    assert earlier == member_breadth(data, "IWM", date(2025, 4, 8)).latest


def test_breadth_of_another_member_list(data):
    """Another IWM list (an archived holdings file; here the bundled one without one member) is counted afresh."""
    members = data.members.copy()
    members.loc[data.symbols[data.columns("IWM")[0]], "in_iwm"] = False
    other = replace(data, members=members)
    columns = other.columns("IWM")
    assert len(columns) == 1847 and _known_counts(other, "IWM", columns) is None
    assert_same_series(member_breadth(other, "IWM").series, compute_breadth(data.closes[:, columns], data.dates))


# --- sectors --------------------------------------------------------------------------------------------------

STARTS = {  # calendar start of each period (as /iwm sectors: 1 and 3 months back, the last year end, 1 year back)
    "2026-07-31": {"1m": "2026-06-30", "3m": "2026-04-30", "ytd": "2025-12-31", "1y": "2025-07-31"},
    "2026-03-13": {"1m": "2026-02-13", "3m": "2025-12-13", "ytd": "2025-12-31", "1y": "2025-03-13"},
}


def loop_sectors(end: str, starts: dict[str, str]) -> dict[str, dict[str, tuple[float | None, float]]]:
    """sector -> period -> (return %, coverage): constant shares of the 2026-05-05 basket, by loops."""
    closes, dates, symbols = raw_closes()
    column = {s: j for j, s in enumerate(symbols)}

    def last_on_or_before(day: str) -> int:
        return max(i for i, d in enumerate(dates) if d <= day)

    h, e = dates.index("2026-05-05"), dates.index(end)
    out: dict[str, dict[str, tuple[float | None, float]]] = {}
    holdings = raw_holdings()
    for sector in {s for _, s in holdings.values()} | {ALL}:
        members = {t: w for t, (w, s) in holdings.items() if sector in (s, ALL)}
        out[sector] = {}
        for period, start in starts.items():
            s = last_on_or_before(start)
            top = bottom = counted = 0.0
            for ticker, w in members.items():
                j = column.get(ticker)
                if j is None:
                    continue
                a_h, a_s, a_e = float(closes[h, j]), float(closes[s, j]), float(closes[e, j])
                if math.isnan(a_h) or math.isnan(a_s) or math.isnan(a_e):
                    continue
                top += w * a_e / a_h
                bottom += w * a_s / a_h
                counted += w
            out[sector][period] = ((top / bottom - 1) * 100, counted / sum(members.values()))
    return out


@pytest.mark.parametrize(("asked", "end"), [(date(2026, 7, 31), "2026-07-31"), (date(2026, 3, 15), "2026-03-13")])
def test_sector_returns_match_a_loop(data, asked, end):
    report = member_sectors(data, asked)
    want = loop_sectors(end, STARTS[end])
    assert report.as_of == date.fromisoformat(end)
    names = [x.sector for x in report.sectors]
    assert set(names) == set(want) - {ALL} and "Real Estate" in names and len(names) == 11
    weights = [x.weight for x in report.sectors]
    assert weights == sorted(weights, reverse=True)
    for line in (*report.sectors, report.total):
        for period in STARTS[end]:
            value, coverage = want[line.sector][period]
            assert line.returns[period] == pytest.approx(value, rel=1e-9), (line.sector, period)
            assert line.coverage[period] == pytest.approx(coverage, rel=1e-9), (line.sector, period)
    real_estate = next(x for x in report.sectors if x.sector == "Real Estate")
    assert (round(real_estate.weight, 2), real_estate.members) == (5.07, 98)  # holdings file, see test_sectors
    assert round(report.total.weight, 2) == 99.39


def test_sector_periods_before_the_closes_are_missing(data):
    report = member_sectors(data, date(2023, 6, 30))
    assert report.period_starts == {"1m": date(2023, 5, 30), "3m": date(2023, 3, 30), "ytd": None, "1y": None}
    for line in report.sectors:
        assert line.returns["ytd"] is None and line.returns["1y"] is None and line.coverage["1y"] == 0
        assert line.returns["3m"] is not None


@pytest.mark.parametrize("day", [date(2022, 12, 30), date(2026, 8, 4)])
def test_sectors_as_of_outside_the_closes(data, day):
    with pytest.raises(InputError, match="outside the member closes"):
        member_sectors(data, day)


def test_loaded_once(data):
    assert load_member_data() is data
    assert data.closes.dtype == np.float32 and data.closes.shape == (897, 2346)

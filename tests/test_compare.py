"""/iwm compare: total returns since a date, gaps on common dates, symbol validation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from services.compare import compare_answer, parse_symbols, series_label
from services.errors import InputError
from services.market import MarketData

DATA = Path(__file__).parents[1] / "services" / "data"


def bundled(symbol: str, column: str = "adj_close") -> pd.Series:
    frame = pd.read_csv(DATA / f"{symbol}.csv.gz", index_col="date", parse_dates=["date"])
    return frame[column].dropna()


def pct(series: pd.Series, start: str, end: str) -> float:
    return float(series[pd.Timestamp(end)] / series[pd.Timestamp(start)] * 100 - 100)


def common_end(*series: pd.Series) -> pd.Timestamp:
    """The last date every series has, found with plain pandas."""
    return pd.concat(series, axis=1, join="inner").dropna().index[-1]


async def test_default_since_is_the_2021_high_and_gaps_use_the_common_end(renderer):
    report, png = await compare_answer(MarketData([]), renderer)
    assert png.startswith(b"\x89PNG")
    closes = bundled("IWM", "close").loc["2021-11"]
    assert report.since == report.start == closes.idxmax().date() == date(2021, 11, 8)
    assert "242.56" in report.since_note
    iwm, spy, qqq = bundled("IWM"), bundled("SPY"), bundled("QQQ")
    end = common_end(iwm, spy, qqq)
    assert end == pd.Timestamp("2026-10-05")  # QQQ's adj_close is carried to 2026-10-05
    assert report.end == end.date()
    series = {s.symbol: s for s in report.series}
    assert list(series) == ["IWM", "SPY", "QQQ"]
    for symbol, x in [("IWM", iwm), ("SPY", spy), ("QQQ", qqq)]:
        assert series[symbol].end == end.date() and not series[symbol].ends_early
        assert series[symbol].total_return_pct == pytest.approx(pct(x, "2021-11-08", str(end.date())))
    gaps = {g.other: g for g in report.gaps}
    for symbol, x in [("SPY", spy), ("QQQ", qqq)]:
        assert gaps[symbol].as_of == end.date()
        expected = pct(iwm, "2021-11-08", str(end.date())) - pct(x, "2021-11-08", str(end.date()))
        assert gaps[symbol].gap_pp == pytest.approx(expected)
    assert round(gaps["SPY"].gap_pp, 1) == -52.3
    assert report.headline.startswith("IWM since 2021-11-08 to 2026-10-05: vs SPY")


async def test_a_series_ending_earlier_sets_the_common_end_and_is_labelled(renderer):
    report, _ = await compare_answer(MarketData([]), renderer, "iwm spy rut")
    iwm, spy, rut = bundled("IWM"), bundled("SPY"), bundled("RUT", "close")
    end = common_end(iwm, spy, rut)
    assert end == rut.index[-1] == pd.Timestamp("2026-08-21")
    assert report.end == end.date()
    by = {s.symbol: s for s in report.series}
    assert by["RUT"].ends_early and by["RUT"].data_end == end.date()
    assert series_label(by["RUT"]) == "^RUT (Russell 2000 index, price only) (to 2026-08-21)"
    assert not by["IWM"].ends_early and series_label(by["IWM"]) == "IWM (Russell 2000 ETF), total return"
    # IWM and SPY run past the common end: headline to it, their own last close shown as well
    assert by["IWM"].total_return_pct == pytest.approx(pct(iwm, "2021-11-08", "2026-08-21"))
    assert by["IWM"].latest_pct == pytest.approx(pct(iwm, "2021-11-08", str(iwm.index[-1].date())))
    gaps = {g.other: g for g in report.gaps}
    assert gaps["SPY"].as_of == gaps["RUT"].as_of == end.date()
    assert gaps["SPY"].gap_pp == pytest.approx(pct(iwm, "2021-11-08", "2026-08-21")
                                               - pct(spy, "2021-11-08", "2026-08-21"))
    assert "^RUT data ends 2026-08-21" in report.alignment
    assert report.headline.startswith("IWM since 2021-11-08 to 2026-08-21: ")


async def test_rut_is_labelled_price_only(renderer):
    report, _ = await compare_answer(MarketData([]), renderer, "iwm rut")
    rut = report.series[1]
    assert rut.symbol == "RUT" and rut.price_only and "price only" in rut.label
    assert rut.end == date(2026, 8, 21)
    assert rut.total_return_pct == pytest.approx(pct(bundled("RUT", "close"), "2021-11-08", "2026-08-21"))
    gap = report.gaps[0]
    years = (gap.as_of - date(2021, 11, 8)).days / 365.25
    assert gap.as_of == date(2026, 8, 21) and years < gap.gap_pp < 2 * years  # IWM's dividends, 1-2% a year


async def test_since_before_a_series_starts_measures_all_from_its_first_close(renderer):
    report, _ = await compare_answer(MarketData([]), renderer, since=date(1999, 1, 1))
    iwm, spy, qqq = bundled("IWM"), bundled("SPY"), bundled("QQQ")
    first = max(x.index[0] for x in (iwm, spy, qqq))
    assert first == iwm.index[0] == pd.Timestamp("2000-05-26")
    assert report.since == date(1999, 1, 1) and report.start == first.date()
    assert report.start_note == "IWM starts 2000-05-26: every series is measured from there"
    assert report.base == "IWM"
    assert report.headline.startswith("IWM since 1999-01-01 (from 2000-05-26) to 2026-10-05: vs SPY")
    for s, x in zip(report.series, (iwm, spy, qqq), strict=True):
        assert s.start == first.date()
        assert s.total_return_pct == pytest.approx(pct(x, "2000-05-26", "2026-10-05"))


async def test_series_without_data_in_the_window(renderer):
    report, _ = await compare_answer(MarketData([]), renderer, ["IWM", "RUT"], since=date(2026, 9, 1))
    rut = report.series[1]
    assert rut.total_return_pct is None and rut.note == "no data for this window (data ends 2026-08-21)"
    assert report.gaps == ()


async def test_since_on_a_holiday_uses_the_close_before(renderer):
    report, _ = await compare_answer(MarketData([]), renderer, "SPY,IWM", since=date(2022, 1, 1),
                                     as_of=date(2022, 12, 30))
    assert report.series[0].symbol == "SPY" and report.base == "IWM"
    assert report.series[1].start == date(2021, 12, 31) and report.series[1].end == date(2022, 12, 30)
    assert report.series[1].total_return_pct == pytest.approx(pct(bundled("IWM"), "2021-12-31", "2022-12-30"))


def test_symbols_are_validated():
    assert parse_symbols("iwm, spy;qqq  ^rut") == ("IWM", "SPY", "QQQ", "RUT")
    assert parse_symbols(["spy", "SPY"]) == ("SPY",)
    with pytest.raises(InputError, match=r"XYZ.*IWM, SPY, QQQ, RUT"):
        parse_symbols("IWM,XYZ")
    with pytest.raises(InputError):
        parse_symbols(" , ")


@pytest.mark.parametrize(("since", "as_of"), [(date(2023, 1, 3), date(2022, 1, 3)), (None, date(2030, 1, 2)),
                                              (date(2030, 1, 2), None), (date(2026, 10, 5), None)])
async def test_bad_dates(renderer, since, as_of):
    with pytest.raises(InputError):
        await compare_answer(MarketData([]), renderer, "IWM,SPY", since=since, as_of=as_of)

"""/iwm compare: total returns since a date, gaps on common dates, symbol validation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from services.compare import compare_answer, parse_symbols
from services.errors import InputError
from services.market import MarketData

DATA = Path(__file__).parents[1] / "services" / "data"


def bundled(symbol: str, column: str = "adj_close") -> pd.Series:
    frame = pd.read_csv(DATA / f"{symbol}.csv.gz", index_col="date", parse_dates=["date"])
    return frame[column].dropna()


def pct(series: pd.Series, start: str, end: str) -> float:
    return float(series[pd.Timestamp(end)] / series[pd.Timestamp(start)] * 100 - 100)


async def test_default_since_is_the_2021_high_and_gaps_use_common_dates(renderer):
    report, png = await compare_answer(MarketData([]), renderer)
    assert png.startswith(b"\x89PNG")
    closes = bundled("IWM", "close").loc["2021-11"]
    assert report.since == closes.idxmax().date() == date(2021, 11, 8)
    assert "242.56" in report.since_note
    iwm, spy, qqq = bundled("IWM"), bundled("SPY"), bundled("QQQ")
    series = {s.symbol: s for s in report.series}
    assert list(series) == ["IWM", "SPY", "QQQ"]
    assert series["IWM"].end == date(2026, 10, 5)
    assert series["IWM"].total_return_pct == pytest.approx(pct(iwm, "2021-11-08", "2026-10-05"))
    assert series["SPY"].end == date(2026, 10, 5) and series["QQQ"].end == date(2025, 9, 26)
    assert series["QQQ"].total_return_pct == pytest.approx(pct(qqq, "2021-11-08", "2025-09-26"))
    gaps = {g.other: g for g in report.gaps}
    assert gaps["SPY"].as_of == date(2026, 10, 5)
    expected = pct(iwm, "2021-11-08", "2026-10-05") - pct(spy, "2021-11-08", "2026-10-05")
    assert gaps["SPY"].gap_pp == pytest.approx(expected)
    assert round(gaps["SPY"].gap_pp, 1) == -52.3
    assert gaps["QQQ"].as_of == date(2025, 9, 26)
    assert gaps["QQQ"].symbol_pct == pytest.approx(pct(iwm, "2021-11-08", "2025-09-26"))
    assert "own last date" in report.alignment


async def test_rut_is_labelled_price_only(renderer):
    report, _ = await compare_answer(MarketData([]), renderer, "iwm rut")
    rut = report.series[1]
    assert rut.symbol == "RUT" and rut.price_only and "price only" in rut.label
    assert rut.end == date(2026, 8, 21)
    assert rut.total_return_pct == pytest.approx(pct(bundled("RUT", "close"), "2021-11-08", "2026-08-21"))
    gap = report.gaps[0]
    years = (gap.as_of - date(2021, 11, 8)).days / 365.25
    assert gap.as_of == date(2026, 8, 21) and years < gap.gap_pp < 2 * years  # IWM's dividends, 1-2% a year


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
                                              (date(1990, 1, 2), None), (date(2026, 10, 5), None)])
async def test_bad_dates(renderer, since, as_of):
    with pytest.raises(InputError):
        await compare_answer(MarketData([]), renderer, "IWM,SPY", since=since, as_of=as_of)

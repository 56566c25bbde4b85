"""Levels math on the bundled real data, against values computed here independently with plain Python."""

from __future__ import annotations

import csv
import gzip
from datetime import date
from importlib import resources
from itertools import pairwise

import pytest

from services.config import ConfigError, Zones
from services.errors import InputError
from services.levels import compute_levels, verdict
from services.market import MarketData

Z = Zones()


def plain_rows(symbol: str) -> list[dict[str, str]]:
    raw = resources.files("services").joinpath("data", f"{symbol}.csv.gz").read_bytes()
    return list(csv.DictReader(gzip.decompress(raw).decode().splitlines()))


IWM_ROWS = plain_rows("IWM")
SPY_ROWS = plain_rows("SPY")


def upto(rows: list[dict[str, str]], day: str) -> list[dict[str, str]]:
    return [r for r in rows if r["date"] <= day]


def month_end_adj(rows: list[dict[str, str]]) -> list[tuple[str, float]]:
    last: dict[str, float] = {}
    for r in rows:
        if r["adj_close"]:
            last[r["date"][:7]] = float(r["adj_close"])
    return sorted(last.items())


@pytest.fixture(scope="module")
def bars():
    import asyncio

    async def load():
        market = MarketData([])
        return await market.bars("IWM"), await market.bars("SPY")

    return asyncio.run(load())


@pytest.mark.parametrize("day", ["2021-11-08", "2022-06-16", "2024-12-31", "2025-09-26", "2026-08-21"])
def test_levels_match_an_independent_computation(bars, day):
    iwm, spy = bars
    report = compute_levels(iwm, spy, Z, date.fromisoformat(day))
    rows = upto(IWM_ROWS, day)
    closes = [float(r["close"]) for r in rows]
    assert report.as_of.isoformat() == rows[-1]["date"]
    assert report.close == pytest.approx(closes[-1])
    assert report.prev_close == pytest.approx(closes[-2])
    assert report.ath_close.value == pytest.approx(max(closes))
    assert report.ath_intraday.value == pytest.approx(max(float(r["high"]) for r in rows))
    assert report.sma50 == pytest.approx(sum(closes[-50:]) / 50)
    assert report.sma200 == pytest.approx(sum(closes[-200:]) / 200)
    year_start = f"{int(day[:4]) - 1}{day[4:]}"
    last_year = [r for r in rows if r["date"] > year_start]
    assert report.week52_high.value == pytest.approx(max(float(r["high"]) for r in last_year))
    assert report.week52_low.value == pytest.approx(min(float(r["low"]) for r in last_year))
    months = month_end_adj(rows)
    streak = 0
    for (_, prev), (_, cur) in reversed(list(pairwise(months))):
        if cur <= prev:
            break
        streak += 1
    assert report.up_streak == streak
    spy_adj = {r["date"]: float(r["adj_close"]) for r in upto(SPY_ROWS, day) if r["adj_close"]}
    common = [r["date"] for r in rows if r["date"] in spy_adj and r["adj_close"]]
    iwm_adj = {r["date"]: float(r["adj_close"]) for r in rows if r["adj_close"]}
    assert report.rs_ratio == pytest.approx(iwm_adj[common[-1]] / spy_adj[common[-1]])
    assert report.rs_as_of.isoformat() == common[-1]


def test_worked_example_2025_09_26(bars):
    """The issue's worked example, as of 2025-09-26."""
    r = compute_levels(*bars, Z, date(2025, 9, 26))
    assert r.close == pytest.approx(241.34, abs=0.005)
    assert r.verdict == "testing resistance"
    assert r.closes_above_resistance == 0 and r.last_close_above_resistance is None
    assert r.up_streak == 5 and r.month_in_progress
    assert [str(p) for p in r.monthly_returns.index[-5:]] == ["2025-05", "2025-06", "2025-07", "2025-08", "2025-09"]
    assert (r.high_2021_intraday.value, r.high_2021_intraday.day) == (pytest.approx(244.46, abs=0.005),
                                                                      date(2021, 11, 8))
    assert (r.high_2021_close.value, r.high_2021_close.day) == (pytest.approx(242.56, abs=0.005), date(2021, 11, 8))
    assert (r.ath_intraday.value, r.ath_intraday.day) == (pytest.approx(247.18, abs=0.005), date(2025, 9, 23))
    assert (r.ath_close.value, r.ath_close.day) == (pytest.approx(244.84, abs=0.005), date(2025, 9, 18))


def test_a_completed_month_is_not_month_to_date(bars):
    assert not compute_levels(*bars, Z, date(2025, 8, 29)).month_in_progress  # last session of August 2025
    assert compute_levels(*bars, Z, date(2025, 8, 28)).month_in_progress


def test_a_weekend_as_of_uses_the_friday(bars):
    assert compute_levels(*bars, Z, date(2025, 9, 28)).as_of == date(2025, 9, 26)


@pytest.mark.parametrize("day", [date(1999, 12, 31), date(2030, 1, 1)])
def test_as_of_outside_the_data_is_refused(bars, day):
    with pytest.raises(InputError):
        compute_levels(*bars, Z, day)


@pytest.mark.parametrize(("close", "expected"), [
    (199.99, "below support"), (200.0, "between support and the entry zone"), (205.0, "in the entry zone"),
    (220.0, "in the entry zone"), (230.0, "between the entry zone and resistance"), (240.0, "testing resistance"),
    (245.0, "testing resistance"), (245.01, "broken out above resistance"),
])
def test_verdicts(close, expected):
    assert verdict(close, Z) == expected


@pytest.mark.parametrize("text", ["200,220-205,240-245", "250,255-260,240-245", "0,205-220,240-245", "x", "1,2,3"])
def test_bad_levels_are_refused(text):
    with pytest.raises(ConfigError):
        Zones.parse(text)


def test_levels_parse():
    assert Zones.parse("190, 195-210, 250-255") == Zones(190, 195, 210, 250, 255)


def test_levels_formats():
    zones = Zones(190, 195.5, 210, 250, 255)
    assert zones.values() == (190, 195.5, 210, 250, 255)
    assert zones.to_text() == "190,195.5-210,250-255" and Zones.parse(zones.to_text()) == zones
    assert zones.describe() == "support 190 · entry 195.5–210 · resistance 250–255"


def test_settings_refuse_a_keyless_stooq_and_read_the_rest():
    from services.config import Settings

    with pytest.raises(ConfigError, match="STOOQ_API_KEY"):
        Settings.from_env({"MARKET_DATA_PROVIDER": "stooq"})
    with pytest.raises(ConfigError, match="MARKET_DATA_PROVIDER"):
        Settings.from_env({"MARKET_DATA_PROVIDER": "bloomberg"})
    settings = Settings.from_env({"MARKET_DATA_PROVIDER": "stooq", "STOOQ_API_KEY": "k",
                                  "LEVELS": "190,195-210,250-255", "SHARD_COUNT": "4", "SHARD_IDS": "2,3"})
    assert settings.zones == Zones(190, 195, 210, 250, 255) and settings.shard_ids == (2, 3)


def test_relative_strength_ending_before_iwm_is_measured_to_the_common_day_and_said(bars):
    """A benchmark whose data ends early (here SPY cut at 2026-08-21, as a stale fallback would be): the RS
    ratio and its changes are measured to the last day both have, and the chart panel says so."""
    import pandas as pd

    from services.levels import levels_chart

    iwm, spy = bars
    short = spy.until(date(2026, 8, 21))
    r = compute_levels(iwm, short, Z)
    frames = {s: pd.DataFrame(rows).set_index("date") for s, rows in (("IWM", IWM_ROWS), ("SPY", SPY_ROWS))}
    adj = {s: pd.to_numeric(f["adj_close"]).dropna() for s, f in frames.items()}
    adj["SPY"] = adj["SPY"].loc[:"2026-08-21"]
    ratio = (adj["IWM"] / adj["SPY"]).dropna()
    ratio.index = pd.DatetimeIndex(ratio.index)
    assert r.as_of == date(2026, 10, 5) and r.rs_as_of == ratio.index[-1].date() == date(2026, 8, 21)
    assert r.rs_ratio == pytest.approx(ratio.iloc[-1])
    start = ratio.loc[: ratio.index[-1] - pd.DateOffset(months=3)].iloc[-1]
    assert r.rs_changes[3] == pytest.approx((ratio.iloc[-1] / start - 1) * 100)
    chart = levels_chart(iwm, short, r, "1y")
    assert chart.rs_note == "IWM/SPY to 2026-08-21, the last day both have (SPY data ends there)"
    assert levels_chart(iwm, spy, compute_levels(iwm, spy, Z), "1y").rs_note == ""

"""scripts/bundle_data.py: the overlap check between sources, and the bundled IWM/SPY/QQQ/^RUT files it built."""

from __future__ import annotations

import gzip
import math

import pandas as pd
import pytest

from scripts import bundle_data
from scripts.bundle_data import SourceMismatch, check_overlap, extend_history
from services.market import read_bundled_csv


def bars(rows: dict[str, tuple[float, float, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["open", "high", "low", "close"])
    frame.index = pd.DatetimeIndex(frame.index)
    return frame


OLD = bars({"2026-08-20": (299.27, 300.04, 297.04, 297.67), "2026-08-21": (299.85, 300.33, 298.17, 299.96)})


def test_equal_sources_pass_the_overlap_check():
    new = bars({"2026-08-21": (299.85, 300.33, 298.17, 299.96), "2026-08-24": (299.55, 299.74, 297.40, 297.97)})
    assert check_overlap("IWM", OLD, new) == 1


def test_float32_noise_and_a_cent_are_not_a_difference():
    new = bars({"2016-07-06": (1138.92, 1147.91, 1131.71, 1147.34)})
    yahoo = bars({"2016-07-06": (1138.92004, 1147.91003, 1131.70996, 1147.32996)})  # float32 1147.33
    assert check_overlap("^RUT", yahoo, new) == 1


def test_a_two_cent_difference_refuses_the_build():
    new = bars({"2026-08-21": (299.85, 300.33, 298.17, 299.98)})
    with pytest.raises(SourceMismatch) as refused:
        check_overlap("IWM", OLD, new)
    message = str(refused.value)
    assert message.startswith("IWM 2026-08-21 close: 299.96 in the existing history, 299.98 in the new source")
    assert "not building" in message


def test_extend_history_adds_only_days_after_the_old_end():
    new = bars({"2026-08-20": (299.27, 300.04, 297.04, 297.67), "2026-08-24": (299.55, 299.74, 297.40, 297.97)})
    extended = extend_history("IWM", OLD, new)
    assert list(extended.index.strftime("%Y-%m-%d")) == ["2026-08-20", "2026-08-21", "2026-08-24"]
    with pytest.raises(SourceMismatch, match="IWM 2026-08-20 open"):
        extend_history("IWM", OLD, bars({"2026-08-20": (299.30, 300.04, 297.04, 297.67)}))


# --- the bundled files ----------------------------------------------------------------------------------------

# Rows copied from the extension files (date: open, high, low, close, volume), file line numbers after the header.
SPOT = {
    # johnamcminn-hub/market-data-public data/IWM.csv @ 016f6530, line 2 and line 31
    ("IWM", "2026-10-05"): (281.95, 284.24, 280.03, 283.38, 22099459),
    ("IWM", "2026-08-24"): (299.55, 299.74, 297.40, 297.97, 12868866),
    # data/SPY.csv @ 016f6530, line 13 (SPY's usual September ex-dividend Friday) and line 101 (the first row)
    ("SPY", "2026-09-18"): (761.31, 762.00, 757.971, 761.69, 65395148),
    ("SPY", "2026-05-13"): (738.47, 743.91, 735.47, 742.31, 44200203),
    # data/QQQ.csv @ 016f6530, line 2 and line 101
    ("QQQ", "2026-10-05"): (749.35, 756.92, 749.08, 756.20, 25192570),
    ("QQQ", "2026-05-13"): (709.96, 716.65, 704.83, 714.71, 40012526),
    # heliar-k/market-base data/indices/RUT.csv @ 7c01e04, lines 1614 and 2553 (volume not used)
    ("RUT", "2022-11-21"): (1842.96, 1842.96, 1828.99, 1839.14, None),
    ("RUT", "2026-08-21"): (3007.16, 3020.24, 3000.05, 3017.87, None),
}


@pytest.fixture(scope="module")
def bundled() -> dict[str, pd.DataFrame]:
    return {s: read_bundled_csv(s) for s in ["IWM", "SPY", "QQQ", "RUT"]}


@pytest.mark.parametrize(("symbol", "end"), [("IWM", "2026-10-05"), ("SPY", "2026-10-05"), ("QQQ", "2026-10-05"),
                                             ("RUT", "2026-08-21")])
def test_bundled_prices_end_there_and_are_consistent(bundled, symbol, end):
    frame = bundled[symbol]
    assert frame.index[-1] == pd.Timestamp(end)
    assert frame.index.is_unique and frame.index.is_monotonic_increasing
    ohlc = frame[["open", "high", "low", "close"]].dropna()
    assert (ohlc["low"] <= ohlc[["open", "close"]].min(axis=1)).all()
    assert (ohlc[["open", "close"]].max(axis=1) <= ohlc["high"]).all()


@pytest.mark.parametrize(("key", "row"), SPOT.items())
def test_bundled_rows_are_the_extension_rows(bundled, key, row):
    symbol, day = key
    got = bundled[symbol].loc[pd.Timestamp(day)]
    assert [got["open"], got["high"], got["low"], got["close"]] == pytest.approx(row[:4], abs=1e-6)
    if row[4] is None:
        assert math.isnan(got["volume"])
    else:
        assert got["volume"] == row[4]


def test_adjusted_closes_are_carried_by_price_returns_and_never_invented(bundled):
    # dsturdy/Factor_Attribution IWM.csv row 2026-07-31: 291.20001220703125, equal to that day's close
    # (kittycapital IWM.csv 2026-07-31 Close 291.20001220703125), so IWM's carried adj_close is its close.
    iwm = bundled["IWM"].loc["2026-07-31":]
    assert (iwm["adj_close"] - iwm["close"]).abs().max() < 1e-5
    # dsturdy SPY.csv row 2026-07-31: 747.030029296875; market-data-public SPY closes 747.03 (07-31), 774.83 (10-05).
    assert bundled["SPY"].loc[pd.Timestamp("2026-10-05"), "adj_close"] == pytest.approx(
        747.030029296875 * 774.83 / 747.03, abs=1e-5)
    # SPY: no traded prices between the taa-dashboard file (to 2025-09-26) and market-data-public (from 2026-05-13).
    assert bundled["SPY"].loc["2025-09-27":"2026-05-12", "close"].isna().all()
    # QQQ: no adjusted source after 2025-09-26, no rows in the gap; adj_close is carried across it and on to
    # 2026-10-05 by close-to-close returns. taa-dashboard QQQ.csv 2025-09-26: Adj Close = Close = 595.969970703125,
    # so the carried adj_close is the traded close: market-data-public QQQ 714.71 (2026-05-13), 756.20 (2026-10-05).
    qqq = bundled["QQQ"]
    assert qqq.loc["2025-09-27":"2026-05-12"].empty
    assert qqq["adj_close"].notna().all()
    assert qqq.loc[pd.Timestamp("2026-05-13"), "adj_close"] == pytest.approx(714.71, abs=1e-5)
    assert qqq.loc[pd.Timestamp("2026-10-05"), "adj_close"] == pytest.approx(756.20, abs=1e-5)
    assert (qqq.loc["2025-09-26":, "adj_close"] - qqq.loc["2025-09-26":, "close"]).abs().max() < 1e-5
    # ^RUT is a price index: adj_close is its close.
    rut = bundled["RUT"]
    assert (rut["adj_close"] == rut["close"]).all()


def test_aaii_bundle_drops_the_placeholder_week(tmp_path, monkeypatch):
    source = tmp_path / "aaii_sentiment_weekly.csv"
    source.write_text("reported_date,bullish,neutral,bearish,total\n1996-01-04,0.55,0.18,0.27,1.0\n"
                      "1996-01-11,42,42,42,42\n1996-01-18,0.42,0.29,0.29,1.0\n", encoding="utf-8")
    monkeypatch.setattr(bundle_data, "OUT", tmp_path)
    bundle_data.write_aaii(source)
    with gzip.open(tmp_path / "AAII.weekly.csv.gz", "rt") as fh:
        assert fh.read() == "date,bullish,neutral,bearish\n1996-01-04,0.55,0.18,0.27\n1996-01-18,0.42,0.29,0.29\n"

"""Build the bundled market data in services/data/ from the shared source files.

Run by hand when the source files change:  python scripts/bundle_data.py SOURCE_DIR
SOURCE_DIR holds the files listed in services/data/SOURCES.md (the newer price files in SOURCE_DIR/extension/).
Output: one gzip CSV per symbol with the columns date,open,high,low,close,adj_close,volume (empty where the source
has no value), plus the other data files. A newer source only adds days after an older one ends, and the build
stops if the two differ by more than a cent on a day both have.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from services.market import COLUMNS  # what read_bundled_csv expects
from services.sectors import FUNDS

OUT = Path(__file__).resolve().parent.parent / "services" / "data"
SECTOR_ETFS = [f.symbol for f in FUNDS]  # the funds /iwm sectors reports
PRICES = ["open", "high", "low", "close"]
CENT = 0.01
# Yahoo's values are float32 (1147.33 is stored as 1147.32996): allow that rounding on top of the cent.
FLOAT32_SLACK = 2.0**-23
# heliar-k's ^RUT opens at the previous close (low/high stretched to it) on its first 28 sessions,
# 2016-06-28..2016-08-05; from 2016-08-08 on all four prices agree with Yahoo's ^RUT.
RUT_FULL_CHECK_FROM = "2016-08-08"
# Carrying SPY's adjusted close on by price returns needs its traded close: the extension's closes equal the
# dsturdy adjusted closes from SPY's June 2026 ex-dividend day on (the adjustment is as of 2026-08-03).
SPY_ADJ_EQUALS_CLOSE_FROM = "2026-06-18"


FRED_RATES = "heliar-k_market-base_fred_rates.csv"  # the wide FRED table in SOURCE_DIR/extension/
DAILY_RATES = ["DFF", "DFEDTARL", "DFEDTARU", "DGS2", "DGS10"]  # the columns /iwm rates reads
DAILY_RATES_FROM = "2000-01-01"  # the easing-cycle study starts in 2000


class SourceMismatch(ValueError):
    """Two sources of the same prices disagree by more than a cent."""


def check_overlap(symbol: str, old: pd.DataFrame, new: pd.DataFrame, columns: Sequence[str] = PRICES) -> int:
    """Raise SourceMismatch if `old` and `new` differ by more than a cent in a column on a day both have a value.

    Returns the number of days compared."""
    days = old.index.intersection(new.index)
    for column in columns:
        a, b = old.loc[days, column], new.loc[days, column]
        both = a.notna() & b.notna()
        slack = CENT + FLOAT32_SLACK * pd.concat([a.abs(), b.abs()], axis=1).max(axis=1)
        bad = both & ((a - b).abs() > slack)
        if bad.any():
            day = bad.idxmax()
            raise SourceMismatch(
                f"{symbol} {day.date()} {column}: {a[day]} in the existing history, {b[day]} in the new source "
                f"(differ by more than $0.01 on {int(bad.sum())} day(s)); not building"
            )
    return len(days)


def extend_history(symbol: str, old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """`old` with the rows of `new` after the last day `old` has a traded price, once the overlap is checked."""
    checked = check_overlap(symbol, old, new)
    last = old[PRICES].dropna(how="all").index[-1]
    added = new[new.index > last]
    print(f"{symbol}: {checked} overlapping days agree; {len(added)} days added after {last.date()}")
    return pd.concat([old, added])


def read_yahoo(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, parse_dates=["Date"], index_col="Date")
    frame = frame.rename(columns=lambda c: c.strip().lower().replace(" ", "_"))
    return frame


def read_adjusted(path: Path) -> pd.Series:
    return pd.read_csv(path, parse_dates=["Date"], index_col="Date")["Close"]


def read_market_data_public(path: Path) -> pd.DataFrame:
    """johnamcminn-hub/market-data-public: timestamp,open,high,low,close,volume, newest first, CRLF."""
    return pd.read_csv(path, parse_dates=["timestamp"], index_col="timestamp").sort_index()


def write(symbol: str, frame: pd.DataFrame) -> None:
    frame = frame.reindex(columns=COLUMNS).sort_index()
    frame.index.name = "date"
    assert frame.index.is_unique and frame.index.is_monotonic_increasing, symbol
    with gzip.open(OUT / f"{symbol.replace('^', '')}.csv.gz", "wt", compresslevel=9) as fh:
        frame.to_csv(fh, float_format="%.6f", date_format="%Y-%m-%d")
    print(f"{symbol}: {frame.index[0].date()} .. {frame.index[-1].date()} ({len(frame)} rows)")


def extend_by_price_returns(adj: pd.Series, close: pd.Series) -> pd.Series:
    """Carry an adjusted series past its end with close-to-close returns (valid while no ex-dividend date)."""
    last = adj.index[-1]
    tail = close[close.index >= last]
    assert tail.index[0] == last, f"no close on {last.date()} to carry the adjusted series from"
    return pd.concat([adj, (adj[last] * tail / tail.iloc[0]).iloc[1:]])


def bundle_fred_rates(src: Path) -> None:
    """services/data/rates.daily.csv.gz (DFF, target range, DGS2, DGS10 from 2000) and FEDFUNDS.monthly.csv.gz
    (the byte-exact shared copy, extended with the FRED table's later months) from the wide FRED table.

    Values are copied as text, as FRED writes them. Stops if the two FEDFUNDS sources differ on a common month."""
    table = pd.read_csv(src / "extension" / FRED_RATES, dtype=str, index_col="date")
    daily = table.loc[table.index >= DAILY_RATES_FROM, DAILY_RATES].dropna(how="all")
    with gzip.open(OUT / "rates.daily.csv.gz", "wt", compresslevel=9) as fh:
        daily.to_csv(fh, lineterminator="\n")
    print(f"rates.daily: {daily.index[0]} .. {daily.index[-1]} ({len(daily)} rows)")

    old_text = (src / "FEDFUNDS.monthly.csv").read_text()
    old = pd.read_csv(src / "FEDFUNDS.monthly.csv", dtype=str, index_col="DATE")["FEDFUNDS"]
    new = table["FEDFUNDS"].dropna()
    common = old.index.intersection(new.index)
    differ = [m for m in common if float(old[m]) != float(new[m])]
    if differ:
        raise SourceMismatch(f"FEDFUNDS {differ[0]}: {old[differ[0]]} in the shared file, {new[differ[0]]} in "
                             f"{FRED_RATES} ({len(differ)} month(s) differ); not building")
    added = new[new.index > old.index[-1]]
    text = old_text + ("" if old_text.endswith("\n") else "\n") + "".join(f"{m},{v}\n" for m, v in added.items())
    with gzip.open(OUT / "FEDFUNDS.monthly.csv.gz", "wt", compresslevel=9) as fh:
        fh.write(text)
    print(f"FEDFUNDS: {len(common)} common months agree; {len(added)} months added after {old.index[-1]}")


def main(src: Path) -> None:
    sectors, extension = src / "sectors", src / "extension"
    frames: dict[str, pd.DataFrame] = {}  # every source is read and checked before anything is written

    # IWM: traded (split-adjusted) OHLCV to 2026-08-21 (kittycapital), then to 2026-10-05 (market-data-public).
    # Adjusted close from the dsturdy series (to 2026-07-31), carried on by price returns: that leaves out IWM's
    # September 2026 distribution (see SOURCES.md).
    iwm = extend_history("IWM", read_yahoo(src / "IWM.daily.noadj.to-2026-08.csv"),
                         read_market_data_public(extension / "johnamcminn_market-data-public_IWM.csv"))
    iwm["adj_close"] = extend_by_price_returns(read_adjusted(sectors / "IWM.close.full.csv"), iwm["close"])
    frames["IWM"] = iwm

    # SPY: traded OHLCV to 2025-09-26 (taa-dashboard) and 2026-05-13..2026-10-05 (market-data-public); adjusted
    # close to 2026-07-31 (dsturdy), carried on by price returns (leaving out the September 2026 distribution).
    spy_new = read_market_data_public(extension / "johnamcminn_market-data-public_SPY.csv")
    spy_adj = read_adjusted(sectors / "SPY.close.full.csv")
    check_overlap("SPY", spy_adj[SPY_ADJ_EQUALS_CLOSE_FROM:].to_frame("close"), spy_new, ["close"])
    spy = extend_history("SPY", read_yahoo(src / "SPY.daily.csv").drop(columns="adj_close"), spy_new)
    frames["SPY"] = spy.join(extend_by_price_returns(spy_adj, spy["close"]).rename("adj_close"), how="outer")

    # QQQ: taa-dashboard to 2025-09-26, then OHLCV only from 2026-05-13 (no adjusted source, nothing to carry from).
    frames["QQQ"] = extend_history("QQQ", read_yahoo(src / "QQQ.daily.csv"),
                                   read_market_data_public(extension / "johnamcminn_market-data-public_QQQ.csv"))

    # ^RUT: Yahoo to 2022-11-18 (xjcarter), then heliar-k to 2026-08-21. A price index: adj_close is close.
    rut_old = read_yahoo(src / "RUT.index.daily.csv")
    rut_new = pd.read_csv(extension / "heliar-k_market-base_RUT_daily.csv", parse_dates=["date"], index_col="date")
    check_overlap("^RUT", rut_old, rut_new, ["close"])
    rut = extend_history("^RUT", rut_old, rut_new[RUT_FULL_CHECK_FROM:].assign(adj_close=lambda f: f["close"]))
    rut["volume"] = float("nan")  # Yahoo's ^RUT volume is a copy of ^GSPC volume, heliar-k's is often 0: not used
    frames["^RUT"] = rut

    for symbol in SECTOR_ETFS:
        frame = read_adjusted(sectors / f"{symbol}.close.full.csv").rename("adj_close").to_frame()
        if symbol == "KRE":  # one year of traded OHLCV as well
            raw = pd.read_csv(src / "KRE.daily.1y.csv", parse_dates=["date"], index_col="date")
            frame = frame.join(raw, how="outer")
        frames[symbol] = frame

    OUT.mkdir(parents=True, exist_ok=True)
    for symbol, frame in frames.items():
        write(symbol, frame)
    bundle_fred_rates(src)
    for name in ["SP500.shiller.monthly.csv", "IWM_holdings.2026-05-05.csv"]:
        with open(src / name, "rb") as fin, gzip.open(OUT / f"{name}.gz", "wb", compresslevel=9) as fout:
            shutil.copyfileobj(fin, fout)
        print(f"copied {name}")


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    except SourceMismatch as exc:
        sys.exit(f"bundle_data: {exc}")

"""Build the bundled market data in services/data/ from the shared source files.

Run by hand when the source files change:  python scripts/bundle_data.py SOURCE_DIR
SOURCE_DIR holds the files listed in services/data/SOURCES.md. Output: one gzip CSV per symbol with the columns
date,open,high,low,close,adj_close,volume (empty where the source has no value), plus the other data files.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import pandas as pd

from services.market import COLUMNS  # what read_bundled_csv expects
from services.sectors import FUNDS

OUT = Path(__file__).resolve().parent.parent / "services" / "data"
SECTOR_ETFS = [f.symbol for f in FUNDS]  # the funds /iwm sectors reports


def read_yahoo(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, parse_dates=["Date"], index_col="Date")
    frame = frame.rename(columns=lambda c: c.strip().lower().replace(" ", "_"))
    return frame


def read_adjusted(path: Path) -> pd.Series:
    return pd.read_csv(path, parse_dates=["Date"], index_col="Date")["Close"]


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
    return pd.concat([adj, (adj[last] * tail / tail.iloc[0]).iloc[1:]])


def main(src: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    sectors = src / "sectors"

    # IWM: traded (split-adjusted) OHLCV to 2026-08-21; adjusted close from the dsturdy series (to 2026-07-31),
    # carried to 2026-08-21 by price returns: IWM goes ex-dividend in Mar/Jun/Sep/Dec, none in that window.
    iwm = read_yahoo(src / "IWM.daily.noadj.to-2026-08.csv")
    iwm["adj_close"] = extend_by_price_returns(read_adjusted(sectors / "IWM.close.full.csv"), iwm["close"])
    write("IWM", iwm)

    # SPY: traded OHLCV to 2025-09-26 (taa-dashboard); adjusted close to 2026-07-31 (dsturdy).
    spy = read_yahoo(src / "SPY.daily.csv").drop(columns="adj_close")
    spy = spy.join(read_adjusted(sectors / "SPY.close.full.csv").rename("adj_close"), how="outer")
    write("SPY", spy)

    write("QQQ", read_yahoo(src / "QQQ.daily.csv"))

    rut = read_yahoo(src / "RUT.index.daily.csv")
    rut["volume"] = float("nan")  # Yahoo's ^RUT volume is a copy of ^GSPC volume: meaningless
    write("^RUT", rut)

    for symbol in SECTOR_ETFS:
        frame = read_adjusted(sectors / f"{symbol}.close.full.csv").rename("adj_close").to_frame()
        if symbol == "KRE":  # one year of traded OHLCV as well
            raw = pd.read_csv(src / "KRE.daily.1y.csv", parse_dates=["date"], index_col="date")
            frame = frame.join(raw, how="outer")
        write(symbol, frame)

    for name in ["FEDFUNDS.monthly.csv", "SP500.shiller.monthly.csv", "IWM_holdings.2026-05-05.csv"]:
        with open(src / name, "rb") as fin, gzip.open(OUT / f"{name}.gz", "wb", compresslevel=9) as fout:
            shutil.copyfileobj(fin, fout)
        print(f"copied {name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

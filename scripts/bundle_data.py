"""Build the bundled market data in services/data/ from the shared source files.

Run by hand when the source files change:  python scripts/bundle_data.py SOURCE_DIR
SOURCE_DIR holds the files listed in services/data/SOURCES.md (the newer price files in SOURCE_DIR/extension/).
Output: one gzip CSV per symbol with the columns date,open,high,low,close,adj_close,volume (empty where the source
has no value), plus the other data files (AAII's weekly survey from SOURCE_DIR/aaii/). A newer source only adds
days after an older one ends, and the build stops if the two differ by more than a cent on a day both have.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from services.market import COLUMNS  # what read_bundled_csv expects
from services.members import load_member_data
from services.members._breadth import BREADTH_FILE, bundle_arrays
from services.members._data import FIELDS, holdings_weights
from services.sectors import FUNDS, parse_holdings

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
# AAII's sentiment.xls has one placeholder row, 1996-01-11, with 42 in every column: no survey week, dropped.
AAII_PLACEHOLDER = "1996-01-11"
AAII_COLUMNS = ["bullish", "neutral", "bearish"]


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


def write_aaii(path: Path) -> None:
    """AAII's weekly survey (aaii/aaii_sentiment_weekly.csv, fractions of 1) as AAII.weekly.csv.gz: date and the
    three shares, values untouched, the placeholder row dropped."""
    frame = pd.read_csv(path, dtype=str).rename(columns={"reported_date": "date"})[["date", *AAII_COLUMNS]]
    placeholder = frame["date"] == AAII_PLACEHOLDER
    assert (frame.loc[placeholder, AAII_COLUMNS] == "42").all(axis=None), "the 1996-01-11 placeholder changed"
    frame = frame[~placeholder]
    shares = frame[AAII_COLUMNS].astype(float)
    assert ((shares.sum(axis=1) - 1).abs() <= CENT).all(), "an AAII week whose shares do not add up to 1"
    assert frame["date"].is_unique and frame["date"].is_monotonic_increasing
    with gzip.open(OUT / "AAII.weekly.csv.gz", "wt", compresslevel=9, newline="") as fh:
        frame.to_csv(fh, index=False)
    print(f"AAII: {frame['date'].iloc[0]} .. {frame['date'].iloc[-1]} ({len(frame)} weeks; placeholder "
          f"{AAII_PLACEHOLDER} dropped)")


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

    # QQQ: taa-dashboard to 2025-09-26, then OHLCV only from 2026-05-13 (no rows in between). No adjusted source
    # runs past 2025-09-26: adj_close is carried across the gap and on to 2026-10-05 by close-to-close returns,
    # leaving out every QQQ dividend from 2025-09-26 on (see SOURCES.md).
    qqq = extend_history("QQQ", read_yahoo(src / "QQQ.daily.csv"),
                         read_market_data_public(extension / "johnamcminn_market-data-public_QQQ.csv"))
    qqq["adj_close"] = extend_by_price_returns(qqq["adj_close"].dropna(), qqq["close"])
    frames["QQQ"] = qqq

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
    write_aaii(src / "aaii" / "aaii_sentiment_weekly.csv")

    bundle_members(src)


# --- members: fundamentals and closes of the IWM and S&P 500 members (services/members) ---------------------------

MEMBERS_OUT = OUT / "members"
FUNDAMENTALS = {  # Yahoo .info field -> bundled column
    "sector": "sector", "marketCap": "market_cap", "trailingPE": "trailing_pe", "forwardPE": "forward_pe",
    "priceToBook": "price_to_book", "priceToSalesTrailing12Months": "price_to_sales", "profitMargins": "profit_margin",
}
INTRADAY_ROW = "2026-08-03"  # dsturdy/Factor_Attribution was committed at 11:45 ET that day: not a close


def yahoo_symbol(ticker: str) -> str:
    """Class shares in Yahoo's dash form (the S&P 500 list writes BRK.B, Yahoo and the dumps BRK-B)."""
    return ticker.replace(".", "-")


def member_lists(src: Path) -> tuple[set[str], set[str]]:
    """(IWM equity tickers of the bundled holdings file, S&P 500 constituents), in Yahoo's form."""
    holdings = parse_holdings((src / "IWM_holdings.2026-05-05.csv").read_text(encoding="utf-8")).rows
    iwm = {t for t in holdings.loc[holdings["Asset Class"] == "Equity", "Ticker"] if t != "-"}
    constituents = pd.read_csv(src / "members" / "fundamentals" / "sp500_constituents_2026-08-08.csv")
    return iwm, {yahoo_symbol(s) for s in constituents["Symbol"]}


def member_fundamentals(folder: Path, iwm: set[str], sp500: set[str]) -> pd.DataFrame:
    """One row per member and daily dump that has it; a member no dump has appears once, without a dump date."""
    try:
        import pyarrow  # noqa: F401  (pandas reads parquet through it)
    except ImportError:
        raise SystemExit("reading the fundamentals dumps (parquet) needs pyarrow, a dependency of this script only: "
                         "pip install pyarrow") from None
    dumps = []
    for path in sorted(folder.glob("edge-scanner_fundamentals_*.parquet")):
        dump = pd.read_parquet(path)
        assert dump["symbol"].is_unique and dump["asof"].nunique() == 1, path
        dumps.append(dump)
    rows = pd.concat(dumps)
    rows = rows[rows["symbol"].isin(iwm | sp500)]
    table = rows[["symbol", "asof", *FUNDAMENTALS]].rename(columns={"asof": "dump", **FUNDAMENTALS})
    never = sorted((iwm | sp500) - set(table["symbol"]))
    table = pd.concat([table, pd.DataFrame({"symbol": never})], ignore_index=True)
    table.insert(1, "in_iwm", table["symbol"].isin(iwm))
    table.insert(2, "in_sp500", table["symbol"].isin(sp500))
    table = table.sort_values(["symbol", "dump"], na_position="first").reset_index(drop=True)
    check_against_union(table, folder / "fundamentals_union_latest_per_symbol_2026-08-01_to_08.csv")
    print(f"fundamentals: {table['symbol'].nunique()} members ({len(iwm)} IWM, {len(sp500)} S&P 500), "
          f"{table['dump'].notna().sum()} member-dump rows, {len(never)} members in no dump")
    return table


def check_against_union(table: pd.DataFrame, union_csv: Path) -> None:
    """The latest dump per member must be the shared union file's row, value for value."""
    union = pd.read_csv(union_csv).set_index("symbol")
    latest = table.dropna(subset=["dump"]).groupby("symbol").tail(1).set_index("symbol")
    theirs = union.loc[latest.index, ["asof", *FUNDAMENTALS]].rename(columns={"asof": "dump", **FUNDAMENTALS})
    ours = latest[theirs.columns]
    numeric = list(FUNDAMENTALS.values())[1:]
    close = np.isclose(ours[numeric].astype(float), theirs[numeric].astype(float), rtol=1e-9, equal_nan=True)
    same_text = (ours[["dump", "sector"]].fillna("") == theirs[["dump", "sector"]].fillna("")).to_numpy()
    assert close.all() and same_text.all(), "latest-per-member rows differ from the union file"
    print(f"fundamentals: latest row of each of {len(latest)} members equals the union file's")


def member_closes(folder: Path, members: set[str]) -> pd.DataFrame:
    """Adjusted closes, dates x symbols: the 2026-08-03 intraday row dropped, zero closes (DEC) made missing."""
    long = pd.concat([pd.read_csv(folder / "iwm_members_daily_close_2023-01_2026-08.csv.gz"),
                      pd.read_csv(folder / "spx_reference" / "sp500_members_daily_close_2023-01_2026-08.csv.gz")])
    long["ticker"] = long["ticker"].map(yahoo_symbol)
    assert not long.duplicated(["ticker", "date"]).any() and set(long["ticker"]) <= members
    zero = int((long["close"] <= 0).sum())
    long = long[long["date"] != INTRADAY_ROW]
    wide = long.pivot(index="date", columns="ticker", values="close").sort_index()
    wide.index = pd.DatetimeIndex(wide.index)
    assert (wide.index.dayofweek < 5).all() and wide.index.is_unique
    wide = wide.where(wide > 0)
    as32 = wide.to_numpy(dtype=np.float32)
    exact = np.isclose(as32, wide.to_numpy(), rtol=0, atol=0) | wide.isna().to_numpy()
    print(f"closes: {wide.shape[1]} symbols x {len(wide)} days {wide.index[0].date()}..{wide.index[-1].date()}, "
          f"{zero} zero closes made missing, {exact.mean():.2%} of values exact in float32")
    return wide


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed with fixed timestamps, so the same input gives the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as fh:
                np.lib.format.write_array(fh, array, allow_pickle=False)


def codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, -1 where missing; the sorted names they index), for a text column with few distinct values."""
    found, names = pd.factorize(column, sort=True)
    return found.astype(np.int8), np.asarray(names, dtype=str)


def write_members(table: pd.DataFrame, wide: pd.DataFrame, holdings_file: Path) -> None:
    """members.npz (membership, IWM weights and sectors, the closes' dates and symbols), fundamentals.npz (the
    dump rows as columns, symbols and sectors as codes) and closes.npy (float32, uncompressed: the bot maps it)."""
    holdings_as_of, holdings = holdings_weights(holdings_file.read_text(encoding="utf-8-sig"))
    members = table.groupby("symbol")[["in_iwm", "in_sp500"]].first().join(holdings)
    sector, sectors = codes(members["holdings_sector"])
    write_npz(MEMBERS_OUT / "members.npz", member=members.index.to_numpy(dtype=str),
              in_iwm=members["in_iwm"].to_numpy(dtype=bool), in_sp500=members["in_sp500"].to_numpy(dtype=bool),
              weight=members["weight"].to_numpy(dtype=float), holdings_sector=sector, holdings_sectors=sectors,
              holdings_as_of=np.datetime64(holdings_as_of, "D"),
              dates=wide.index.to_numpy().astype("datetime64[D]"), symbols=wide.columns.to_numpy(dtype=str))
    dumps = table.dropna(subset=["dump"])
    sector, sectors = codes(dumps["sector"])
    write_npz(MEMBERS_OUT / "fundamentals.npz", symbol=members.index.get_indexer(dumps["symbol"]).astype(np.int16),
              dump=pd.to_datetime(dumps["dump"]).to_numpy().astype("datetime64[D]"), sector=sector, sectors=sectors,
              **{name: dumps[name].to_numpy(dtype=float) for name in FIELDS})
    np.save(MEMBERS_OUT / "closes.npy", wide.to_numpy(dtype=np.float32), allow_pickle=False)


def write_breadth() -> None:
    """breadth.npz: the breadth counts of the bundled closes, from the files just written, through the code that
    computes them for live closes (the bot then reads them instead of computing them at its first answer)."""
    write_npz(OUT / BREADTH_FILE, **bundle_arrays(load_member_data()))


def bundle_members(src: Path) -> None:
    """services/data/members/: members.npz, fundamentals.npz, closes.npy and breadth.npz (see
    services/data/SOURCES.md, Members)."""
    MEMBERS_OUT.mkdir(parents=True, exist_ok=True)
    iwm, sp500 = member_lists(src)
    table = member_fundamentals(src / "members" / "fundamentals", iwm, sp500)
    wide = member_closes(src / "members" / "prices", iwm | sp500)
    write_members(table, wide, src / "IWM_holdings.2026-05-05.csv")
    write_breadth()
    for path in sorted(MEMBERS_OUT.iterdir()):
        print(f"wrote {path.name}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    except SourceMismatch as exc:
        sys.exit(f"bundle_data: {exc}")

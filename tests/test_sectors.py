"""/iwm sectors: the real iShares holdings file, sector ETF performance against IWM, live download faults."""

from __future__ import annotations

import gzip
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from services.documents import Document, Documents
from services.errors import InputError
from services.market import MarketData, read_bundled_csv
from services.sectors import FUNDS, compute_sectors, holdings_from, parse_holdings, sectors_answer
from tests.support.provider_server import Reply

DATA = Path(__file__).parents[1] / "services" / "data"
HOLDINGS_BYTES = gzip.decompress((DATA / "IWM_holdings.2026-05-05.csv.gz").read_bytes())
HOLDINGS_TEXT = HOLDINGS_BYTES.decode("utf-8-sig")
PATH = "/us/products/239710/ishares-russell-2000-etf/1467271812596.ajax"
EXPECTED = {  # SOURCES.md, from the same file
    "Industrials": 19.42, "Information Technology": 16.90, "Financials": 16.24, "Health Care": 16.15,
    "Consumer Discretionary": 7.79, "Energy": 6.17, "Real Estate": 5.07, "Materials": 4.61, "Utilities": 2.83,
    "Communication": 2.57, "Consumer Staples": 1.64,
}


def bundled_adj(symbol: str) -> pd.Series:
    frame = pd.read_csv(DATA / f"{symbol}.csv.gz", index_col="date", parse_dates=["date"])
    return frame["adj_close"].dropna()


def holdings():
    return holdings_from(Document("x", HOLDINGS_TEXT, "bundled", None, None))


def test_holdings_file_aggregates_by_sector():
    table = parse_holdings(HOLDINGS_TEXT)
    assert table.fund == "iShares Russell 2000 ETF" and table.as_of == date(2026, 5, 5)
    assert len(table.rows) == 1929  # every holding row, the footer excluded
    h = holdings()
    weights = {w.sector: w.weight for w in h.weights}
    assert weights == pytest.approx(EXPECTED, abs=0.005)
    assert [w.sector for w in h.weights][:2] == ["Industrials", "Information Technology"]
    assert "Cash and/or Derivatives" not in weights  # equity rows only
    assert h.equity_weight == pytest.approx(99.39, abs=0.01) and h.equity_count == 1924
    assert sum(w.holdings for w in h.weights if w.sector == "Utilities") == 31


@pytest.mark.parametrize("body", [
    "<!DOCTYPE html><html><head><title>iShares</title></head><body>Please enable cookies</body></html>",
    "Ticker,Name\nA,B\n",
    HOLDINGS_TEXT.replace('"May 05, 2026"', '"sometime"'),
    "",
])
def test_not_a_holdings_csv(body):
    with pytest.raises(ValueError):
        parse_holdings(body)


async def test_offline_answer_aligns_on_the_last_common_day(renderer):
    report, png = await sectors_answer(MarketData([]), Documents(None), renderer, "3m")
    assert png.startswith(b"\x89PNG")
    assert report.as_of == date(2026, 7, 31)  # the funds end there, IWM runs on to 2026-10-05
    assert "2026-10-05" in report.alignment_note and "2026-07-31" in report.alignment_note
    assert report.holdings.source == "iShares holdings, bundled file" and not report.stale
    assert report.unmatched_sectors == ("Real Estate",)
    assert any("holdings file dated 2026-05-05" in n for n in report.notes)

    # Independent check for PSCI (industrials) and IWM from the CSVs, one date.
    end, start = pd.Timestamp("2026-07-31"), pd.Timestamp("2026-04-30")  # 3 months before: last close on/before
    iwm, psci = bundled_adj("IWM"), bundled_adj("PSCI")
    iwm_3m = iwm[end] / iwm.loc[:start].iloc[-1] * 100 - 100
    psci_3m = psci[end] / psci.loc[:start].iloc[-1] * 100 - 100
    ytd = psci[end] / psci[pd.Timestamp("2025-12-31")] * 100 - 100
    line = next(x for x in report.lines if x.symbol == "PSCI")
    assert report.period_starts["3m"] == date(2026, 4, 30)
    assert report.benchmark_returns["3m"] == pytest.approx(iwm_3m)
    assert line.returns["3m"] == pytest.approx(psci_3m) and line.relative["3m"] == pytest.approx(psci_3m - iwm_3m)
    assert line.returns["ytd"] == pytest.approx(ytd)
    assert round(iwm_3m, 2) == 5.01 and round(psci_3m, 2) == 2.62
    assert line.weight == pytest.approx(19.42)

    by_symbol = {x.symbol: x for x in report.lines}
    assert by_symbol["PSCU"].weight == pytest.approx(2.83 + 2.57)  # utilities + communication
    assert by_symbol["KRE"].weight is None and by_symbol["XBI"].weight is None  # sub-industries
    ranked = sorted((x for x in report.lines), key=lambda x: -(x.relative["3m"] or 0))
    assert report.leaders == tuple(x.symbol for x in ranked[:3]) and report.leaders[0] == "PSCH"
    assert report.laggards == ("PSCM", "PSCE", "PSCU")
    assert all(x.rate_sensitivity and len(x.rate_sensitivity) < 120 for x in report.lines)
    assert "not data" in report.background_label


async def test_fund_without_data_in_the_window_is_missing():
    bars = {s: await MarketData([]).bars(s) for s in ["IWM", *(f.symbol for f in FUNDS)]}
    # PSCE stops two months early: it is reported missing instead of cutting every window short.
    bars["PSCE"] = bars["PSCE"].until(date(2026, 5, 29))
    del bars["PSCC"]  # no data at all
    report = compute_sectors(bars, holdings(), "1m")
    by_symbol = {x.symbol: x for x in report.lines}
    assert report.as_of == date(2026, 7, 31)
    assert by_symbol["PSCE"].returns == dict.fromkeys(("1m", "3m", "ytd", "1y"))
    assert by_symbol["PSCE"].note == "data ends 2026-05-29"
    assert by_symbol["PSCC"].note == "no data" and by_symbol["PSCC"].relative["1y"] is None
    assert "PSCE" not in report.leaders + report.laggards


async def test_as_of_before_the_funds_existed(renderer):
    report, _ = await sectors_answer(MarketData([]), Documents(None), renderer, "1y", date(2010, 12, 31))
    by_symbol = {x.symbol: x for x in report.lines}
    assert report.as_of == date(2010, 12, 31)
    # The PSC* funds start 2010-04-07: no 1-year return; KRE/XBI (2006) have one.
    assert by_symbol["PSCI"].returns["1y"] is None and by_symbol["PSCI"].returns["3m"] is not None
    assert "data starts 2010-04-07" in by_symbol["PSCI"].note
    kre = bundled_adj("KRE")
    expected = kre[pd.Timestamp("2010-12-31")] / kre.loc[:"2009-12-31"].iloc[-1] * 100 - 100
    assert by_symbol["KRE"].returns["1y"] == pytest.approx(expected)
    # the only two with a 1-year return; a fund is a leader only when it beat IWM, a laggard only when it lagged
    iwm = bundled_adj("IWM")
    iwm_1y = iwm[pd.Timestamp("2010-12-31")] / iwm.loc[:"2009-12-31"].iloc[-1] * 100 - 100
    ahead = tuple(s for s in ("XBI", "KRE") if by_symbol[s].returns["1y"] > iwm_1y)
    assert set(report.leaders) == set(ahead) and set(report.laggards) == {"XBI", "KRE"} - set(ahead)
    assert report.members is None and any("No member sector returns before 2023-01-03" in n for n in report.notes)


async def test_leaders_beat_iwm_and_laggards_lag_it(renderer):
    report, _ = await sectors_answer(MarketData([]), Documents(None), renderer, "3m", date(2025, 9, 26))
    relative = {x.symbol: x.relative["3m"] for x in report.lines}
    assert all(relative[s] > 0 for s in report.leaders) and all(relative[s] < 0 for s in report.laggards)
    m = report.members
    assert m is not None and m.sectors.as_of == date(2025, 9, 26)
    assert all(m.relative[s]["3m"] > 0 for s in m.leaders) and all(m.relative[s]["3m"] < 0 for s in m.laggards)
    assert "Real Estate" in {x.sector for x in m.sectors.sectors}
    iwm = bundled_adj("IWM")
    start = m.sectors.period_starts["3m"]
    assert m.benchmark_returns["3m"] == pytest.approx(iwm[pd.Timestamp("2025-09-26")] / iwm[pd.Timestamp(start)] * 100
                                                      - 100)


@pytest.mark.parametrize(("period", "as_of"), [("2w", None), ("3m", date(1999, 1, 4)), ("3m", date(2030, 1, 2))])
async def test_bad_input(renderer, period, as_of):
    with pytest.raises(InputError):
        await sectors_answer(MarketData([]), Documents(None), renderer, period, as_of)


async def test_live_download_and_fallbacks(server, session, renderer):
    url = f"{server.url}{PATH}?fileType=csv&fileName=IWM_holdings&dataType=fund"
    docs = Documents(session, backoff=0.01, max_wait=0.05)
    server.script(PATH, Reply(body=HOLDINGS_BYTES, content_type="text/csv"))
    report, _ = await sectors_answer(MarketData([]), docs, renderer, "3m", holdings_url=url)
    assert report.holdings.source.startswith("iShares holdings, fetched") and not report.holdings.stale
    assert report.holdings.weight("Industrials") == pytest.approx(19.42)
    assert server.requests[0].query["fileType"] == "csv"

    # iShares answering an HTML page (consent wall) -> the bundled file, marked stale.
    server.script(PATH, Reply(body="<html><body>Access denied</body></html>", content_type="text/html"))
    fresh = Documents(session, backoff=0.01, max_wait=0.05)
    stale, _ = await sectors_answer(MarketData([]), fresh, renderer, "3m", holdings_url=url)
    assert stale.holdings.stale and stale.stale and "HTML" in stale.holdings.note
    assert stale.holdings.source == "iShares holdings, bundled file (stale)"
    assert stale.holdings.as_of == date(2026, 5, 5)


async def test_holdings_fields_survive_a_stale_document():
    document = replace(Document("k", HOLDINGS_TEXT, "cache", "u", None), stale=True, note="live fetch failed")
    h = holdings_from(document)
    assert h.stale and h.note == "live fetch failed" and h.as_of == date(2026, 5, 5)


def test_bundled_funds_end_where_sources_md_says():
    assert read_bundled_csv("PSCU").index[-1] == pd.Timestamp("2026-07-31")


async def test_common_end_and_a_fund_ending_earlier_is_labelled():
    from cogs.analysis import sectors_embed
    from services.sectors import sectors_chart

    bars = {s: await MarketData([]).bars(s) for s in ["IWM", *(f.symbol for f in FUNDS)]}
    bars["PSCT"] = bars["PSCT"].until(date(2026, 7, 27))  # a few days short: it sets the common end
    bars["PSCE"] = bars["PSCE"].until(date(2026, 5, 29))  # two months short: left out, labelled
    report = compute_sectors(bars, holdings(), "1m")
    # Independently: the last day IWM and every fund but PSCE have, from the CSVs.
    series = {s: bundled_adj(s) for s in bars if s != "PSCE"}
    series["PSCT"] = series["PSCT"].loc[:"2026-07-27"]
    end = pd.concat(series.values(), axis=1, join="inner").dropna().index[-1]
    assert report.as_of == end.date() == date(2026, 7, 27)
    assert report.benchmark_end == date(2026, 10, 5)
    iwm = series["IWM"]
    start = iwm.loc[: end - pd.DateOffset(months=1)].index[-1]
    assert report.benchmark_returns["1m"] == pytest.approx(iwm[end] / iwm[start] * 100 - 100)
    chart = sectors_chart(report)
    assert chart.measured == "to 2026-07-27, the last day all have (IWM to 2026-10-05)"
    labels = [label for label, _ in chart.relative]
    assert "PSCE Energy (to 2026-05-29)" in labels and "PSCT Information Technology" in labels
    names = [f.name for f in sectors_embed(report).fields]
    assert any(n.startswith("PSCE Energy (to 2026-05-29) · ") for n in names)

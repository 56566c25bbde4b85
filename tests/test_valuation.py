"""/iwm valuation: Shiller-derived S&P 500 P/E, the operator file, Yahoo quoteSummary; missing stays missing."""

from __future__ import annotations

import gzip
import io
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from services.documents import Documents
from services.errors import InputError
from services.valuation import (
    HISTORY_MIN_POINTS,
    parse_operator_file,
    parse_quote_summary,
    shiller_pe,
    valuation_answer,
)
from tests.support.member_files import dump_rows
from tests.support.provider_server import Reply

DATA = Path(__file__).parents[1] / "services" / "data"
HEADER = "date,symbol,metric,value,source,note\n"
BUNDLED_MEMBERS = "members bottom-up (bundled dump of 2026-08-08)"  # the bottom-up figures' source, bundled


def quote_summary(trailing: float | None, forward: float | None, sales: float | None, book: float | None) -> str:
    """A body in quoteSummary's documented shape (Yahoo writes `{}` for a field it does not have)."""
    def field(v: float | None) -> dict:
        return {"raw": v, "fmt": f"{v:.2f}"} if v is not None else {}

    return json.dumps({"quoteSummary": {"result": [{
        "summaryDetail": {"trailingPE": field(trailing), "forwardPE": field(forward),
                          "priceToSalesTrailing12Months": field(sales)},
        "defaultKeyStatistics": {"priceToBook": field(book)},
    }], "error": None}})


def test_bundled_operator_file_has_no_invented_rows():
    assert (DATA / "valuation.csv").read_text() == HEADER


def test_shiller_trailing_pe_and_missing_earnings():
    raw = pd.read_csv(gzip.open(DATA / "SP500.shiller.monthly.csv.gz"), parse_dates=["Date"], index_col="Date")
    pe = shiller_pe()
    assert pe.index[-1] == pd.Timestamp("2023-06-01")  # Earnings is 0.0 (missing) after that
    assert pe.iloc[-1] == pytest.approx(raw.loc["2023-06-01", "SP500"] / raw.loc["2023-06-01", "Earnings"])
    assert round(pe.iloc[-1], 1) == 24.0
    assert not (pe.loc["2023-07":]).size


async def test_offline_answer_before_the_member_data_reports_the_russell_side_missing(renderer):
    report, png = await valuation_answer(Documents(None), renderer, date(2024, 1, 15))
    assert png.startswith(b"\x89PNG")
    trailing = report.rows[0]
    assert trailing.metric == "trailing_pe" and trailing.small is None and trailing.ratio is None
    assert trailing.large is not None and trailing.large.as_of == date(2023, 6, 1)
    assert trailing.large.value == pytest.approx(4345.372857 / 181.17)
    assert "loss-makers are included" in trailing.large.method
    assert all(r.small is None and r.large is None for r in report.rows[1:])
    assert report.history is None and "No history" in report.history_note
    assert "No public Russell 2000 valuation history exists" in report.history_note
    assert any("No Russell 2000" in n for n in report.notes)
    assert any("No bottom-up member figures for 2024-01-15" in n for n in report.notes)
    assert report.members is None
    assert dict(report.methods).keys() == {"SPY · Shiller (bundled)"}


def bottom_up(as_of: str) -> dict[str, dict[str, float]]:
    """Independently of services.members: each member's latest dump row on or before `as_of`, then per index
    total weight / total weight x earnings yield (IWM: holdings weights; S&P 500: market caps)."""
    rows = dump_rows()
    rows = rows[rows["dump"] <= as_of].sort_values("dump", kind="stable")
    rows = rows.groupby("symbol").tail(1).set_index("symbol")  # the whole row of the latest dump
    text = gzip.decompress((DATA / "IWM_holdings.2026-05-05.csv.gz").read_bytes()).decode("utf-8-sig")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Ticker,Name,Sector"))
    holdings = pd.read_csv(io.StringIO("\n".join(lines[start:])), on_bad_lines="skip")
    holdings = holdings[(holdings["Asset Class"] == "Equity") & (holdings["Ticker"] != "-")]
    weights = pd.to_numeric(holdings["Weight (%)"].astype(str).str.replace(",", "")).groupby(holdings["Ticker"]).sum()
    out = {}
    for index, w in (("IWM", weights), ("SP500", None)):
        members = rows[rows["in_iwm"] if index == "IWM" else rows["in_sp500"]]
        w = weights.reindex(members.index) if index == "IWM" else members["market_cap"]
        figures = {}
        for metric in ("forward_pe", "trailing_pe", "price_to_book", "price_to_sales"):
            ok = (members[metric] > 0) & (w > 0)
            figures[metric] = w[ok].sum() / (w[ok] / members.loc[ok, metric]).sum()
        margin, ps = members["profit_margin"], members["price_to_sales"]
        ok = margin.notna() & (ps > 0) & (w > 0)
        figures["trailing_pe_all"] = w[ok].sum() / (w[ok] * margin[ok] / ps[ok]).sum()
        known = margin.notna()
        figures["loss_members"] = (margin[known] < 0).mean()
        out[index] = figures
    return out


@pytest.mark.parametrize("as_of", [None, date(2026, 8, 5), date(2026, 9, 30)])
async def test_member_figures_fill_both_sides_with_their_ratio(renderer, as_of):
    report, _ = await valuation_answer(Documents(None), renderer, as_of)
    dump = "2026-08-05" if as_of == date(2026, 8, 5) else "2026-08-08"  # after the last dump: the last dump
    expected = bottom_up(dump)
    m = report.members
    assert m is not None and str(m.as_of) == dump
    for metric in ("forward_pe", "trailing_pe", "price_to_book", "price_to_sales", "trailing_pe_all"):
        small, large = expected["IWM"][metric], expected["SP500"][metric]
        assert m.small.multiples[metric].value == pytest.approx(small, rel=1e-9)
        assert m.large.multiples[metric].value == pytest.approx(large, rel=1e-9)
        assert m.ratios[metric] == pytest.approx(small / large, rel=1e-9)
    assert m.small.loss_share_members == pytest.approx(expected["IWM"]["loss_members"])
    row = next(r for r in report.rows if r.metric == "forward_pe")
    assert row.small.source == row.large.source == row.ratio_source == BUNDLED_MEMBERS
    assert row.ratio == pytest.approx(expected["IWM"]["forward_pe"] / expected["SP500"]["forward_pe"])
    assert not any("No Russell 2000" in n for n in report.notes)
    assert report.history is None and "No public Russell 2000 valuation history" in report.history_note


async def test_as_of_picks_the_figure_known_then(renderer):
    report, _ = await valuation_answer(Documents(None), renderer, date(2020, 3, 15))
    pe = shiller_pe()
    assert report.rows[0].large.as_of == date(2020, 3, 1)
    assert report.rows[0].large.value == pytest.approx(pe[pd.Timestamp("2020-03-01")])


@pytest.mark.parametrize("as_of", [date(1850, 1, 1), date(2999, 1, 1)])
async def test_as_of_outside_the_data(renderer, as_of):
    with pytest.raises(InputError, match="as_of"):
        await valuation_answer(Documents(None), renderer, as_of)


def test_operator_file_rows_and_problems():
    text = HEADER + (
        "2026-06-30,IWM,forward_pe,15.1,Test source,ex-loss-makers\n"
        "2026-06-30,SPY,forward_pe,21.7,Test source,\n"
        "2026-06-30,QQQ,forward_pe,30,Test source,\n"
        "2026-06-30,IWM,ev_ebitda,10,Test source,\n"
        "yesterday,IWM,forward_pe,10,Test source,\n"
        "2026-06-30,IWM,trailing_pe,-3,Test source,\n"
        "2026-06-30,IWM,trailing_pe,20,,\n"
    )
    parsed = parse_operator_file(text)
    observations, problems = parsed.observations, parsed.notes
    assert [(o.symbol, o.value) for o in observations] == [("IWM", 15.1), ("SPY", 21.7)]
    assert observations[0].method == "ex-loss-makers" and "loss-makers" in observations[1].method
    assert observations[0].source == "Test source (operator file)"
    assert [p.split(" ignored")[0] for p in problems] == [f"valuation.csv line {n}" for n in (4, 5, 6, 7, 8)]
    bad_header = parse_operator_file("a,b\n1,2\n")
    assert bad_header.notes == ("valuation.csv header must be date,symbol,metric,value,source,note",)


async def test_operator_history_gives_percentile_and_lowest_since(renderer, tmp_path):
    # Test values (not market data): a relative forward P/E falling from 0.90 to 0.70 over 13 month-ends, with an
    # earlier dip to 0.68 in month 3, so the latest point is the lowest since that dip.
    ratios = [0.90, 0.85, 0.68, 0.88, 0.86, 0.84, 0.82, 0.80, 0.78, 0.76, 0.74, 0.72, 0.70]
    days = pd.date_range("2025-06-30", periods=len(ratios), freq="ME")
    rows = []
    for day, r in zip(days, ratios, strict=True):
        rows.append(f"{day.date()},SPY,forward_pe,20,Test source,index aggregate\n")
        rows.append(f"{day.date()},IWM,forward_pe,{20 * r:.4f},Test source,excludes loss-makers\n")
    path = tmp_path / "valuation.csv"
    path.write_text(HEADER + "".join(rows))
    # as of 2026-07-31: before the member dumps, so the operator's figures are the newest
    report, png = await valuation_answer(Documents(None), renderer, date(2026, 7, 31), operator_file=path)
    assert png.startswith(b"\x89PNG")
    forward = report.rows[1]
    assert forward.small.value == pytest.approx(14.0) and forward.large.value == 20
    assert forward.ratio == pytest.approx(0.70) and forward.ratio_as_of == date(2026, 6, 30)
    h = report.history
    assert h is not None and h.points == 13 >= HISTORY_MIN_POINTS
    assert h.current == pytest.approx(0.70) and h.low == pytest.approx(0.68) and h.low_date == date(2025, 8, 31)
    assert h.percentile == pytest.approx(2 / 13 * 100)
    assert h.lowest_since == date(2025, 8, 31)
    assert ("IWM · Test source (operator file)", "excludes loss-makers") in report.methods
    assert ("SPY · Test source (operator file)", "index aggregate") in report.methods
    # The trailing P/E still comes from Shiller, the Russell side is missing: no ratio across sources.
    assert report.rows[0].ratio is None and report.rows[0].small is None


async def test_yahoo_quote_summary_live_cached_and_faults(server, session, renderer):
    server.script("/v10/finance/quoteSummary/IWM", Reply(body=quote_summary(18.2, 14.9, 1.25, None)))
    server.script("/v10/finance/quoteSummary/SPY", Reply(body=quote_summary(27.4, 22.1, None, 4.9)))
    docs = Documents(session, backoff=0.01, max_wait=0.05)
    report, _ = await valuation_answer(docs, renderer, yahoo_base_url=server.url)
    assert server.requests[0].query["modules"] == "summaryDetail,defaultKeyStatistics"
    rows = {r.metric: r for r in report.rows}
    assert rows["trailing_pe"].small.value == 18.2 and rows["trailing_pe"].large.value == 27.4
    assert rows["trailing_pe"].ratio == pytest.approx(18.2 / 27.4)
    assert rows["trailing_pe"].ratio_source == "Yahoo quoteSummary"
    assert rows["forward_pe"].ratio == pytest.approx(14.9 / 22.1)
    # Yahoo lacks SPY's P/S and IWM's P/B: the member figures (2026-08-08) fill them, the ratio is theirs
    assert rows["price_to_sales"].large.source == rows["price_to_sales"].ratio_source == BUNDLED_MEMBERS
    assert rows["price_to_book"].small.source == BUNDLED_MEMBERS and rows["price_to_book"].large.value == 4.9
    assert "Yahoo does not document" in dict(report.methods)["IWM · Yahoo quoteSummary"]
    assert not any("No Russell 2000" in n for n in report.notes)

    again, _ = await valuation_answer(docs, renderer, yahoo_base_url=server.url)
    assert again.rows == report.rows and len(server.requests) == 2  # fresh cache: no new request

    # A fresh cache-less instance meets an HTML page and a 500: no figures, no fallback file, said so.
    server.script("/v10/finance/quoteSummary/IWM", Reply(body="<html>Will be right back</html>",
                                                         content_type="text/html"))
    server.script("/v10/finance/quoteSummary/SPY", Reply(status=500))
    failed, _ = await valuation_answer(Documents(session, backoff=0.01, max_wait=0.05), renderer,
                                       yahoo_base_url=server.url)
    # no Yahoo figure at all: the bundled member figures stand
    assert failed.rows[0].small.source == failed.rows[0].large.source == BUNDLED_MEMBERS
    assert not any(o.source.startswith("Yahoo quoteSummary") for r in failed.rows for o in (r.small, r.large) if o)
    assert any("Yahoo IWM" in n and "HTML" in n for n in failed.notes)
    assert any("Yahoo SPY" in n and "HTTP 500" in n for n in failed.notes)


async def test_yahoo_is_not_used_for_a_past_date(server, session, renderer):
    docs = Documents(session)
    report, _ = await valuation_answer(docs, renderer, date(2022, 1, 3), yahoo_base_url=server.url)
    assert server.calls == {} and any("current only" in n for n in report.notes)


@pytest.mark.parametrize("body", ['{"quoteSummary": {"result": null, "error": {"code": "Not Found"}}}',
                                  "<!doctype html><html></html>", "{}", "not json"])
def test_quote_summary_garbage(body):
    with pytest.raises(ValueError):
        parse_quote_summary(body)

"""/iwm rates: FRED parsing, the first-cut rule on the real FEDFUNDS series, the easing-cycle study."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from services.documents import Documents
from services.errors import InputError
from services.market import BundledProvider, MarketData
from services.rates import LastMove, Stance, current_level, first_cuts, parse_fred_csv, rates_answer, stance
from tests.support.provider_server import Reply

DATA = Path(__file__).parents[1] / "services" / "data"
FEDFUNDS_TEXT = gzip.decompress((DATA / "FEDFUNDS.monthly.csv.gz").read_bytes()).decode()  # header DATE,FEDFUNDS
FEDFUNDS_NEW_HEADER = FEDFUNDS_TEXT.replace("DATE,FEDFUNDS", "observation_date,FEDFUNDS", 1)
# The last two months as FRED writes a missing value.
FEDFUNDS_DOTS = FEDFUNDS_NEW_HEADER.replace("2025-03-01,4.33", "2025-03-01,.").replace("2025-04-01,4.33",
                                                                                      "2025-04-01,.")
# Shaped like FRED's DFF download around the December 2024 cut (target range 4.50-4.75 -> 4.25-4.50 effective
# 2024-12-19); "." is how FRED marks a day without a value.
DFF_TEXT = "observation_date,DFF\n" + "\n".join(
    [f"2024-12-{d:02d},4.58" for d in range(1, 19)] + [f"2024-12-{d:02d},4.33" for d in range(19, 25)]
    + ["2024-12-25,.", "2024-12-26,4.33", "2024-12-27,4.33"]) + "\n"
PATH = "/graph/fredgraph.csv"


def bundled_adj(symbol: str) -> pd.Series:
    frame = pd.read_csv(DATA / f"{symbol}.csv.gz", index_col="date", parse_dates=["date"])
    return frame["adj_close"].dropna()


@pytest.fixture(scope="module")
def monthly() -> pd.Series:
    return parse_fred_csv(FEDFUNDS_TEXT, "FEDFUNDS")


# --- parsing --------------------------------------------------------------------------------------------------

def test_parses_both_headers_and_drops_dots(monthly):
    new = parse_fred_csv(FEDFUNDS_NEW_HEADER, "FEDFUNDS")
    assert new.equals(monthly)
    assert len(monthly) == 850 and monthly.index[-1] == pd.Timestamp("2025-04-01") and monthly.iloc[-1] == 4.33
    dots = parse_fred_csv(FEDFUNDS_DOTS, "FEDFUNDS")
    assert len(dots) == 848 and dots.index[-1] == pd.Timestamp("2025-02-01")
    daily = parse_fred_csv(DFF_TEXT, "DFF")
    assert pd.Timestamp("2024-12-25") not in daily.index and len(daily) == 26


@pytest.mark.parametrize("body", ["<!DOCTYPE html><html>FRED</html>", "observation_date,DFF\n2024-01-01,5.33\n",
                                  "observation_date,FEDFUNDS\nnot-a-date,1\n", "observation_date,FEDFUNDS\n", ""])
def test_rejects_what_is_not_a_fedfunds_csv(body):
    with pytest.raises(ValueError):
        parse_fred_csv(body, "FEDFUNDS")


# --- the first-cut rule on the real series ----------------------------------------------------------------------

def test_first_cuts_match_the_historical_record(monthly):
    # FOMC first cuts since 2000: 2001-01-03 (50bp, intermeeting), 2007-09-18 (50bp), 2019-07-31 (25bp),
    # 2024-09-18 (50bp). The rule works on monthly averages, so it finds:
    # - 2001-01: January's average (5.98) already 0.56pp below the 6.54 high: same month.
    # - 2007-09: August's 5.02 was only 0.24 below 5.26 (the effective rate sagged in the August liquidity
    #   squeeze, no cut), September's 4.94 is 0.32 below: same month as the decision.
    # - 2019-08: the cut came on the last day of July, so July's average (2.40) cannot show it: one month later.
    # - 2024-10: the 18 September cut leaves September at 5.13 (0.20 below 5.33, under the threshold); October
    #   (4.83) shows it: one month later.
    # 2020-03 is not a first cut: the Fed had held for four months after its October 2019 cut without hiking,
    # less than the 6-month quiet period, so the pandemic cuts continue the 2019 cycle.
    assert [m.strftime("%Y-%m") for m in first_cuts(monthly)] == ["2001-01", "2007-09", "2019-08", "2024-10"]


def test_the_rule_needs_the_quiet_period(monthly):
    # Cut the series at February 2020: the March 2020 cuts do not start a new cycle either way.
    assert pd.Timestamp("2020-03-01") not in first_cuts(monthly.loc[:"2020-06"])
    # The November 2002 cut came five months after the 2001 easing faded: still part of that cycle.
    assert pd.Timestamp("2002-11-01") not in first_cuts(monthly)


def test_current_level_and_stance(monthly):
    assert current_level(monthly) == LastMove(date(2025, 1, 1), 4.48)  # December's 4.48 still held half a month of 4.58
    assert stance(monthly) == Stance("holding", 0.0)
    easing = stance(monthly.loc[:"2024-11"])
    assert easing.name == "easing" and easing.change == pytest.approx(4.64 - 5.33)
    assert stance(monthly.loc[:"2022-12"]).name == "tightening"


# --- the answer -----------------------------------------------------------------------------------------------

async def test_offline_answer_on_bundled_data(renderer):
    report, png = await rates_answer(MarketData([]), Documents(None), renderer)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert report.rate == 4.33 and report.rate_series == "FEDFUNDS" and report.rate_as_of == date(2025, 4, 1)
    assert report.rate_source == "FRED FEDFUNDS, bundled file" and not report.stale
    assert report.level_since == date(2025, 1, 1) and report.last_change_pp == pytest.approx(-0.15)
    assert report.stance == "holding"
    assert report.as_of == date(2026, 10, 5)  # the last day IWM and SPY both have
    assert not any("SPY data ends" in n for n in report.notes)  # both run to 2026-10-05
    assert any("FEDFUNDS data ends 2025-04" in n for n in report.notes)

    starts = [c.start for c in report.cycles]
    assert starts == [date(2000, 12, 29), date(2007, 8, 31), date(2019, 7, 31), date(2024, 9, 30)]
    assert [c.complete for c in report.cycles] == [True, True, True, True]  # 24 months after 2024-09: in the data
    last = report.cycles[-1]
    assert last.windows[-1].end == date(2026, 9, 30)
    assert last.windows[2].end == date(2025, 9, 30)

    # Independent check of one window: 2019 cycle, 12 months, from the bundled CSVs.
    iwm, spy = bundled_adj("IWM"), bundled_adj("SPY")
    window = report.cycles[2].windows[2]
    assert window.end == date(2020, 7, 31)
    expected_iwm = iwm[pd.Timestamp("2020-07-31")] / iwm[pd.Timestamp("2019-07-31")] * 100 - 100
    expected_spy = spy[pd.Timestamp("2020-07-31")] / spy[pd.Timestamp("2019-07-31")] * 100 - 100
    assert window.iwm_pct == pytest.approx(expected_iwm)
    assert window.spy_pct == pytest.approx(expected_spy)
    assert window.gap_pp == pytest.approx(expected_iwm - expected_spy)
    assert round(window.iwm_pct, 1) == -4.5 and round(window.spy_pct, 1) == 12.0

    # ... and of the 2024 cycle's 24 months (the last full month in the data).
    start, end = pd.Timestamp("2024-09-30"), pd.Timestamp("2026-09-30")
    assert last.start == start.date()
    assert last.windows[3].iwm_pct == pytest.approx(iwm[end] / iwm[start] * 100 - 100)
    assert last.windows[3].spy_pct == pytest.approx(spy[end] / spy[start] * 100 - 100)

    avg24 = report.averages[3]
    assert avg24.months == 24 and avg24.cycles == 4
    done = [c.windows[3] for c in report.cycles]
    assert avg24.gap_pp == pytest.approx(sum(w.gap_pp for w in done) / 4)
    assert report.averages[0].cycles == 4


class SpyTo20260731(BundledProvider):
    """The bundled data with SPY cut at 2026-07-31, where its bundled history ended before 2026-10."""

    async def fetch(self, symbol: str) -> pd.DataFrame:
        frame = await super().fetch(symbol)
        return frame.loc[:"2026-07-31"] if symbol.upper() == "SPY" else frame


async def test_spy_ending_before_iwm_ends_the_returns_and_says_so(renderer):
    report, _ = await rates_answer(MarketData([], bundled=SpyTo20260731()), Documents(None), renderer)
    assert report.as_of == date(2026, 7, 31)  # the last day IWM and SPY both have
    assert any("SPY data ends 2026-07-31" in n for n in report.notes)
    assert [c.complete for c in report.cycles] == [True, True, True, False]
    last = report.cycles[-1]
    assert last.windows[-1].end is None and last.windows[-1].iwm_pct is None  # 2026-09 is past the data
    assert report.averages[3].cycles == 3  # the cycle in progress has no 24-month window


async def test_as_of_uses_only_what_was_known(renderer):
    report, _ = await rates_answer(MarketData([]), Documents(None), renderer, date(2020, 6, 30))
    assert report.rate_as_of == date(2020, 6, 1) and report.rate == 0.08  # June's average, complete on the 30th
    assert [c.first_cut_month for c in report.cycles] == [date(2001, 1, 1), date(2007, 9, 1), date(2019, 8, 1)]
    assert not report.cycles[-1].complete and report.cycles[-1].windows[1].end == date(2020, 1, 31)
    mid, _ = await rates_answer(MarketData([]), Documents(None), renderer, date(2020, 6, 15))
    assert mid.rate_as_of == date(2020, 5, 1)  # June's average was not known yet


@pytest.mark.parametrize("as_of", [date(1999, 1, 4), date(2030, 1, 2)])
async def test_as_of_outside_the_data(renderer, as_of):
    with pytest.raises(InputError, match="as_of"):
        await rates_answer(MarketData([]), Documents(None), renderer, as_of)


async def test_live_fred_with_daily_rate(server, session, renderer):
    # The answer asks for FEDFUNDS, then DFF (same path, `id` differs): the replies come in that order.
    server.script(PATH, Reply(body=FEDFUNDS_NEW_HEADER, content_type="text/csv"),
                  Reply(body=DFF_TEXT, content_type="text/csv"))
    docs = Documents(session, backoff=0.01, max_wait=0.05)
    report, _ = await rates_answer(MarketData([]), docs, renderer, fred_base_url=server.url)
    assert [r.query["id"] for r in server.requests] == ["FEDFUNDS", "DFF"]
    assert report.rate_series == "DFF" and report.rate == 4.33 and report.rate_as_of == date(2024, 12, 27)
    assert report.level_since == date(2024, 12, 19) and report.previous_level == 4.58
    assert report.last_change_pp == pytest.approx(-0.25)
    assert report.rate_source.startswith("FRED DFF, fetched") and not report.stale
    assert report.monthly_source.startswith("FRED FEDFUNDS, fetched")
    assert [c.first_cut_month.isoformat()[:7] for c in report.cycles] == ["2001-01", "2007-09", "2019-08", "2024-10"]
    again, _ = await rates_answer(MarketData([]), docs, renderer, fred_base_url=server.url)
    assert again == report and server.calls[PATH] == 2  # fresh cache: no more requests


async def test_live_fred_faults_fall_back_to_bundled_and_say_so(server, session, renderer):
    server.script(PATH, Reply(body="<html><body>Service unavailable</body></html>", content_type="text/html"))
    docs = Documents(session, backoff=0.01, max_wait=0.05)
    report, _ = await rates_answer(MarketData([]), docs, renderer, fred_base_url=server.url)
    assert report.stale and report.monthly_source == "FRED FEDFUNDS, bundled file (stale)"
    assert report.rate_series == "FEDFUNDS" and report.rate == 4.33
    assert any("DFF" in n and "unavailable" in n for n in report.notes)


async def test_live_fred_with_missing_values(server, session, renderer):
    server.script(PATH, Reply(body=FEDFUNDS_DOTS, content_type="text/csv"))
    docs = Documents(session, backoff=0.01, max_wait=0.05)
    report, _ = await rates_answer(MarketData([]), docs, renderer, fred_base_url=server.url)
    assert report.monthly_as_of == date(2025, 2, 1) and report.rate_as_of == date(2025, 2, 1)

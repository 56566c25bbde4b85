"""/iwm rates: FRED parsing, decision dating, the first-cut rule and the cycle study, the stance, the yield curve.

Expected values are computed here from the raw bundled files (services/data/rates.daily.csv.gz, FEDFUNDS, IWM and
SPY adjusted closes) with plain pandas, not with services.rates or services.returns."""

from __future__ import annotations

import gzip
import statistics
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from services.documents import Documents
from services.errors import InputError
from services.market import BundledProvider, MarketData
from services.rates import DAILY, MONTHLY, parse_fred_csv, rates_answer, yield_curve
from tests.support.fred import RAW, fred_body, fred_replies
from tests.support.provider_server import Reply

DATA = Path(__file__).parents[1] / "services" / "data"
FEDFUNDS_TEXT = gzip.decompress((DATA / "FEDFUNDS.monthly.csv.gz").read_bytes()).decode()  # header DATE,FEDFUNDS
PATH = "/graph/fredgraph.csv"
FIRST_CUTS = [date(2001, 1, 3), date(2007, 9, 18), date(2019, 7, 31), date(2024, 9, 18)]  # the FOMC's record


def bundled_adj(symbol: str) -> pd.Series:
    frame = pd.read_csv(DATA / f"{symbol}.csv.gz", index_col="date", parse_dates=["date"])
    return frame["adj_close"].dropna()


def raw_changes(until: str | None = None) -> list[tuple[date, float]]:
    """(decision day, change of the upper bound) for each change of DFEDTARU: the day before the new value."""
    upper = RAW["DFEDTARU"].dropna().loc[:until] if until else RAW["DFEDTARU"].dropna()
    out, previous = [], None
    for day, value in upper.items():
        if previous is not None and value != previous:
            out.append(((day - timedelta(days=1)).date(), round(value - previous, 4)))
        previous = value
    return out


def expected_gap(start: date, months: int) -> tuple[float, float]:
    """IWM and SPY total returns, %, from the close on `start` to the last close on or before `start + months`."""
    end = pd.Timestamp(start) + pd.DateOffset(months=months)
    iwm, spy = bundled_adj("IWM"), bundled_adj("SPY")
    return tuple(s.asof(end) / s.asof(pd.Timestamp(start)) * 100 - 100 for s in (iwm, spy))  # type: ignore[return-value]


# --- parsing --------------------------------------------------------------------------------------------------

def test_parses_fred_bodies_and_the_bundled_table():
    monthly = parse_fred_csv(FEDFUNDS_TEXT, "FEDFUNDS")
    assert monthly.index[-1] == pd.Timestamp("2026-07-01") and monthly.iloc[-1] == 3.63  # extended from the table
    assert monthly["2025-04-01"] == 4.33 and len(monthly) == 865
    dgs2 = parse_fred_csv(fred_body("DGS2"), "DGS2")
    assert "\n2025-12-25,.\n" in fred_body("DGS2") and pd.Timestamp("2025-12-25") not in dgs2.index
    assert dgs2.equals(RAW["DGS2"].dropna().rename("DGS2"))
    wide = gzip.decompress((DATA / "rates.daily.csv.gz").read_bytes()).decode()
    assert parse_fred_csv(wide, "DFEDTARU").index[0] == pd.Timestamp("2008-12-16")


@pytest.mark.parametrize("body", ["<!DOCTYPE html><html>FRED</html>", "observation_date,DFF\n2024-01-01,5.33\n",
                                  "observation_date,FEDFUNDS\nnot-a-date,1\n", "observation_date,FEDFUNDS\n", "",
                                  "observation_date,FEDFUNDS\n2024-01-01,.\n"])
def test_rejects_what_is_not_a_fedfunds_csv(body):
    with pytest.raises(ValueError):
        parse_fred_csv(body, "FEDFUNDS")


# --- the answer on the bundled data -------------------------------------------------------------------------------

async def test_stance_comes_from_the_target_range(renderer):
    report, png = await rates_answer(MarketData([]), Documents(None), renderer)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    p = report.policy
    last = RAW[["DFEDTARL", "DFEDTARU", "DFF"]].dropna(how="all")
    assert p.target == (last["DFEDTARL"].dropna().iloc[-1], last["DFEDTARU"].dropna().iloc[-1]) == (3.5, 3.75)
    assert p.target_as_of == date(2026, 8, 21) and p.effective == 3.63 and p.effective_as_of == date(2026, 8, 20)
    day, change = raw_changes()[-1]
    assert (p.last_change.day, p.last_change.change_pp) == (day, pytest.approx(change)) == (date(2025, 12, 10),
                                                                                          pytest.approx(-0.25))
    assert p.last_change.effective == date(2025, 12, 11)
    assert p.stance == "on hold"  # 2025-12-10 is more than 6 months before 2026-08-21
    assert any("Rate data ends 2026-08-20" in n for n in report.notes)  # IWM/SPY run to 2026-10-05
    assert report.daily_source == "FRED DFF/DFEDTARU/DFEDTARL/DGS2/DGS10, bundled file" and not report.stale


async def test_first_cuts_on_the_decision_day_and_their_returns(renderer):
    report, _ = await rates_answer(MarketData([]), Documents(None), renderer)
    assert [c.cut.day for c in report.cycles] == FIRST_CUTS
    # The two from the target range: the first cut after a hike, in the raw changes.
    changes = raw_changes()
    firsts = [d for (d, c), (_, prev) in zip(changes[1:], changes, strict=False) if c < 0 and prev > 0]
    assert firsts == FIRST_CUTS[2:]
    # The two listed ones (before the range starts): DFF's two-week median drops by about the cut across the
    # decision (medians: the effective rate is noisy around year ends).
    for day in FIRST_CUTS[:2]:
        before = RAW["DFF"].loc[pd.Timestamp(day) - pd.Timedelta(days=14): pd.Timestamp(day) - pd.Timedelta(days=1)]
        after = RAW["DFF"].loc[pd.Timestamp(day) + pd.Timedelta(days=1): pd.Timestamp(day) + pd.Timedelta(days=14)]
        assert before.median() - after.median() == pytest.approx(0.5, abs=0.2)
    assert [c.cut.change_pp for c in report.cycles] == [-0.5, -0.5, -0.25, -0.5]
    assert [c.start for c in report.cycles] == FIRST_CUTS  # all four decision days were trading days

    gaps: dict[int, list[float]] = {m: [] for m in (3, 6, 12, 24)}
    for cycle in report.cycles:
        for w in cycle.windows:
            iwm, spy = expected_gap(cycle.cut.day, w.months)
            assert (w.iwm_pct, w.spy_pct) == (pytest.approx(iwm), pytest.approx(spy))
            gaps[w.months].append(iwm - spy)
    assert report.cycles[-1].windows[-1].end == date(2026, 9, 18)  # 24 months after 2024-09-18, in the data
    for s in report.stats:
        assert s.n == 4 and s.gap_mean == pytest.approx(statistics.fmean(gaps[s.months]))
        assert s.gap_median == pytest.approx(statistics.median(gaps[s.months]))
        assert s.iwm_ahead == sum(g > 0 for g in gaps[s.months])
    assert [s.iwm_ahead for s in report.stats] == [1, 1, 2, 2]
    assert "4 cycles" in report.warning and "too few" in report.warning


async def test_resumptions_are_listed_not_counted(renderer):
    report, _ = await rates_answer(MarketData([]), Documents(None), renderer)
    # 2020-03-03: four months after the 2019-10-30 cut, no hike between; 2025-09-17: nine months after 2024-12-18.
    assert [c.cut.day for c in report.resumptions] == [date(2020, 3, 3), date(2025, 9, 17)]
    assert date(2020, 3, 3) in [d for d, _ in raw_changes()] and date(2020, 3, 3) not in FIRST_CUTS
    covid = report.resumptions[0].windows[0]
    iwm, spy = expected_gap(date(2020, 3, 3), 3)
    assert covid.gap_pp == pytest.approx(iwm - spy)
    assert report.resumptions[1].windows[-1].end is None  # 2027-09-17 is past the data


async def test_yield_curve(renderer):
    report, _ = await rates_answer(MarketData([]), Documents(None), renderer)
    spread = (RAW["DGS10"] - RAW["DGS2"]).dropna()
    c = report.curve
    assert c.as_of == spread.index[-1].date() == date(2026, 8, 20)
    assert (c.dgs2, c.dgs10) == (4.19, 4.69) and c.spread_pp == pytest.approx(spread.iloc[-1])
    for change, months in zip(c.changes, (3, 12), strict=True):
        then = spread.loc[: spread.index[-1] - pd.DateOffset(months=months)]
        assert change.since == then.index[-1].date()
        assert change.change_pp == pytest.approx(spread.iloc[-1] - then.iloc[-1])
    assert [x.direction for x in c.changes] == ["flattening", "flattening"]  # +0.53 -> +0.50, +0.55 -> +0.50


def test_yield_curve_before_the_data():
    short = RAW.loc[:"2000-02-15"]
    curve = yield_curve(short["DGS2"].dropna(), short["DGS10"].dropna())
    assert curve is not None and [x.change_pp for x in curve.changes] == [None, None]
    assert [x.direction for x in curve.changes] == ["n/a", "n/a"]
    assert yield_curve(pd.Series(dtype=float), pd.Series(dtype=float)) is None


# --- as_of ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_of, stance, last", [
    (date(2024, 12, 31), "easing", date(2024, 12, 18)),
    (date(2023, 10, 31), "tightening", date(2023, 7, 26)),
    (date(2024, 3, 1), "on hold", date(2023, 7, 26)),
    (date(2009, 6, 30), "on hold", None),  # no change since the range series starts (2008-12-16)
])
async def test_stance_as_of(renderer, as_of, stance, last):
    report, _ = await rates_answer(MarketData([]), Documents(None), renderer, as_of)
    p = report.policy
    assert p.stance == stance and (p.last_change.day if p.last_change else None) == last
    assert p.target_as_of <= as_of and p.effective_as_of <= as_of


async def test_as_of_uses_only_what_was_known(renderer):
    report, _ = await rates_answer(MarketData([]), Documents(None), renderer, date(2020, 6, 30))
    assert [c.cut.day for c in report.cycles] == FIRST_CUTS[:3]
    assert not report.cycles[-1].complete and report.cycles[-1].windows[1].end == date(2020, 1, 31)
    assert [c.cut.day for c in report.resumptions] == [date(2020, 3, 3)]
    assert report.policy.monthly_as_of == date(2020, 6, 1)  # June's average, complete on the 30th
    assert not any("Rate data ends" in n for n in report.notes)


async def test_as_of_before_the_target_range_starts(renderer):
    report, _ = await rates_answer(MarketData([]), Documents(None), renderer, date(2005, 6, 30))
    p = report.policy
    assert p.target is None and p.stance == "unknown" and p.target_from == date(2008, 12, 16)
    assert p.effective == RAW["DFF"].asof(pd.Timestamp("2005-06-30")) and p.effective_as_of == date(2005, 6, 30)
    assert any("starts 2008-12-16" in n for n in report.notes)
    assert [c.cut.day for c in report.cycles] == FIRST_CUTS[:1]


@pytest.mark.parametrize("as_of", [date(1999, 1, 4), date(2030, 1, 2)])
async def test_as_of_outside_the_data(renderer, as_of):
    with pytest.raises(InputError, match="as_of"):
        await rates_answer(MarketData([]), Documents(None), renderer, as_of)


class SpyTo20260731(BundledProvider):
    """The bundled data with SPY cut at 2026-07-31."""

    async def fetch(self, symbol: str) -> pd.DataFrame:
        frame = await super().fetch(symbol)
        return frame.loc[:"2026-07-31"] if symbol.upper() == "SPY" else frame


async def test_spy_ending_before_iwm_ends_the_returns_and_says_so(renderer):
    report, _ = await rates_answer(MarketData([], bundled=SpyTo20260731()), Documents(None), renderer)
    assert report.as_of == date(2026, 7, 31)
    assert any("SPY data ends 2026-07-31" in n for n in report.notes)
    assert [c.complete for c in report.cycles] == [True, True, True, False]
    assert report.cycles[-1].windows[-1].end is None and report.stats[3].n == 3


# --- live FRED ------------------------------------------------------------------------------------------------

async def test_live_fred_series_in_fredgraph_format(server, session, renderer):
    server.script(PATH, *fred_replies(until="2026-06-30"))  # older than the bundle: shows which one answered
    docs = Documents(session, backoff=0.01, max_wait=0.05)
    report, _ = await rates_answer(MarketData([]), docs, renderer, fred_base_url=server.url)
    assert [r.query["id"] for r in server.requests] == [MONTHLY, *DAILY]
    p = report.policy
    assert p.target_as_of == date(2026, 6, 30) and p.effective_as_of == date(2026, 6, 30)
    assert report.curve.as_of == date(2026, 6, 30)
    assert report.daily_source.startswith("FRED DFF/DFEDTARU/DFEDTARL/DGS2/DGS10, fetched") and not report.stale
    assert [c.cut.day for c in report.cycles] == FIRST_CUTS
    again, _ = await rates_answer(MarketData([]), docs, renderer, fred_base_url=server.url)
    assert again == report and server.calls[PATH] == 6  # fresh cache: no more requests


async def test_live_fred_faults_fall_back_to_bundled_and_say_so(server, session, renderer):
    server.script(PATH, Reply(body="<html><body>Service unavailable</body></html>", content_type="text/html"))
    docs = Documents(session, backoff=0.01, max_wait=0.05)
    report, _ = await rates_answer(MarketData([]), docs, renderer, fred_base_url=server.url)
    assert report.stale and report.monthly_source == "FRED FEDFUNDS, bundled file (stale)"
    assert report.daily_source == "FRED DFF/DFEDTARU/DFEDTARL/DGS2/DGS10, bundled file (stale)"
    assert report.policy.target == (3.5, 3.75)  # the bundled figures


async def test_one_live_series_failing_is_named(server, session, renderer):
    replies = fred_replies()
    replies[4] = Reply(status=500, body="upstream error")  # DGS2: FEDFUNDS, DFF, DFEDTARU, DFEDTARL, *DGS2*
    server.script(PATH, *replies)
    docs = Documents(session, attempts=1, backoff=0.01, max_wait=0.05)
    report, _ = await rates_answer(MarketData([]), docs, renderer, fred_base_url=server.url)
    assert report.stale and "FRED DGS2, bundled file (stale)" in report.daily_source
    assert "FRED DFF, fetched" in report.daily_source

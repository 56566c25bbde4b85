"""The /iwm rates answer: fetch, compute, render."""

from __future__ import annotations

import asyncio
from datetime import date

import pandas as pd

from services.bundled import bundled_text
from services.charts import Renderer
from services.documents import Documents
from services.errors import InputError
from services.market import MarketData, stale_prices_note
from services.rates._analysis import Policy, RatesReport, compute_rates, known_by, listed_first_cuts
from services.rates._chart import RatesChart, render_rates
from services.rates._fred import (
    BUNDLED_DAILY,
    BUNDLED_MONTHLY,
    DAILY,
    FRED_BASE_URL,
    LISTED_FIRST_CUTS,
    MONTHLY,
    STUDY_START,
    fred_series,
)


def stance_text(p: Policy) -> str:
    """e.g. "on hold since 2025-12-10", "easing (last cut 2024-12-18)", "stance unknown"."""
    if p.stance == "unknown":
        return "stance unknown (no target range in the data)"
    if p.last_change is None:
        return f"on hold since at least {p.target_as_of}" if p.stance == "on hold" else p.stance
    if p.stance == "on hold":
        return f"on hold since {p.last_change.day}"
    return f"{p.stance} (last {'cut' if p.last_change.change_pp < 0 else 'hike'} {p.last_change.day})"


async def rates_answer(market: MarketData, documents: Documents, renderer: Renderer, as_of: date | None = None,
                       *, fred_base_url: str = FRED_BASE_URL) -> tuple[RatesReport, bytes]:
    """The `/iwm rates` report and its chart (PNG) as of a day (default: the latest data)."""
    iwm, spy = await asyncio.gather(market.bars("IWM"), market.bars("SPY"))
    iwm.check_as_of(as_of)
    iwm = iwm.until(as_of)
    prices = pd.concat([iwm.frame["adj_close"], spy.frame["adj_close"]], axis=1, keys=["iwm", "spy"],
                       join="inner").dropna()
    if prices.empty:
        raise InputError(f"no common IWM/SPY closes up to {as_of}")
    ratio = prices["iwm"] / prices["spy"]  # relative strength, on the same common closes
    # One at a time: the documents cache is per series, and FRED answers them all on the same path.
    fedfunds = await fred_series(documents, MONTHLY, fred_base_url, BUNDLED_MONTHLY)
    daily = {sid: await fred_series(documents, sid, fred_base_url, BUNDLED_DAILY) for sid in DAILY}
    listed = listed_first_cuts(bundled_text(LISTED_FIRST_CUTS))
    notes: list[str] = []
    if prices.index[-1] < iwm.frame.index[-1]:
        notes.append(f"SPY data ends {prices.index[-1].date()}: returns stop there.")
    if stale := stale_prices_note((iwm, spy)):
        notes.append(stale)
    market_source = iwm.source if iwm.source == spy.source else f"IWM {iwm.source}, SPY {spy.source}"
    report = compute_rates(daily, fedfunds, listed, prices, market_source, as_of, tuple(notes),
                           iwm.stale or spy.stale)
    start = max(STUDY_START, prices.index[0] - pd.DateOffset(months=6))
    target = pd.concat([known_by(daily["DFEDTARL"].values, as_of), known_by(daily["DFEDTARU"].values, as_of)],
                       axis=1, keys=["low", "high"], join="inner")
    p = report.policy
    headline = (f"Fed funds {p.target[0]:.2f}–{p.target[1]:.2f}%" if p.target
                else f"Effective fed funds {p.effective:.2f}%")
    chart = RatesChart(
        fed_funds=known_by(fedfunds.values, as_of, monthly=True).loc[start:],
        target=target.loc[start:],
        ratio=ratio.loc[start:],
        dgs2=known_by(daily["DGS2"].values, as_of).loc[start:],
        dgs10=known_by(daily["DGS10"].values, as_of).loc[start:],
        cuts=tuple(c.cut.day for c in report.cycles),
        title=f"{headline} · {stance_text(p)}",
        subtitle=f"FRED to {p.effective_as_of} · IWM/SPY to {report.as_of}",
    )
    return report, await renderer.render(render_rates, chart)

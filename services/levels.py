"""`/iwm levels`: where IWM stands against the levels members watch, computed from daily bars.

Levels are compared with traded prices (`close`, `high`, `low`: split-adjusted, not dividend-adjusted); returns
and relative strength use dividend-adjusted closes (`adj_close`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date

import pandas as pd

from services import market_calendar
from services.charts import LevelsChart, Renderer, render_levels
from services.config import Zones
from services.errors import InputError
from services.market import Bars, MarketData
from services.returns import return_pct, returns_between

PERIODS = {"3mo": 3, "6mo": 6, "1y": 12, "2y": 24, "5y": 60, "max": None}
# One candle per week over spans longer than a year, per month over all of it (~320 candles, not 6,600); daily
# otherwise. (pandas rule, name in the chart's subtitle.)
CANDLES = {"2y": ("W-FRI", "weekly"), "5y": ("W-FRI", "weekly"), "max": ("ME", "monthly")}


@dataclass(frozen=True)
class Extreme:
    value: float
    day: date


@dataclass(frozen=True)
class Distance:
    """From the last close to a level; positive means the level is above the close."""

    dollars: float
    pct: float


@dataclass(frozen=True)
class LevelsReport:
    symbol: str
    as_of: date
    source: str
    stale: bool
    note: str
    close: float
    prev_close: float
    zones: Zones
    verdict: str
    ath_intraday: Extreme
    ath_close: Extreme
    high_2021_intraday: Extreme | None
    high_2021_close: Extreme | None
    closes_above_resistance: int  # closes above the resistance zone top in the last year
    last_close_above_resistance: date | None
    sma50: float | None
    sma200: float | None
    week52_high: Extreme
    week52_low: Extreme
    monthly_returns: pd.Series  # by month end, adjusted; the last one may be month to date
    month_in_progress: bool
    up_streak: int
    rs_ratio: float | None
    rs_changes: dict[int, float | None]  # months -> % change of the IWM/SPY ratio
    rs_as_of: date | None
    benchmark: str
    month_data_ends: bool = False  # the last month is incomplete because the data stops early, not in progress

    @property
    def change(self) -> float:
        return self.close - self.prev_close

    @property
    def change_pct(self) -> float:
        return self.close / self.prev_close * 100 - 100

    @property
    def drawdown_pct(self) -> float:
        return self.close / self.ath_close.value * 100 - 100

    def distance(self, level: float) -> Distance:
        return Distance(level - self.close, (level / self.close - 1) * 100)


def verdict(close: float, zones: Zones) -> str:
    if close < zones.support:
        return "below support"
    if close < zones.entry_low:
        return "between support and the entry zone"
    if close <= zones.entry_high:
        return "in the entry zone"
    if close < zones.resistance_low:
        return "between the entry zone and resistance"
    if close <= zones.resistance_high:
        return "testing resistance"
    return "broken out above resistance"


def _extreme(series: pd.Series, largest: bool = True) -> Extreme:
    stamp = series.idxmax() if largest else series.idxmin()
    return Extreme(float(series[stamp]), stamp.date())


def monthly_returns(adj_close: pd.Series) -> pd.Series:
    """Month-over-month % returns by month, each from the previous month's last adjusted close to this month's
    (the last month may be partial)."""
    prices = adj_close.dropna()
    last_day = prices.index.to_series().groupby(prices.index.to_period("M")).last()
    days = pd.DatetimeIndex(last_day)
    return pd.Series(returns_between(prices, days[:-1], days[1:]), index=last_day.index[1:], name=prices.name)


def up_streak(returns: pd.Series) -> int:
    """Consecutive positive months counted back from the latest one."""
    streak = 0
    for value in reversed(returns.to_numpy()):
        if value <= 0:
            break
        streak += 1
    return streak


def _ratio_change(ratio: pd.Series, months: int) -> float | None:
    """% change of the ratio over the `months` to its latest value; None without that much history."""
    if ratio.empty:
        return None
    return return_pct(ratio, ratio.index[-1] - pd.DateOffset(months=months))


def relative_strength(iwm: pd.DataFrame, spy: pd.DataFrame) -> pd.Series:
    """IWM/SPY adjusted-close ratio on common trading days."""
    joined = pd.concat([iwm["adj_close"], spy["adj_close"]], axis=1, keys=["a", "b"], join="inner").dropna()
    return joined["a"] / joined["b"]


def rs_note(ratio: pd.Series, last_bar: pd.Timestamp, benchmark: str) -> str:
    """What the RS panel and field say when the ratio stops before IWM's last bar ("" when it does not)."""
    if ratio.empty or ratio.index[-1] >= last_bar:
        return ""
    return f"IWM/{benchmark} to {ratio.index[-1].date()}, the last day both have ({benchmark} data ends there)"


def month_state(full_index: pd.DatetimeIndex, day: pd.Timestamp, last_session: date | None) -> str:
    """How the month of `day` (the last bar used) stands: "complete" when `day` is its last NYSE session;
    "in progress" when later bars exist (an as-of answer) or it is the month of the last completed session
    (None: assume so); else "data ends" (the data stops before the month did)."""
    if market_calendar.closes_month(day.date()):
        return "complete"
    if (full_index > day).any() or last_session is None or day.to_period("M") == pd.Period(last_session, "M"):
        return "in progress"
    return "data ends"


def compute_levels(iwm: Bars, spy: Bars, zones: Zones, as_of: date | None = None,
                   last_session: date | None = None) -> LevelsReport:
    """The levels report as of `as_of` (default: the latest bar), using only bars up to that day. `last_session`:
    the last completed NYSE session, which tells a month in progress from data that stops early."""
    iwm.check_as_of(as_of)
    cut = iwm.until(as_of)
    frame = cut.frame.dropna(subset=["close"])
    if len(frame) < 2:
        raise InputError(f"not enough {iwm.symbol} history up to {as_of} to compute levels")
    close = frame["close"]
    last_day = frame.index[-1]
    in_2021 = frame.loc["2021":"2021"]
    year_ago = frame.loc[last_day - pd.DateOffset(years=1) + pd.Timedelta(days=1):]
    returns = monthly_returns(cut.frame["adj_close"])
    above = close[close > zones.resistance_high]
    ratio = relative_strength(cut.frame, spy.until(last_day).frame)
    state = month_state(iwm.frame.index, last_day, last_session)
    return LevelsReport(
        symbol=iwm.symbol,
        as_of=last_day.date(),
        source=iwm.source,
        stale=iwm.stale,
        note=iwm.note,
        close=float(close.iloc[-1]),
        prev_close=float(close.iloc[-2]),
        zones=zones,
        verdict=verdict(float(close.iloc[-1]), zones),
        ath_intraday=_extreme(frame["high"]),
        ath_close=_extreme(close),
        high_2021_intraday=_extreme(in_2021["high"]) if len(in_2021) else None,
        high_2021_close=_extreme(in_2021["close"]) if len(in_2021) else None,
        closes_above_resistance=int((year_ago["close"] > zones.resistance_high).sum()),
        last_close_above_resistance=above.index[-1].date() if len(above) else None,
        sma50=float(close.iloc[-50:].mean()) if len(close) >= 50 else None,
        sma200=float(close.iloc[-200:].mean()) if len(close) >= 200 else None,
        week52_high=_extreme(year_ago["high"]),
        week52_low=_extreme(year_ago["low"], largest=False),
        monthly_returns=returns,
        month_in_progress=state == "in progress",
        up_streak=up_streak(returns),
        rs_ratio=float(ratio.iloc[-1]) if len(ratio) else None,
        rs_changes={m: _ratio_change(ratio, m) for m in (3, 6, 12)},
        rs_as_of=ratio.index[-1].date() if len(ratio) else None,
        benchmark=spy.symbol,
        month_data_ends=state == "data ends",
    )


def chart_window(frame: pd.DataFrame, period: str) -> pd.DataFrame:
    months = PERIODS[period]
    if months is None:
        return frame
    return frame.loc[frame.index[-1] - pd.DateOffset(months=months):]


def candle_bars(frame: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Daily bars as one bar per `rule` period (pandas offset alias), each dated by its last session, so the
    averages and the ratio sampled on those dates are their values at the candle's close."""
    groups = frame.groupby(pd.Grouper(freq=rule))
    how = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    bars = groups.agg({k: v for k, v in how.items() if k in frame.columns})
    last = frame.index.to_series().groupby(pd.Grouper(freq=rule)).last()
    bars.index = pd.DatetimeIndex(last.reindex(bars.index).to_numpy())
    return bars.dropna(subset=["close"])


def candle_name(period: str) -> str:
    return CANDLES[period][1] if period in CANDLES else "daily"


def price_chart(frame: pd.DataFrame, day: date, period: str, zones: Zones, ath_close: float, title: str,
                subtitle: str, *, rs_vs: pd.DataFrame | None = None, highlight: float | None = None,
                benchmark: str = "SPY") -> LevelsChart:
    """A levels chart spec: the bars up to `day` over `period`, with 50/200-day averages (from the whole
    history, so they start on the first bar shown) and, given SPY's frame, relative strength."""
    bars = frame.loc[: pd.Timestamp(day)].dropna(subset=["close"])
    close = bars["close"]
    window = chart_window(bars, period)
    start = window.index[0]
    rs = relative_strength(window, rs_vs) if rs_vs is not None else pd.Series(dtype="float64")
    return LevelsChart(
        frame=candle_bars(window, CANDLES[period][0]) if period in CANDLES else window,
        sma50=close.rolling(50).mean().loc[start:],
        sma200=close.rolling(200).mean().loc[start:],
        rs=rs,
        zones=zones,
        ath_close=ath_close,
        title=title,
        subtitle=subtitle,
        highlight=highlight,
        rs_note=rs_note(rs, window.index[-1], benchmark),
    )


def levels_chart(iwm: Bars, spy: Bars, report: LevelsReport, period: str) -> LevelsChart:
    """The chart spec for a levels report: bars up to its as-of day, the chosen span, averages and RS."""
    return price_chart(
        iwm.frame, report.as_of, period, report.zones, report.ath_close.value,
        f"IWM {report.close:.2f} · {report.verdict}",
        f"{candle_name(period)} candles, {period} · as of {report.as_of} · source: {iwm.source}"
        + (" (stale)" if iwm.stale else ""),
        rs_vs=spy.frame, benchmark=spy.symbol,
    )


async def levels_answer(
    market: MarketData, renderer: Renderer, zones: Zones, period: str = "1y", as_of: date | None = None
) -> tuple[LevelsReport, bytes]:
    """The `/iwm levels` report and its chart (PNG) as of a day."""
    if period not in PERIODS:
        raise InputError(f"period {period!r}: choose one of {', '.join(PERIODS)}")
    iwm, spy = await asyncio.gather(market.bars("IWM"), market.bars("SPY"))
    report = compute_levels(iwm, spy, zones, as_of, await market.last_session())
    return report, await renderer.render(render_levels, levels_chart(iwm, spy, report, period))

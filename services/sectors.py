"""`/iwm sectors`: what IWM holds by sector (iShares holdings file) and how small-cap sectors have done against it.

Weights: the iShares IWM holdings CSV (live download via documents.py; the bundled 2026-05-05 file when offline or
when the download fails, then marked stale), equity rows only, `Weight (%)` summed by `Sector`.
Performance: total returns (`adj_close`) of small-cap sector ETFs against IWM over 1 month, 3 months, year to date
and 1 year, all ending on the last day every series has (so no ETF is compared over a shorter window).
The PSC* funds track S&P SmallCap 600 sectors, not the Russell 2000's; KRE and XBI are equal-weighted S&P
industry funds that also hold mid and large caps. Real Estate has no fund here, so its performance is missing.
"""

from __future__ import annotations

import asyncio
import csv
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING

import pandas as pd

from services.charts import (
    DOWN,
    MUTED,
    TEXT,
    TEXT_PT,
    UP,
    WIDTH_IN,
    YELLOW,
    Renderer,
    blank_figure,
    few_ticks,
    header,
    reference,
    style_axes,
    to_png,
)
from services.config import Settings
from services.documents import Document, Documents, looks_like_html
from services.errors import InputError
from services.market import Bars, MarketData, UnknownSymbol, stale_prices_note
from services.returns import return_pct

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from services.members import MemberSector, MemberSectors
    from services.storage import Database

ISHARES_IWM_HOLDINGS_URL = Settings.holdings_url
BUNDLED_HOLDINGS = "IWM_holdings.2026-05-05.csv.gz"
BENCHMARK = "IWM"
PERIODS = ("1m", "3m", "ytd", "1y")
MAX_LAG_DAYS = 10  # a fund ending this much before the others is reported missing rather than cut all
BACKGROUND_LABEL = "General background on rate sensitivity, not data"
LEADERS = 3  # funds listed as leaders, and as laggards


@dataclass(frozen=True)
class SectorFund:
    symbol: str
    name: str
    sectors: tuple[str, ...]  # the holdings-file sectors it stands for (empty: a sub-industry, no weight of its own)
    rate_sensitivity: str  # general background, not data

FUNDS = (
    SectorFund("PSCI", "Industrials", ("Industrials",),
               "Cyclical and often indebted: cheaper credit and a firmer economy help; recession-driven cuts hurt."),
    SectorFund("PSCT", "Information Technology", ("Information Technology",),
               "Growth-tilted: lower discount rates lift the value of distant earnings; cash burners gain most."),
    SectorFund("PSCF", "Financials", ("Financials",),
               "Mixed: cuts ease funding costs and credit stress but can squeeze lending margins."),
    SectorFund("PSCH", "Health Care", ("Health Care",),
               "Rates matter less than drug, trial and policy news, except for loss-making firms that need funding."),
    SectorFund("PSCD", "Consumer Discretionary", ("Consumer Discretionary",),
               "Tied to consumer credit: lower card, auto and mortgage rates support spending."),
    SectorFund("PSCE", "Energy", ("Energy",),
               "Driven by oil and gas prices; rates matter mostly through growth and the dollar."),
    SectorFund("PSCM", "Materials", ("Materials",),
               "Cyclical: cuts help via growth and a weaker dollar, but commodity prices dominate."),
    SectorFund("PSCU", "Utilities & Communication", ("Utilities", "Communication"),
               "Bond-like and capital-intensive: lower yields cut financing costs and make dividends look better."),
    SectorFund("PSCC", "Consumer Staples", ("Consumer Staples",),
               "Defensive, steady demand: cuts matter less, though lower yields can help dividend payers."),
    SectorFund("KRE", "Regional Banks", (),
               "Cuts ease deposit costs and loan stress (commercial property); falling yields can squeeze margins."),
    SectorFund("XBI", "Biotech", (),
               "Long-duration, mostly unprofitable firms that raise capital often: lower rates usually help."),
)


@dataclass(frozen=True)
class SectorWeight:
    sector: str
    weight: float  # % of the fund
    holdings: int


@dataclass(frozen=True)
class Holdings:
    fund: str
    as_of: date  # "Fund Holdings as of" in the file
    weights: tuple[SectorWeight, ...]  # equity only, largest first
    equity_weight: float  # sum of the equity weights, % (the rest is cash and futures)
    equity_count: int
    source: str  # e.g. "iShares holdings, bundled file (stale)"
    stale: bool
    note: str

    def weight(self, *sectors: str) -> float | None:
        found = [w.weight for w in self.weights if w.sector in sectors]
        return sum(found) if found else None


@dataclass(frozen=True)
class SectorLine:
    symbol: str
    name: str
    weight: float | None  # % of IWM in the sector(s) the fund stands for; None for sub-industries
    returns: dict[str, float | None]  # period -> total return %, None when the data does not cover it
    relative: dict[str, float | None]  # period -> return minus IWM's, pp
    data_end: date | None  # the fund's last bar (None: no data at all)
    rate_sensitivity: str  # general background, not data
    note: str = ""


@dataclass(frozen=True)
class SectorsReport:
    as_of: date  # the common end date every return is measured to
    period: str  # the period leaders/laggards and the chart use
    period_starts: dict[str, date]  # period -> the close the returns are measured from
    benchmark: str
    benchmark_returns: dict[str, float | None]
    lines: tuple[SectorLine, ...]  # fund order as in FUNDS
    leaders: tuple[str, ...]  # symbols, best relative performance over `period` first
    laggards: tuple[str, ...]  # worst first
    holdings: Holdings
    unmatched_sectors: tuple[str, ...]  # holdings sectors without a fund (e.g. Real Estate)
    market_source: str
    stale: bool
    alignment_note: str
    benchmark_end: date  # IWM's last bar up to as_of (may be after `as_of`, the common end)
    notes: tuple[str, ...] = ()
    background_label: str = BACKGROUND_LABEL
    members: MemberReturns | None = None  # the Russell 2000's own sectors (None: the day is before the member data)


@dataclass(frozen=True)
class MemberReturns:
    """The holdings sectors measured from the members, each against IWM's own return over the same sessions."""

    sectors: MemberSectors
    benchmark_returns: dict[str, float | None]  # period -> IWM's total return % over the member window
    relative: dict[str, dict[str, float | None]]  # sector -> period -> return minus IWM's, pp
    leaders: tuple[str, ...]  # sectors ahead of IWM over the report's period, best first
    laggards: tuple[str, ...]  # sectors behind IWM, worst first


# --- holdings -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HoldingsTable:
    """An iShares holdings CSV, parsed."""

    fund: str  # the file's first line, e.g. "iShares Russell 2000 ETF"
    as_of: date  # "Fund Holdings as of"
    rows: pd.DataFrame  # one row per holding, the file's columns; `Weight (%)` numeric


def parse_holdings(text: str) -> HoldingsTable:
    """An iShares holdings CSV -> its table. ValueError when the text is not one (an HTML page, a changed
    format). Rows: the table between the header and the first short line (the footer)."""
    if looks_like_html(text):
        raise ValueError("HTML page instead of the holdings CSV")
    lines = text.lstrip("\ufeff").splitlines()
    header_at = next((i for i, line in enumerate(lines[:40]) if line.startswith("Ticker,Name,Sector")), None)
    as_of_line = next((line for line in lines[:40] if line.startswith("Fund Holdings as of")), None)
    if header_at is None or as_of_line is None:
        raise ValueError("no 'Fund Holdings as of' line or 'Ticker,Name,Sector' header")
    try:
        as_of = datetime.strptime(next(csv.reader([as_of_line]))[1].strip(), "%b %d, %Y").date()
    except (IndexError, ValueError) as exc:
        raise ValueError(f"bad as-of line {as_of_line[:60]!r}") from exc
    reader = csv.reader(lines[header_at:])
    header = next(reader)
    rows = []
    for row in reader:
        if len(row) < len(header):
            break  # the blank line before the legal footer
        rows.append(row[: len(header)])
    frame = pd.DataFrame(rows, columns=header)
    needed = {"Sector", "Asset Class", "Weight (%)"}
    if frame.empty or not needed <= set(frame.columns):
        raise ValueError("holdings table is empty or lacks Sector / Asset Class / Weight (%)")
    try:
        frame["Weight (%)"] = pd.to_numeric(frame["Weight (%)"].str.replace(",", ""), errors="raise")
    except ValueError as exc:
        raise ValueError(f"bad Weight (%) value: {exc}") from exc
    fund = lines[0].strip().strip('"') if lines else ""
    return HoldingsTable(fund, as_of, frame)


def sector_weights(frame: pd.DataFrame) -> tuple[SectorWeight, ...]:
    equity = frame[frame["Asset Class"] == "Equity"]
    grouped = equity.groupby("Sector")["Weight (%)"].agg(["sum", "count"]).sort_values("sum", ascending=False)
    return tuple(SectorWeight(str(s), float(row["sum"]), int(row["count"])) for s, row in grouped.iterrows())


def holdings_from(document: Document) -> Holdings:
    table = parse_holdings(document.text)
    weights = sector_weights(table.rows)
    return Holdings(
        fund=table.fund, as_of=table.as_of, weights=weights, equity_weight=sum(w.weight for w in weights),
        equity_count=sum(w.holdings for w in weights), source=document.describe("iShares holdings"),
        stale=document.stale, note=document.note,
    )


# --- performance ----------------------------------------------------------------------------------------------

def period_start(end: pd.Timestamp, period: str) -> pd.Timestamp:
    """The calendar day a period's return is measured from (the last close on or before it is used)."""
    if period == "ytd":
        return pd.Timestamp(end.year - 1, 12, 31)
    months = {"1m": 1, "3m": 3, "1y": 12}[period]
    return end - pd.DateOffset(months=months)


def common_end(series: dict[str, pd.Series]) -> tuple[pd.Timestamp, list[str]]:
    """(the last day IWM and the funds all have, the funds left out). A fund whose data ends more than
    MAX_LAG_DAYS before the most recent fund's is left out (reported missing) instead of cutting every window
    short; the others are aligned on their last common day."""
    funds = {s: x for s, x in series.items() if s != BENCHMARK}
    latest = max((x.index[-1] for x in funds.values() if len(x)), default=None)
    behind = [s for s, x in funds.items() if latest is None or x.empty or (latest - x.index[-1]).days > MAX_LAG_DAYS]
    common = series[BENCHMARK].index
    for symbol, x in funds.items():
        if symbol not in behind:
            common = common.intersection(x.index)
    return common[-1], behind


def compute_sectors(bars: dict[str, Bars], holdings: Holdings, period: str = "3m",
                    as_of: date | None = None) -> SectorsReport:
    """The report for returns ending on the last common day on or before `as_of`. `bars` holds IWM and the funds
    (a fund missing from it is reported with no data)."""
    if period not in PERIODS:
        raise InputError(f"period {period!r}: choose one of {', '.join(PERIODS)}")
    bars[BENCHMARK].check_as_of(as_of)
    adj = {s: b.until(as_of).frame["adj_close"].dropna() for s, b in bars.items()}
    end, behind = common_end(adj)
    starts = {p: period_start(end, p) for p in PERIODS}
    bench = {p: return_pct(adj[BENCHMARK], starts[p], end) for p in PERIODS}
    lines = []
    for fund in FUNDS:
        series = adj.get(fund.symbol, pd.Series(dtype="float64"))
        data_end = series.index[-1].date() if len(series) else None
        if fund.symbol in behind or fund.symbol not in adj:
            returns: dict[str, float | None] = dict.fromkeys(PERIODS)
            note = f"data ends {data_end}" if data_end else "no data"
        else:
            returns = {p: return_pct(series, starts[p], end) for p in PERIODS}
            gaps = [p for p in PERIODS if returns[p] is None]
            note = f"data starts {series.index[0].date()}: no {', '.join(gaps)}" if gaps else ""
        relative = {p: difference(returns[p], bench[p]) for p in PERIODS}
        lines.append(SectorLine(fund.symbol, fund.name, holdings.weight(*fund.sectors), returns, relative,
                                data_end, fund.rate_sensitivity, note))
    ranked = sorted((x for x in lines if x.relative[period] is not None), key=lambda x: -(x.relative[period] or 0))
    matched = {s for f in FUNDS for s in f.sectors}
    notes = []
    if abs((holdings.as_of - end.date()).days) > 31:
        notes.append(f"Weights are from the holdings file dated {holdings.as_of}; returns run to {end.date()} "
                     "(no holdings history).")
    if stale := stale_prices_note(bars.values()):
        notes.append(stale)
    bench_end = adj[BENCHMARK].index[-1].date()
    alignment = (f"All returns end {end.date()}, the last day every fund has"
                 + (f" (IWM data runs to {bench_end})." if end.date() < bench_end else "."))
    return SectorsReport(
        as_of=end.date(),
        period=period,
        period_starts={p: adj[BENCHMARK].loc[: starts[p]].index[-1].date() for p in PERIODS},
        benchmark=BENCHMARK,
        benchmark_returns=bench,
        lines=tuple(lines),
        leaders=ahead_and_behind({x.symbol: x.relative[period] for x in ranked})[0],
        laggards=ahead_and_behind({x.symbol: x.relative[period] for x in ranked})[1],
        holdings=holdings,
        unmatched_sectors=tuple(w.sector for w in holdings.weights if w.sector not in matched),
        market_source=", ".join(sorted({b.source for b in bars.values()})),
        stale=holdings.stale or any(b.stale for b in bars.values()),
        alignment_note=alignment,
        benchmark_end=bench_end,
        notes=tuple(notes),
    )


def difference(value: float | None, benchmark: float | None) -> float | None:
    """`value - benchmark` in points; None when either is missing."""
    return None if value is None or benchmark is None else value - benchmark


def ahead_and_behind(relative: dict[str, float | None]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(up to LEADERS names that beat IWM, best first; up to LEADERS that lagged it, worst first): strictly by
    the relative return, so one that lagged IWM is never a leader (nor one that beat it a laggard)."""
    known = sorted(((v, k) for k, v in relative.items() if v is not None), reverse=True)
    return (tuple(k for v, k in known if v > 0)[:LEADERS], tuple(k for v, k in reversed(known) if v < 0)[:LEADERS])


def member_returns(sectors: MemberSectors, iwm: pd.Series, period: str) -> MemberReturns:
    """The member sectors against IWM's adjusted close over the same sessions."""
    bench = {p: None if s is None else return_pct(iwm, s, sectors.as_of) for p, s in sectors.period_starts.items()}

    def rel(x: MemberSector) -> dict[str, float | None]:
        return {p: difference(v, bench[p]) for p, v in x.returns.items()}

    relative = {x.sector: rel(x) for x in sectors.sectors}
    leaders, laggards = ahead_and_behind({k: v[period] for k, v in relative.items()})
    return MemberReturns(sectors, bench, relative, leaders, laggards)


async def with_member_sectors(report: SectorsReport, iwm: Bars, database: Database | None = None,
                              ) -> SectorsReport:
    """The report with the Russell 2000's own sector returns, to its day or the last member close before it;
    `database` (live providers only): weighted by the newest archived holdings file (services.members.member_data)."""
    from services.members import member_data, member_sectors  # services.members imports this module

    data, origin = await member_data(database, report.as_of)
    if report.as_of < data.first_day:
        note = f"No member sector returns before {data.first_day} (the first member close)."
        return replace(report, notes=(*report.notes, note))
    sectors = member_sectors(data, min(report.as_of, data.as_of))
    members = member_returns(sectors, iwm.frame["adj_close"].dropna(), report.period)
    if not origin.closes_stale:
        return replace(report, members=members)
    return replace(report, members=members, stale=True, notes=(*report.notes, origin.closes_note))


# --- chart ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SectorsChart:
    weights: tuple[tuple[str, float], ...]  # (sector, % of IWM), sorted
    relative: tuple[tuple[str, float | None], ...]  # (fund label, pp vs IWM or None), sorted, None last
    period: str
    title: str
    subtitle: str
    measured: str = ""  # the common end date the returns run to, and a later IWM end, under the panel title


def draw_sectors(chart: SectorsChart) -> Figure:
    fig = blank_figure()
    # Inches from the left: sector names to 1.75, their weights to 2.85; fund names from 2.95, returns from 5.3.
    left, right = (fig.add_subplot(fig.add_gridspec(1, 1, left=a / WIDTH_IN, right=b / WIDTH_IN, top=0.8,
                                                    bottom=0.06)[0]) for a, b in ((1.75, 2.85), (5.3, 7.75)))
    for ax in (left, right):
        style_axes(ax)
        ax.yaxis.tick_left()
        ax.tick_params(axis="y", length=0, pad=3)
        ax.invert_yaxis()
        ax.set_axisbelow(True)
        ax.grid(False, axis="y")
    names = [s for s, _ in chart.weights]
    values = [w for _, w in chart.weights]
    left.barh(names, values, color=YELLOW, height=0.6)
    for y, weight in enumerate(values):
        left.text(weight, y, f" {weight:.1f}", va="center", color=TEXT, fontsize=TEXT_PT)
    left.set_title("IWM weight by sector, %", color=MUTED, fontsize=TEXT_PT, loc="left", pad=3,
                   x=(0.1 - 1.75) / (2.85 - 1.75))
    left.set_xlim(0, max(values, default=1) * 1.35)
    few_ticks(left.xaxis, 3)
    labels = [s for s, _ in chart.relative]
    rel = [v for _, v in chart.relative]
    drawn = [0.0 if v is None else v for v in rel]
    right.barh(labels, drawn, color=[MUTED if v is None else UP if v >= 0 else DOWN for v in rel], height=0.6)
    reference(right.axvline(0, color=MUTED, lw=0.8))
    span = max([abs(v) for v in drawn] + [1.0])
    right.set_xlim(-span * 1.75, span * 1.75)  # room for a label beyond the longest bar
    few_ticks(right.xaxis, 5)
    for y, v in enumerate(rel):
        text = "n/a" if v is None else f"{v:+.1f}"
        right.text(0 if v is None else v, y, f" {text} ", va="center", color=MUTED if v is None else TEXT,
                   fontsize=TEXT_PT, ha="left" if v is None or v >= 0 else "right")
    right.set_title(f"{chart.period} total return vs IWM, pp" + (f"\n{chart.measured}" if chart.measured else ""),
                    color=MUTED, fontsize=TEXT_PT, loc="left", pad=3, x=(2.95 - 5.3) / (7.75 - 5.3))
    header(fig, chart.title, chart.subtitle, reserve_in=0.4 if chart.measured else 0.22)
    return fig


def render_sectors(chart: SectorsChart) -> bytes:
    return to_png(draw_sectors(chart))


def sectors_chart(report: SectorsReport) -> SectorsChart:
    p = report.period
    def label(x: SectorLine) -> str:  # a fund whose data ends before the common end date says where it ends
        early = x.data_end is not None and x.data_end < report.as_of
        return f"{x.symbol} {x.name}" + (f" (to {x.data_end})" if early else "")

    rel = sorted(((label(x), x.relative[p]) for x in report.lines), key=lambda item: (item[1] is None, -(item[1] or 0)))
    later = f" (IWM to {report.benchmark_end})" if report.benchmark_end > report.as_of else ""
    bench = report.benchmark_returns[p]
    bench_text = "n/a" if bench is None else f"{bench:+.1f}%"
    return SectorsChart(
        weights=tuple((w.sector, w.weight) for w in report.holdings.weights),
        relative=tuple(rel),
        period=p,
        title=f"IWM sectors · {p} to {report.as_of} · IWM {bench_text}",
        subtitle=f"weights as of {report.holdings.as_of} ({report.holdings.source}) · prices: {report.market_source}",
        measured=f"to {report.as_of}, the last day all have{later}",
    )


# --- answer ---------------------------------------------------------------------------------------------------

async def _bars_or_none(market: MarketData, symbol: str) -> Bars | None:
    try:
        return await market.bars(symbol)
    except UnknownSymbol:
        return None


async def sectors_answer(market: MarketData, documents: Documents, renderer: Renderer, period: str = "3m",
                         as_of: date | None = None, *, holdings_url: str = ISHARES_IWM_HOLDINGS_URL,
                         database: Database | None = None) -> tuple[SectorsReport, bytes]:
    """The `/iwm sectors` report and its chart (PNG); `database` as in `with_member_sectors`."""
    if period not in PERIODS:
        raise InputError(f"period {period!r}: choose one of {', '.join(PERIODS)}")
    symbols = [BENCHMARK, *(f.symbol for f in FUNDS)]
    found, document = await asyncio.gather(
        asyncio.gather(*(_bars_or_none(market, s) for s in symbols)),
        documents.get(holdings_url, bundled=BUNDLED_HOLDINGS, validate=parse_holdings, source="iShares"),
    )
    bars = {s: b for s, b in zip(symbols, found, strict=True) if b is not None}
    if BENCHMARK not in bars:
        raise InputError("no IWM data")
    report = compute_sectors(bars, await asyncio.to_thread(holdings_from, document), period, as_of)
    report = await with_member_sectors(report, bars[BENCHMARK], database)
    return report, await renderer.render(render_sectors, sectors_chart(report))


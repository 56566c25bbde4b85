"""`/iwm valuation`: Russell 2000 (IWM) against S&P 500 (SPY) on trailing P/E, forward P/E, price/sales and
price/book, and the small/large ratio of each.

Sources, each with its own method note (small-cap P/E depends heavily on whether loss-makers are excluded):
- the operator file `services/data/valuation.csv` (`date,symbol,metric,value,source,note`; symbol IWM or SPY,
  metric one of METRICS, `note` says the method). It ships with no rows: there is no Russell 2000 valuation
  data the bot can source honestly offline, so those figures are missing until an operator adds them;
- the S&P 500 trailing P/E derived from the bundled Shiller data (monthly average price / trailing 12-month
  reported earnings; Earnings is written as 0.0 = missing after 2023-06);
- Yahoo's quoteSummary for IWM and SPY (current values only), when the market data provider is Yahoo;
- bottom-up figures from the members (`services.members`: the Russell 2000 from IWM's holdings at fund weights,
  the S&P 500 from its members at market caps, Yahoo daily dumps of 2026-08), with loss-maker shares and coverage.
No public Russell 2000 valuation history exists: the history chart is the S&P 500's (Shiller) unless an operator
adds a relative forward P/E history to valuation.csv.
The small/large ratio is only computed from one source's two figures dated within RATIO_MAX_DAYS of each other.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import math
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from services.bundled import bundled_text, data_file
from services.charts import (
    BLUE,
    CYAN,
    MUTED,
    PURPLE,
    TEXT,
    TEXT_PT,
    YELLOW,
    Renderer,
    axis_label,
    few_ticks,
    header,
    new_figure,
    to_png,
)
from services.documents import Document, Documents, DocumentUnavailable, yahoo_envelope
from services.errors import InputError
from services.members import MemberOrigin, MemberValuation, member_data, member_valuation
from services.storage import Database

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS = {"trailing_pe": "Trailing P/E", "forward_pe": "Forward P/E", "price_to_sales": "Price/sales",
           "price_to_book": "Price/book"}
SMALL, LARGE = "IWM", "SPY"
SIDES = {SMALL: "Russell 2000 (IWM)", LARGE: "S&P 500 (SPY)"}
RATIO_MAX_DAYS = 31
HISTORY_MIN_POINTS = 12
OPERATOR = "operator file"
SHILLER = "Shiller (bundled)"
YAHOO = "Yahoo quoteSummary"
MEMBERS = "members bottom-up"
MEMBERS_METHOD = ("bottom-up: the members' total market value / total earnings (book, sales); Russell 2000 at IWM "
                  "fund weights, S&P 500 at market caps; P/E leaves loss-makers out (see *Bottom-up*)")
SHILLER_METHOD = ("S&P 500 index, monthly average price / trailing 12-month reported earnings; index aggregate, "
                  "so loss-makers are included (net)")
YAHOO_METHOD = "Yahoo's figure for the ETF; Yahoo does not document how it aggregates holdings or treats loss-makers"
SOURCE_PRIORITY = {OPERATOR: 0, MEMBERS: 1, YAHOO: 2, SHILLER: 3}  # on equal dates, the operator's figure wins


@dataclass(frozen=True)
class Observation:
    symbol: str  # IWM or SPY
    metric: str
    value: float
    as_of: date
    source: str  # e.g. "Yardeni (operator file)", "Shiller (bundled)"
    method: str
    kind: str = OPERATOR  # OPERATOR, SHILLER, YAHOO or MEMBERS


@dataclass(frozen=True)
class Figures:
    """What one source gave: its figures, and notes for the member (rows skipped, a source down or stale)."""

    observations: tuple[Observation, ...]
    notes: tuple[str, ...] = ()
    stale: bool = False


@dataclass(frozen=True)
class MetricRow:
    metric: str
    label: str
    small: Observation | None  # IWM / Russell 2000; None = missing
    large: Observation | None  # SPY / S&P 500
    ratio: float | None  # small / large, from one source (see ratio_source)
    ratio_as_of: date | None
    ratio_source: str | None
    note: str  # why something is missing or why there is no ratio


@dataclass(frozen=True)
class RatioHistory:
    metric: str
    source: str
    first: date
    last: date
    points: int
    current: float  # the last point
    percentile: float  # % of points at or below the current one
    low: float
    low_date: date
    lowest_since: date | None  # the last earlier point below the current one; None: the lowest in the history


@dataclass(frozen=True)
class ValuationReport:
    as_of: date | None  # the day asked for (None: latest)
    rows: tuple[MetricRow, ...]  # in METRICS order
    history: RatioHistory | None  # relative forward P/E history, when there is one
    history_note: str
    methods: tuple[tuple[str, str], ...]  # ("IWM · source", method) for each side and source a figure comes from
    stale: bool
    notes: tuple[str, ...]
    members: MemberValuation | None = None  # the bottom-up figures (None: as_of before the member data)
    member_origin: MemberOrigin | None = None  # the members' snapshot (live or bundled), with its age when stale
    small_label: str = SIDES[SMALL]
    large_label: str = SIDES[LARGE]


# --- sources --------------------------------------------------------------------------------------------------

def parse_operator_file(text: str) -> Figures:
    """valuation.csv -> its figures; each bad row is skipped and named in the notes, never guessed at."""
    observations: list[Observation] = []
    problems: list[str] = []
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    expected = ["date", "symbol", "metric", "value", "source", "note"]
    if [f.strip() for f in reader.fieldnames or []] != expected:
        return Figures((), (f"valuation.csv header must be {','.join(expected)}",))
    for line, row in enumerate(reader, start=2):
        try:
            day = date.fromisoformat((row["date"] or "").strip())
            symbol, metric = (row["symbol"] or "").strip().upper(), (row["metric"] or "").strip()
            value = float(row["value"] or "nan")
            source = (row["source"] or "").strip()
            if symbol not in SIDES:
                raise ValueError(f"symbol must be {' or '.join(SIDES)}")
            if metric not in METRICS:
                raise ValueError(f"metric must be one of {', '.join(METRICS)}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError("value must be a positive number")
            if not source:
                raise ValueError("source is empty")
        except (ValueError, TypeError) as exc:
            problems.append(f"valuation.csv line {line} ignored: {exc}")
            continue
        method = (row["note"] or "").strip() or "method not given (are loss-makers excluded?)"
        observations.append(Observation(symbol, metric, value, day, f"{source} ({OPERATOR})", method))
    return Figures(tuple(observations), tuple(problems))


def shiller_pe() -> pd.Series:
    """S&P 500 trailing P/E by month from the bundled Shiller file; months with Earnings 0.0 (missing) dropped."""
    raw = pd.read_csv(data_file("SP500.shiller.monthly.csv.gz"), parse_dates=["Date"], index_col="Date")
    earnings = raw["Earnings"].where(raw["Earnings"] > 0)
    price = raw["SP500"].where(raw["SP500"] > 0)
    return (price / earnings).dropna().rename("trailing_pe")


def shiller_observations(pe: pd.Series) -> list[Observation]:
    return [Observation(LARGE, "trailing_pe", float(v), d.date(), SHILLER, SHILLER_METHOD, SHILLER)
            for d, v in pe.items()]


@functools.cache
def shiller() -> tuple[pd.Series, tuple[Observation, ...]]:
    """The Shiller P/E series and its observations, built once per process (bundled data)."""
    pe = shiller_pe()
    return pe, tuple(shiller_observations(pe))


def _raw(block: dict, name: str) -> float | None:
    field = block.get(name)
    value = field.get("raw") if isinstance(field, dict) else None
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def parse_quote_summary(text: str) -> dict[str, float | None]:
    """A quoteSummary body -> {metric: value or None}. ValueError when it is not one."""
    summary = yahoo_envelope(text, "quoteSummary", "quoteSummary")
    try:
        result = summary["result"][0]
        detail = result.get("summaryDetail") or {}
        stats = result.get("defaultKeyStatistics") or {}
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed quoteSummary: {type(exc).__name__}") from exc
    return {
        "trailing_pe": _raw(detail, "trailingPE"),
        "forward_pe": _raw(detail, "forwardPE") or _raw(stats, "forwardPE"),
        "price_to_sales": _raw(detail, "priceToSalesTrailing12Months"),
        "price_to_book": _raw(stats, "priceToBook"),
    }


async def yahoo_observations(documents: Documents, base_url: str) -> Figures:
    """Current quoteSummary figures for IWM and SPY."""

    async def one(symbol: str) -> Document | DocumentUnavailable:
        try:
            return await documents.get(f"{base_url.rstrip('/')}/v10/finance/quoteSummary/{symbol}",
                                       params={"modules": "summaryDetail,defaultKeyStatistics"},
                                       validate=parse_quote_summary, source="Yahoo quoteSummary")
        except DocumentUnavailable as exc:
            return exc

    observations: list[Observation] = []
    notes: list[str] = []
    stale = False
    for symbol, document in zip(SIDES, await asyncio.gather(*(one(s) for s in SIDES)), strict=True):
        if isinstance(document, DocumentUnavailable):
            notes.append(f"Yahoo {symbol}: {document}")
            continue
        stale = stale or document.stale
        if document.stale:
            notes.append(f"Yahoo {symbol}: {document.note}")
        day = document.fetched_at.date() if document.fetched_at else date.today()
        source = YAHOO + (" (stale cache)" if document.stale else "")
        for metric, value in parse_quote_summary(document.text).items():
            if value is not None:
                observations.append(Observation(symbol, metric, value, day, source, YAHOO_METHOD, YAHOO))
    return Figures(tuple(observations), tuple(notes), stale)


def member_observations(v: MemberValuation, origin: MemberOrigin) -> list[Observation]:
    """The bottom-up multiples as figures of the IWM and SPY sides (the S&P 500 side is the index's members)."""
    source = f"{MEMBERS} ({origin.label})"
    return [Observation(symbol, metric, value, v.as_of, source, MEMBERS_METHOD, MEMBERS)
            for symbol, side in ((SMALL, v.small), (LARGE, v.large)) for metric in METRICS
            if (value := side.multiples[metric].value) is not None]


async def member_figures(as_of: date | None, database: Database | None = None,
                         ) -> tuple[MemberValuation | None, MemberOrigin, str]:
    """(the bottom-up valuation known on `as_of` or None, where its data comes from, why None). A day after the
    last dump uses the last one. `database` (live providers only): its complete snapshot answers when there is one
    (services.members.member_data)."""
    data, origin = await member_data(database, as_of)
    days = data.dump_dates
    if as_of is not None and as_of < days[0]:
        return None, origin, (f"No bottom-up member figures for {as_of}: the member fundamentals are Yahoo dumps of "
                              f"{days[0]} to {days[-1]} only.")
    return member_valuation(data, None if as_of is None or as_of >= days[-1] else as_of), origin, ""


# --- analysis -------------------------------------------------------------------------------------------------

def latest(observations: list[Observation], symbol: str, metric: str, as_of: date | None) -> Observation | None:
    found = [o for o in observations if o.symbol == symbol and o.metric == metric
             and (as_of is None or o.as_of <= as_of)]
    if not found:
        return None
    return max(found, key=lambda o: (o.as_of, -SOURCE_PRIORITY[o.kind]))


def ratio_series(observations: list[Observation], metric: str, as_of: date | None) -> dict[str, pd.Series]:
    """Per source, the small/large ratio on the dates both sides have (exact date matches)."""
    out: dict[str, pd.Series] = {}
    for source in sorted({o.source for o in observations if o.metric == metric}):
        sides = {
            s: pd.Series({pd.Timestamp(o.as_of): o.value for o in observations
                          if o.source == source and o.metric == metric and o.symbol == s
                          and (as_of is None or o.as_of <= as_of)}, dtype="float64")
            for s in SIDES
        }
        joined = pd.concat(sides, axis=1, join="inner").dropna().sort_index()
        if len(joined):
            out[source] = joined[SMALL] / joined[LARGE]
    return out


def metric_row(observations: list[Observation], metric: str, as_of: date | None) -> MetricRow:
    small, large = latest(observations, SMALL, metric, as_of), latest(observations, LARGE, metric, as_of)
    ratio = ratio_as_of = ratio_source = None
    notes = [f"no {SIDES[s]} figure" for s, o in ((SMALL, small), (LARGE, large)) if o is None]
    # The most recent same-source pair within RATIO_MAX_DAYS of each other.
    pairs = []
    for source in {o.source for o in observations if o.metric == metric}:
        mine = [o for o in observations if o.source == source]
        a, b = latest(mine, SMALL, metric, as_of), latest(mine, LARGE, metric, as_of)
        if a and b and abs((a.as_of - b.as_of).days) <= RATIO_MAX_DAYS:
            pairs.append((min(a.as_of, b.as_of), a.value / b.value, source))
    if pairs:
        ratio_as_of, ratio, ratio_source = max(pairs, key=lambda p: p[0])
    elif small and large:
        notes.append("no ratio: the two figures come from different sources or dates")
    return MetricRow(metric, METRICS[metric], small, large, ratio, ratio_as_of, ratio_source, "; ".join(notes))


def ratio_history(observations: list[Observation], as_of: date | None,
                  metric: str = "forward_pe") -> RatioHistory | None:
    """The relative forward P/E history from the source with the most points, if it has HISTORY_MIN_POINTS."""
    candidates = ratio_series(observations, metric, as_of)
    if not candidates:
        return None
    source, series = max(candidates.items(), key=lambda item: len(item[1]))
    if len(series) < HISTORY_MIN_POINTS:
        return None
    current = float(series.iloc[-1])
    earlier = series.iloc[:-1]
    below = earlier[earlier < current]
    return RatioHistory(
        metric=metric, source=source, first=series.index[0].date(), last=series.index[-1].date(),
        points=len(series), current=current, percentile=float((series <= current).mean() * 100),
        low=float(series.min()), low_date=series.idxmin().date(),
        lowest_since=below.index[-1].date() if len(below) else None,
    )


def compute_valuation(observations: list[Observation], as_of: date | None = None,
                      notes: tuple[str, ...] = (), stale: bool = False,
                      members: MemberValuation | None = None) -> ValuationReport:
    if as_of is not None:
        first = min((o.as_of for o in observations), default=None)
        if first is None or as_of < first:
            raise InputError(f"as_of {as_of} is before the first valuation figure ({first})")
        if as_of > date.today():
            raise InputError(f"as_of {as_of} is in the future")
    rows = tuple(metric_row(observations, m, as_of) for m in METRICS)
    history = ratio_history(observations, as_of)
    history_note = "" if history else (
        f"No history of the relative forward P/E: needs ≥{HISTORY_MIN_POINTS} dates with both IWM and SPY "
        "forward P/E from one source (operator file). No public Russell 2000 valuation history exists (the member "
        "figures cover a few days of August 2026)."
    )
    used = {f"{o.symbol} · {o.source}": o.method for r in rows for o in (r.small, r.large) if o is not None}
    extra = []
    if all(r.small is None for r in rows):
        extra.append("No Russell 2000 valuation figures: there is no honest offline source; an operator can add "
                     "them to valuation.csv, and Yahoo figures appear when the provider is Yahoo.")
    return ValuationReport(as_of=as_of, rows=rows, history=history, history_note=history_note,
                           methods=tuple(sorted(used.items())), stale=stale, notes=tuple(extra) + notes,
                           members=members)


# --- chart ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ValuationChart:
    labels: tuple[str, ...]  # metric labels
    small: tuple[float | None, ...]
    large: tuple[float | None, ...]
    small_dates: tuple[date | None, ...]
    large_dates: tuple[date | None, ...]
    ratios: tuple[float | None, ...]  # small / large per metric
    history: pd.Series  # the ratio history, or the S&P trailing P/E history
    history_label: str
    history_is_ratio: bool  # the small/large ratio's history (else the S&P 500's P/E)
    title: str
    subtitle: str


def draw_valuation(chart: ValuationChart) -> Figure:
    fig, (bars, hist) = new_figure((1.1, 1.0), sharex=False, hspace=0.55)  # room for the metric names
    x = np.arange(len(chart.labels))
    width = 0.38
    top = max([v for v in chart.small + chart.large if v is not None] + [1.0])
    # A metric whose two figures share a month says it once, under its name; otherwise each bar says its own.
    shared = [a if b is None or a == b else b if a is None else None
              for a, b in zip(chart.small_dates, chart.large_dates, strict=True)]
    for offset, values, days, color, name in ((-width / 2, chart.small, chart.small_dates, YELLOW, SIDES[SMALL]),
                                              (width / 2, chart.large, chart.large_dates, BLUE, SIDES[LARGE])):
        known = np.array([v is not None for v in values], dtype=bool)  # no bar where there is no figure
        bars.bar((x + offset)[known], [v for v in values if v is not None], width=width * 0.95, color=color,
                 label=name)
        for i, (xi, v, day) in enumerate(zip(x + offset, values, days, strict=True)):
            text = "n/a" if v is None else f"{v:.1f}" + (f"\n{day:%Y-%m}" if day and shared[i] is None else "")
            bars.text(xi, (0 if v is None else v) + top * 0.03, text, ha="center", va="bottom",
                      color=MUTED if v is None else TEXT, fontsize=TEXT_PT, linespacing=1.0)
    bars.set_xticks(x, [f"{label}" + (f" · {day:%Y-%m}" if day else "") + "\nsmall/large "
                        + ("n/a" if r is None else f"{r:.2f}")
                        for label, r, day in zip(chart.labels, chart.ratios, shared, strict=True)])
    bars.set_xlim(-0.6, len(x) - 0.4)
    bars.set_ylim(0, top * 1.6)
    few_ticks(bars.yaxis, 3)
    bars.set_axisbelow(True)
    bars.grid(False, axis="x")
    history = chart.history
    # The S&P 500's own history in its colour; a small/large ratio in a colour of its own.
    colour = PURPLE if chart.history_is_ratio else CYAN
    if len(history):
        hist.plot(history.index, history.to_numpy(), color=colour, lw=1.1, label=chart.history_label)
        last = history.index[-1]
        hist.annotate(f"{history.iloc[-1]:.1f}\n{last:%Y-%m}", (last, history.iloc[-1]), xytext=(5, 0),
                      textcoords="offset points", va="center", color=TEXT, fontsize=TEXT_PT, linespacing=1.0)
        hist.set_xlim(history.index[0], last + (last - history.index[0]) * 0.09)  # room for the end label
        cap = float(history.median()) * 2.5
        if history.max() > cap:  # e.g. the 2009 P/E spike when earnings collapsed: keep the rest readable
            peak = history.idxmax()
            hist.set_ylim(float(history.min()) * 0.9, cap)
            hist.set_title(f"off scale: {history.max():.0f} in {peak:%Y-%m}", loc="right", color=MUTED,
                           fontsize=TEXT_PT, pad=3)
        few_ticks(hist.yaxis, 4)
        axis_label(hist, "ratio" if chart.history_is_ratio else "P/E")
    else:
        hist.text(0.5, 0.5, "no history", transform=hist.transAxes, ha="center", color=MUTED, fontsize=TEXT_PT)
    header(fig, chart.title, chart.subtitle)
    return fig


def render_valuation(chart: ValuationChart) -> bytes:
    return to_png(draw_valuation(chart))


def valuation_chart(report: ValuationReport, history: pd.Series, history_label: str) -> ValuationChart:
    subtitle = "as of " + (str(report.as_of) if report.as_of else "latest") + " · n/a = no figure from any source"
    return ValuationChart(
        labels=tuple(r.label for r in report.rows),
        small=tuple(r.small.value if r.small else None for r in report.rows),
        large=tuple(r.large.value if r.large else None for r in report.rows),
        small_dates=tuple(r.small.as_of if r.small else None for r in report.rows),
        large_dates=tuple(r.large.as_of if r.large else None for r in report.rows),
        ratios=tuple(r.ratio for r in report.rows),
        history=history,
        history_label=history_label,
        history_is_ratio=bool(report.history),
        title="Valuation: Russell 2000 vs S&P 500",
        subtitle=subtitle,
    )


# --- answer ---------------------------------------------------------------------------------------------------

def read_operator_file(path: Path | None) -> str:
    return path.read_text(encoding="utf-8") if path else bundled_text("valuation.csv")


async def valuation_answer(documents: Documents, renderer: Renderer, as_of: date | None = None, *,
                           yahoo_base_url: str | None = None, operator_file: Path | None = None,
                           database: Database | None = None) -> tuple[ValuationReport, bytes]:
    """The `/iwm valuation` report and its chart (PNG). `yahoo_base_url`: set it only when the provider is Yahoo;
    its figures are current, so they are used only when `as_of` is None. `database`: with a live provider, the
    members' live snapshot answers from it."""
    text = await asyncio.to_thread(read_operator_file, operator_file)
    operator = parse_operator_file(text)
    pe, shiller_figures = await asyncio.to_thread(shiller)
    members, origin, members_note = await member_figures(as_of, database)
    observations = [*operator.observations, *shiller_figures,
                     *(member_observations(members, origin) if members else ())]
    notes = list(operator.notes) + ([members_note] if members_note else [])
    if members and origin.stale:
        notes.append(f"Member figures are a stale copy: the {origin.label}; {origin.note}")
    stale = bool(members and origin.stale)
    if yahoo_base_url and documents.live and as_of is None:
        live = await yahoo_observations(documents, yahoo_base_url)
        observations += live.observations
        notes += live.notes
        stale = stale or live.stale
    elif yahoo_base_url and as_of is not None:
        notes.append("Yahoo figures are current only: not used for a past date.")
    report = replace(compute_valuation(observations, as_of, tuple(notes), stale, members), member_origin=origin)
    if report.history:
        series = ratio_series(observations, "forward_pe", as_of)[report.history.source]
        label = f"IWM/SPY forward P/E ({report.history.source})"
    else:
        series = pe.loc[: pd.Timestamp(as_of)] if as_of else pe
        series = series.loc["1990":]
        label = "S&P 500 trailing P/E (Shiller; no public Russell 2000 valuation history exists)"
    return report, await renderer.render(render_valuation, valuation_chart(report, series, label))

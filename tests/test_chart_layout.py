"""Every chart type, drawn from bundled data through its real answer function, read as Discord shows it (about
520 px wide): matplotlib's own layout boxes say that no text and no legend covers plotted data, that the legend
sits outside every panel, that no two texts meet, that every text is inside the image and at least 9 px high at
520 px, and that no two legend entries share a colour."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from itertools import combinations, pairwise
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import Collection, PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnchoredOffsetbox
from matplotlib.patches import Patch
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.transforms import Bbox, Transform

from services.alerts import alert_chart, replay
from services.breadth import breadth_answer, draw_breadth, render_breadth
from services.charts import date_ticks, draw_levels, render_levels
from services.community import CommunityLog, MessageCreated, community_answer
from services.community._report import draw_community, render_community
from services.compare import compare_answer, draw_compare, render_compare
from services.config import Zones
from services.documents import Documents
from services.levels import levels_answer
from services.market import MarketData, read_bundled_csv
from services.rates import rates_answer, render_rates
from services.rates._chart import draw_rates
from services.sectors import draw_sectors, render_sectors, sectors_answer
from services.sentiment import BEARISH, BULLISH, NEUTRAL, SentimentStore, sentiment_answer, validate_poll
from services.sentiment._report import draw_sentiment, render_sentiment
from services.storage import Database
from services.valuation import draw_valuation, render_valuation, valuation_answer

INLINE_PX = 520  # Discord's inline width for an embed image
MIN_TEXT_PX = 9.0  # the font size (em) of any text at that width
DRAW: dict[Callable[[Any], bytes], Callable[[Any], Figure]] = {
    render_levels: draw_levels, render_compare: draw_compare, render_sectors: draw_sectors,
    render_rates: draw_rates, render_breadth: draw_breadth, render_valuation: draw_valuation,
    render_sentiment: draw_sentiment, render_community: draw_community,
}
Z = Zones()


class Recorder:
    """Stands in for the Renderer: keeps the spec each answer would render, renders nothing."""

    def __init__(self) -> None:
        self.specs: list[tuple[Callable[[Any], bytes], Any]] = []

    async def render(self, fn: Callable[[Any], bytes], spec: Any) -> bytes:
        self.specs.append((fn, spec))
        return b""


async def spec_of(answer: Callable[[Recorder], Awaitable[object]]) -> Figure:
    recorder = Recorder()
    await answer(recorder)
    [(fn, spec)] = recorder.specs
    return DRAW[fn](spec)


# --- the charts, from bundled data ----------------------------------------------------------------------------

T0 = datetime(2026, 7, 6, 14, tzinfo=UTC)  # a Monday inside the bundled IWM data and the AAII survey


async def sentiment_figure(db: Database, weeks: int, polls: int) -> Figure:
    store = SentimentStore(db)
    for week in range(polls):
        at = T0 - timedelta(weeks=polls - week)
        await store.register_poll(1, 10, week + 1, validate_poll(), at)
        votes = iter(range(1000 * week, 1000 * (week + 1)))
        # 4..13 bullish, 3 neutral, 9..4 bearish: spreads on both sides of zero; week 5 has too few votes.
        counts = (1, 1, 1) if week == 5 else (4 + week % 10, 3, 9 - week % 6)
        final = {a: {next(votes) for _ in range(n)} for a, n in zip((BULLISH, NEUTRAL, BEARISH), counts, strict=True)}
        await store.reconcile(week + 1, final, at + timedelta(days=7))
    return await spec_of(lambda r: sentiment_answer(db, r, 1, weeks, now=T0))  # type: ignore[arg-type]


async def community_figure(db: Database, days: int, messages: bool) -> Figure:
    log = CommunityLog(db, interval=60)
    await log.open()
    await log.set_logging(1, 10, True, T0 - timedelta(days=days))
    if messages:
        words = ["$IWM breakout, buying calls", "bearish, $SPY puts", "$IWM rally", "meh", "crash incoming $IWM"]
        for day in range(days):
            for k in range(day % 7):
                log.put(MessageCreated(1, 10, day * 100 + k + 1, 500 + k % 3, T0 - timedelta(days=day, minutes=k),
                                       words[(day + k) % len(words)]))
        await log.flush()
    figure = await spec_of(lambda r: community_answer(db, MarketData([]), r, 1, days, now=T0))  # type: ignore[arg-type]
    await log.close()
    return figure


def alert_figure(kind: str) -> Figure:
    frame = read_bundled_csv("IWM")
    event = next(e for e in replay(frame, Z, date(2024, 1, 1), date(2026, 8, 21)) if e.kind == kind)
    return draw_levels(alert_chart(frame, event, Z))


async def breadth_price_ends_first() -> Figure:
    """IWM's closes stop ten sessions before the members' (a price source behind the member data)."""
    recorder = Recorder()
    await breadth_answer(MarketData([]), recorder, "3mo")  # type: ignore[arg-type]
    [(_, spec)] = recorder.specs
    price = spec.price.copy()
    price[-10:] = np.nan
    fig = draw_breadth(replace(spec, price=price))
    assert fig.axes[0].get_title(loc="left").startswith(f"IWM close to {spec.dates[-11]:%Y-%m-%d}, breadth to")
    return fig


def market_answer(fn: Callable[..., Awaitable[object]], *args: object, **kwargs: object,
                  ) -> Callable[[Recorder], Awaitable[object]]:
    return lambda r: fn(MarketData([]), r, *args, **kwargs)


CHARTS: dict[str, Callable[[Database], Awaitable[Figure]]] = {
    **{f"levels {p}": (lambda period: lambda db: spec_of(market_answer(levels_answer, Z, period)))(p)
       for p in ("3mo", "6mo", "1y", "2y", "5y", "max")},
    "levels 2021-11": lambda db: spec_of(market_answer(levels_answer, Z, "1y", date(2021, 11, 8))),
    "compare": lambda db: spec_of(market_answer(compare_answer)),
    "compare rut": lambda db: spec_of(market_answer(compare_answer, "iwm,rut,spy", date(2024, 1, 2))),
    "compare four": lambda db: spec_of(market_answer(compare_answer, "iwm,spy,qqq,rut", date(2022, 1, 3))),
    "sectors": lambda db: spec_of(lambda r: sectors_answer(MarketData([]), Documents(None), r, "3m")),  # type: ignore[arg-type]
    "rates": lambda db: spec_of(lambda r: rates_answer(MarketData([]), Documents(None), r)),  # type: ignore[arg-type]
    "breadth 1y": lambda db: spec_of(market_answer(breadth_answer, "1y")),
    "breadth 3mo": lambda db: spec_of(market_answer(breadth_answer, "3mo")),
    "breadth, price ends first": lambda db: breadth_price_ends_first(),
    "valuation": lambda db: spec_of(lambda r: valuation_answer(Documents(None), r)),  # type: ignore[arg-type]
    "valuation 2023": lambda db: spec_of(lambda r: valuation_answer(Documents(None), r, date(2023, 6, 30))),  # type: ignore[arg-type]
    "sentiment": lambda db: sentiment_figure(db, 52, 30),
    "sentiment empty": lambda db: sentiment_figure(db, 52, 0),
    "community": lambda db: community_figure(db, 30, True),
    "community 7 days": lambda db: community_figure(db, 7, True),
    "community empty": lambda db: community_figure(db, 30, False),
}
for _kind in ("breakout", "breakdown", "new_high", "entry_zone"):
    CHARTS[f"alert {_kind}"] = (lambda k: lambda db: _now(alert_figure(k)))(_kind)


async def _now(figure: Figure) -> Figure:
    return figure


# --- what the boxes say ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drawn:
    """One text as drawn: its box in display pixels, its string and where it came from."""

    box: Bbox
    text: str
    artist: Text


def tick_labels(fig: Figure) -> tuple[list[Text], set[int]]:
    """The tick labels actually drawn (ticks inside the view), and the ids of every tick label object."""
    drawn, every = [], set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            locs = axis.get_majorticklocs()
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks(len(locs)) + axis.get_minor_ticks():
                every.update({id(tick.label1), id(tick.label2)})
            for tick, loc in zip(axis.get_major_ticks(len(locs)), locs, strict=True):
                if ax.get_visible() and low - 1e-9 <= loc <= high + 1e-9:
                    drawn += [t for t in (tick.label1, tick.label2) if t.get_visible() and t.get_text()]
    return drawn, every


def visible(artist: Any) -> bool:
    while artist is not None:
        if not artist.get_visible():
            return False
        artist = getattr(artist, "axes", None) if artist is not getattr(artist, "axes", None) else None
    return True


def texts(fig: Figure) -> list[Drawn]:
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ticks, every_tick = tick_labels(fig)
    found = [t for t in fig.findobj(Text) if id(t) not in every_tick and t.get_text().strip() and visible(t)]
    return [Drawn(t.get_window_extent(renderer), t.get_text(), t) for t in [*found, *ticks]]


def data_paths(fig: Figure) -> Iterator[tuple[Bbox, Any, bool, float]]:
    """(panel box, a drawn data path in display pixels, filled, pad in px) for everything plotted in every panel
    but the references (levels, zones, zero lines) a label may sit on."""
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        panel = ax.get_window_extent()
        for artist in [*ax.lines, *ax.patches, *ax.collections]:
            if artist.get_gid() == "reference" or not artist.get_visible():
                continue
            if isinstance(artist, PathCollection):  # scatter: its points, padded by the marker's radius
                points = artist.get_offset_transform().transform(artist.get_offsets())
                pad = float(np.sqrt(artist.get_sizes().max())) * fig.dpi / 72 / 2
                for x, y in points:
                    yield panel, Bbox.from_bounds(x, y, 0, 0), False, pad
                continue
            if isinstance(artist, Line2D):
                paths, transform, filled = [artist.get_path()], artist.get_transform(), False
                pad = artist.get_markersize() * fig.dpi / 72 / 2 if artist.get_marker() not in (None, "None", "") else 0
            elif isinstance(artist, Patch):
                paths, transform, filled, pad = [artist.get_path()], artist.get_transform(), artist.get_fill(), 0
            elif isinstance(artist, Collection):
                paths, transform = artist.get_paths(), artist.get_transform()
                filled, pad = len(artist.get_facecolor()) > 0, 0
            else:
                continue
            for path in paths:
                yield panel, in_pixels(path, transform), filled, pad


def in_pixels(path: Path, transform: Transform) -> Path:
    """The path in display pixels, broken at NaNs (a line's gaps), without the STOP that cleaning appends."""
    if not np.isnan(path.vertices).any():
        return transform.transform_path(path)
    clean = path.cleaned(transform=transform, remove_nans=True)
    keep = clean.codes != Path.STOP
    return Path(clean.vertices[keep], clean.codes[keep])


def covers(box: Bbox, panel: Bbox, path: Any, filled: bool, pad: float) -> bool:
    """Whether `box` covers any visible part of the path (drawing clips data to its panel) by more than a pixel."""
    inside = Bbox.intersection(box, panel)
    if inside is None or inside.width <= 0 or inside.height <= 0:
        return False
    grown = Bbox.from_extents(inside.x0 - pad + 1, inside.y0 - pad + 1, inside.x1 + pad - 1, inside.y1 + pad - 1)
    if grown.width <= 0 or grown.height <= 0:  # within a pixel: touching, not covering
        return False
    if isinstance(path, Bbox):  # a scatter point
        return bool(grown.contains(path.x0, path.y0))
    if not len(path.vertices):
        return False
    return bool(path.intersects_bbox(grown, filled=filled))


def legend_colours(fig: Figure) -> list[str]:
    colours = []
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        for handle in legend.legend_handles:
            colour = handle.get_color() if isinstance(handle, Line2D) else handle.get_facecolor()  # type: ignore[union-attr]
            colours.append(to_hex(colour, keep_alpha=False))
    return colours


@pytest.fixture
async def db(tmp_path: Any) -> Any:
    async with Database(tmp_path / "charts.db") as database:
        yield database


@pytest.mark.parametrize("name", list(CHARTS))
async def test_chart_reads_at_discord_size(name: str, db: Database) -> None:
    fig = await CHARTS[name](db)
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    assert (width, height) == (1280, 720)
    scale = INLINE_PX / width
    page = Bbox.from_bounds(0, 0, width, height)
    drawn = texts(fig)
    assert drawn, "a chart says something"
    for t in drawn:
        assert page.x0 - 0.5 <= t.box.x0 and t.box.x1 <= page.x1 + 0.5 and page.y0 - 0.5 <= t.box.y0 \
            and t.box.y1 <= page.y1 + 0.5, f"{t.text!r} is cut off: {t.box}"
        em = t.artist.get_fontsize() * fig.dpi / 72 * scale
        assert em >= MIN_TEXT_PX, f"{t.text!r}: {em:.1f} px high at {INLINE_PX} px"
    for a, b in combinations(drawn, 2):
        overlap = Bbox.intersection(a.box, b.box)
        assert overlap is None or overlap.width < 1 or overlap.height < 1, f"{a.text!r} meets {b.text!r}"
    paths = list(data_paths(fig))
    legends = [leg for leg in fig.legends]
    boxes = [(t.box, repr(t.text)) for t in drawn]
    boxes += [(leg.get_window_extent(), "the legend") for leg in legends]
    boxes += [(a.get_window_extent(), "an edge label") for ax in fig.axes for a in ax.artists
              if isinstance(a, AnchoredOffsetbox)]
    for box, what in boxes:
        for panel, path, filled, pad in paths:
            assert not covers(box, panel, path, filled, pad), f"{what} covers plotted data"
    for leg in legends:
        assert isinstance(leg, Legend)
        for ax in fig.axes:
            overlap = Bbox.intersection(leg.get_window_extent(), ax.get_window_extent())
            assert overlap is None or overlap.height < 1, "the legend sits outside every panel"
    assert all(ax.get_legend() is None for ax in fig.axes), "one legend, above the panels"
    colours = legend_colours(fig)
    assert len(colours) == len(set(colours)), f"two legend entries share a colour: {colours}"
    if "empty" in name:
        assert not fig.axes and any("yet" in t.text for t in drawn)
    else:
        assert paths, "a chart with data draws it"


async def test_levels_out_of_range_are_labelled_not_listed() -> None:
    """The 3-month chart: the zones and support lie far below the candles, so they are labelled at the bottom
    edge with their values, not drawn and not in the legend."""
    fig = await spec_of(market_answer(levels_answer, Z, "3mo"))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    edge = [t.get_text() for ax in fig.axes for a in ax.artists for t in a.findobj(Text)]
    assert not any(k in " ".join(legend) for k in ("support", "entry", "resistance"))
    assert edge == ["▼ resistance 240.00–245.00", "▼ entry 205.00–220.00", "▼ support 200.00"]
    low, high = fig.axes[0].get_ylim()
    assert high > 305.09 > low > 245  # the closing high is drawn; the zones are not


async def test_long_spans_draw_weekly_and_monthly_candles() -> None:
    frame = read_bundled_csv("IWM").dropna(subset=["close"])
    recorder = Recorder()
    for period in ("1y", "5y", "max"):
        await levels_answer(MarketData([]), recorder, Z, period)  # type: ignore[arg-type]
    one_year, five_years, whole = (spec.frame for _, spec in recorder.specs)
    assert len(one_year) == len(frame.loc[frame.index[-1] - pd.DateOffset(years=1):])
    weeks = frame.loc[frame.index[-1] - pd.DateOffset(years=5):]
    assert len(five_years) == len({tuple(d.isocalendar())[:2] for d in weeks.index})
    assert len(whole) == len({(d.year, d.month) for d in frame.index})
    last_month = frame.loc[f"{frame.index[-1]:%Y-%m}"]
    assert whole.iloc[-1][["open", "high", "low", "close"]].tolist() == [
        last_month["open"].iloc[0], last_month["high"].max(), last_month["low"].min(), last_month["close"].iloc[-1]]
    assert whole.index[-1] == frame.index[-1]  # each candle is dated by its last session


DAY_MONTH = re.compile(r"^\d{1,2} [A-Z][a-z]{2}( \d{4})?$")
MONTH = re.compile(r"^[A-Z][a-z]{2}( \d{4})?$")


@pytest.mark.parametrize("start, end, freq", [
    ("2026-07-06", "2026-10-05", "B"), ("2025-12-01", "2026-02-27", "B"), ("2025-10-06", "2026-10-05", "B"),
    ("2021-10-01", "2026-10-05", "B"), ("2000-05-26", "2026-10-05", "B"), ("2025-09-08", "2026-09-07", "W-MON"),
    ("2026-11-03", "2026-12-02", "D"), ("2026-08-07", "2026-08-13", "D"),
])
def test_date_ticks_carry_the_year_and_step_evenly(start: str, end: str, freq: str) -> None:
    index = pd.date_range(start, end, freq=freq)
    ticks, labels = date_ticks(index)
    days = index[ticks]
    assert 2 <= len(labels) <= 7 and len(set(labels)) == len(labels)
    assert all(DAY_MONTH.match(x) or MONTH.match(x) or re.fullmatch(r"\d{4}", x) for x in labels)
    years = [d.year for d in days]
    for i, (label, year) in enumerate(zip(labels, years, strict=True)):
        shows_year = str(year) in label
        assert shows_year == (i == 0 or year != years[i - 1] or bool(re.fullmatch(r"\d{4}", label)))
    months = [d.year * 12 + d.month for d in days]
    steps = {b - a for a, b in pairwise(months)}
    if all(MONTH.match(x) or re.fullmatch(r"\d{4}", x) for x in labels):
        assert len(steps) == 1  # every month step the same
    else:
        gaps = {(b - a).days for a, b in pairwise(days)}
        assert max(gaps) - min(gaps) <= 4  # weekly ticks fall on the week's first session (a holiday moves it)

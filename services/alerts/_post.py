"""An alert as a Discord-agnostic post (title, fields, footer key, nonce) and its chart, prepared once per event."""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd

from services.alerts._detector import Event, _bars
from services.charts import LevelsChart, Renderer, render_levels
from services.config import Zones
from services.levels import price_chart
from services.market import MarketData
from services.storage import Database

Colour = Literal["up", "down", "neutral"]


@dataclass(frozen=True)
class AlertPost:
    """A Discord-agnostic alert message; the cog turns it into an embed (footer verbatim: recovery uses it)."""

    title: str
    description: str
    fields: tuple[tuple[str, str], ...]
    colour: Colour
    level: float | None
    footer: str
    key: str


TITLES: dict[str, tuple[str, Colour]] = {
    "breakout": ("IWM broke out above {level:.2f}", "up"),
    "breakdown": ("IWM broke below support {level:.2f}", "down"),
    "entry_zone": ("IWM is back in the entry zone", "neutral"),
    "new_high": ("IWM closed at a record {close:.2f}", "up"),
    "streak": ("IWM: {streak} up months in a row", "up"),
    "testing": ("IWM is testing {tag} at {level:.2f}", "neutral"),
    "breadth": ("Russell 2000 breadth crossed 50% ({tag})", "neutral"),
}


def footer_for(key: str) -> str:
    return f"smallcaps alert · {key}"


def footer_text(event: Event) -> str:
    return footer_for(event.key)


def post_nonce(channel_id: int, event_key: str) -> str:
    """A nonce for `channel.send(nonce=...)` (Discord: at most 25 characters), the same for every retry."""
    return hashlib.sha256(f"{channel_id} {event_key}".encode()).hexdigest()[:25]


def build_post(event: Event, zones: Zones) -> AlertPost:
    template, colour = TITLES[event.kind]
    title = template.format(**asdict(event))
    if event.kind == "breadth":
        colour = "up" if event.tag == "up" else "down"
    price_name = "Price" if event.kind == "testing" else "Close"
    priced = not math.isnan(event.close)  # a breadth day IWM has no bar for
    description = (f"On {event.day:%a %d %b %Y}, IWM {event.detail}"
                   + (f": {price_name.lower()} {event.close:.2f}." if priced else "."))
    fields: list[tuple[str, str]] = [(price_name, f"{event.close:.2f}")] if priced else []
    if event.prev_close:
        change = event.close / event.prev_close * 100 - 100
        fields.append(("Change", f"{event.close - event.prev_close:+.2f} ({change:+.2f}%)"))
    if event.level is not None:
        fields.append(("Previous high" if event.kind == "new_high" else "Level", f"{event.level:.2f}"))
    fields.append(("Levels", zones.describe()))
    return AlertPost(title, description, tuple(fields), colour, event.level, footer_text(event), event.key)


def alert_chart(frame: pd.DataFrame, event: Event, zones: Zones) -> LevelsChart:
    """The chart spec for an alert: the last 6 months to the event's day, its level marked (`PostCache`
    renders it once per event)."""
    bars = _bars(frame).loc[: pd.Timestamp(event.day)]
    return price_chart(bars, event.day, "6mo", zones, float(bars["close"].max()), build_post(event, zones).title,
                       f"daily, 6mo · {event.key}", highlight=event.level)


@dataclass(frozen=True)
class PreparedPost:
    post: AlertPost
    chart: bytes  # PNG


class PostCache:
    """Each event's post and chart, prepared once per (event, levels) and shared by every channel it goes to,
    in every guild with the same levels. Concurrent sends of one event wait for the same render; a failed
    render is dropped, so the next send tries again. Keeps the `size` latest."""

    def __init__(self, market: MarketData, renderer: Renderer, size: int = 32,
                 members_database: Database | None = None) -> None:
        self.market, self.renderer, self.size = market, renderer, size
        self.members_database = members_database  # the live member closes (None: the bundled ones)
        self._prepared: dict[tuple[Event, Zones], asyncio.Task[PreparedPost]] = {}

    async def get(self, event: Event, zones: Zones) -> PreparedPost:
        key = (event, zones)
        task = self._prepared.get(key)
        if task is None:
            task = self._prepared[key] = asyncio.create_task(self._prepare(event, zones))
            while len(self._prepared) > self.size:
                self._prepared.pop(next(iter(self._prepared)))
        try:
            return await asyncio.shield(task)  # a cancelled send does not cancel the others' render
        except Exception:
            if self._prepared.get(key) is task:
                del self._prepared[key]
            raise

    async def _prepare(self, event: Event, zones: Zones) -> PreparedPost:
        if event.kind == "breadth":  # the breadth chart to the event's day: the share and its 50% line
            from services.breadth import breadth_answer  # imports the member data code only when needed

            _, png = await breadth_answer(self.market, self.renderer, "6mo", event.day, self.members_database)
            return PreparedPost(build_post(event, zones), png)
        frame = (await self.market.bars("IWM")).frame
        chart = await self.renderer.render(render_levels, alert_chart(frame, event, zones))
        return PreparedPost(build_post(event, zones), chart)

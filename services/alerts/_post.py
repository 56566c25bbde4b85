"""An alert as a Discord-agnostic post (title, fields, footer key, nonce) and its chart."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd

from services.alerts._detector import Event, _bars
from services.charts import LevelsChart
from services.config import Zones
from services.levels import price_chart

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
    price_name = "Price" if event.kind == "testing" else "Close"
    description = f"On {event.day:%a %d %b %Y}, IWM {event.detail}: {price_name.lower()} {event.close:.2f}."
    fields: list[tuple[str, str]] = [(price_name, f"{event.close:.2f}")]
    if event.prev_close:
        change = event.close / event.prev_close * 100 - 100
        fields.append(("Change", f"{event.close - event.prev_close:+.2f} ({change:+.2f}%)"))
    if event.level is not None:
        fields.append(("Previous high" if event.kind == "new_high" else "Level", f"{event.level:.2f}"))
    fields.append(("Levels", zones.describe()))
    return AlertPost(title, description, tuple(fields), colour, event.level, footer_text(event), event.key)


def alert_chart(frame: pd.DataFrame, event: Event, zones: Zones) -> LevelsChart:
    """The chart spec for an alert: the last 6 months to the event's day, its level marked. Render it with
    `Renderer.render(render_levels, spec)`, once per event (not per channel)."""
    bars = _bars(frame).loc[: pd.Timestamp(event.day)]
    return price_chart(bars, event.day, "6mo", zones, float(bars["close"].max()), build_post(event, zones).title,
                       f"daily, 6mo · {event.key}", highlight=event.level)


"""Text helpers and limits the analysis embeds share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from cogs.common import signed
from services.errors import InputError

PERIOD_NAMES = {"1m": "1 month", "3m": "3 months", "ytd": "the year to date", "1y": "1 year"}
FIELD_LIMIT = 1024  # Discord: characters in a field value
NOTES_LIMIT = 700  # free text from operators and upstream errors: kept short so the embed stays under 6000
DESCRIPTION_LIMIT = 1200  # with <= 20 fields of <= ~300 characters, the embed stays under 6000
NOTE_LIMIT, SOURCE_LIMIT = 300, 80  # one note; one source name
MAX_FUNDS = 12  # sector funds shown one field each (11 today); more would risk the 6000-character total
MAX_CYCLES = 8  # easing cycles shown one field each (the averages cover all of them)
OLD_FIGURE_MONTHS = 3  # a valuation figure this many months older than the day asked about is flagged
SHORT_METRICS = {"forward_pe": "fwd P/E", "trailing_pe": "P/E", "trailing_pe_all": "P/E incl. losses",
                 "price_to_book": "P/B", "price_to_sales": "P/S"}
AS_OF_HELP = "Answer as of this day, YYYY-MM-DD (default: latest data)"


def lines_within(lines: Sequence[str], limit: int = FIELD_LIMIT, empty: str = "none") -> str:
    """Join lines, keeping as many whole lines as fit in `limit` characters and ending with "… and K more"
    when some were left out; a first line longer than the limit is itself cut with "…"."""
    text = "\n".join(lines)
    if len(text) <= limit:
        return text or empty
    for keep in range(len(lines) - 1, 0, -1):
        text = "\n".join(lines[:keep]) + f"\n… and {len(lines) - keep} more"
        if len(text) <= limit:
            return text
    more = f"\n… and {len(lines) - 1} more" if len(lines) > 1 else ""
    return clip(lines[0], limit - len(more)) + more


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with "…" when longer (for free text: operator notes, upstream errors)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pct(value: float | None) -> str:
    return "n/a" if value is None else signed(value, 1, "%")


def pp(value: float | None) -> str:
    return "n/a" if value is None else signed(value, 1, "pp")


def not_future(day: date | None, option: str = "as_of") -> date | None:
    """A day option that cannot be answered because it has not happened yet is refused before deferring."""
    if day is not None and day > date.today():
        raise InputError(f"{option} {day} is in the future")
    return day


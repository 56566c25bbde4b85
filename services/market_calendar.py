"""When the US stock market (NYSE, `XNYS`) trades: sessions, early closes, and when the alert watcher checks.

All datetimes in and out are timezone-aware; returned datetimes are UTC. A session is named by its date in
New York. The exchange_calendars calendar is built on first use, once per process (building it takes a moment,
so `warm_up()` lets start-up do it off the event loop).
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import pandas as pd

if TYPE_CHECKING:
    import exchange_calendars as xcals

NEW_YORK = ZoneInfo("America/New_York")
FIRST_DAY = "2000-01-03"  # the bundled IWM history starts in 2000
YEARS_AHEAD = 2

_lock = threading.Lock()
_calendar: xcals.ExchangeCalendar | None = None  # built on first use: importing exchange_calendars is slow


def calendar() -> xcals.ExchangeCalendar:
    """The XNYS calendar from 2000 to two years from now, built once (thread-safe)."""
    global _calendar
    if _calendar is None:
        with _lock:
            if _calendar is None:
                end = (pd.Timestamp.now(tz=UTC) + pd.DateOffset(years=YEARS_AHEAD)).strftime("%Y-%m-%d")
                import exchange_calendars as xcals

                with warnings.catch_warnings():  # exchange_calendars 4.13 trips a pandas 3 deprecation notice
                    warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
                    _calendar = xcals.get_calendar("XNYS", start=FIRST_DAY, end=end)
    return _calendar


async def warm_up() -> None:
    """Build the calendar in a worker thread so the first check does not block the event loop."""
    await asyncio.to_thread(calendar)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{at!r} has no timezone: pass an aware datetime (e.g. datetime.now(UTC))")
    return at.astimezone(UTC)


def _stamp(day: date) -> pd.Timestamp:
    return pd.Timestamp(day.isoformat())


def is_session(day: date) -> bool:
    """Whether the market trades on `day` (False on weekends and holidays)."""
    return bool(calendar().is_session(_stamp(day)))


def session_open(day: date) -> datetime:
    return calendar().session_open(_stamp(day)).to_pydatetime()


def session_close(day: date) -> datetime:
    """The session's closing time in UTC: 16:00 New York, 13:00 on early-close days."""
    return calendar().session_close(_stamp(day)).to_pydatetime()


def previous_session(day: date) -> date:
    """The last session strictly before `day`."""
    return calendar().date_to_session(_stamp(day - timedelta(days=1)), direction="previous").date()


def next_session(day: date) -> date:
    """The first session strictly after `day`."""
    return calendar().date_to_session(_stamp(day + timedelta(days=1)), direction="next").date()


def closes_month(day: date) -> bool:
    """Whether the session on `day` is the last one of its month (its close is the month-end close)."""
    return next_session(day).month != day.month


def is_open(at: datetime) -> bool:
    """Whether the market is trading at `at` (open <= at < close of that day's session)."""
    at = _utc(at)
    day = at.astimezone(NEW_YORK).date()
    return is_session(day) and session_open(day) <= at < session_close(day)


def last_completed_session(at: datetime) -> date:
    """The latest session whose close is at or before `at`: its daily bar is final."""
    at = _utc(at)
    day = at.astimezone(NEW_YORK).date()
    if is_session(day) and session_close(day) <= at:
        return day
    return previous_session(day)


@dataclass(frozen=True)
class Check:
    """When the watcher should look next: an intraday price check, or the once-a-day check after a close."""

    at: datetime  # UTC
    kind: Literal["intraday", "close"]
    session: date


def next_check(
    now: datetime,
    every: timedelta = timedelta(minutes=15),
    settle: timedelta = timedelta(minutes=10),
) -> Check:
    """The first check strictly after `now`.

    While the market is open: every `every` from the session's open (the last intraday check falls before the
    close). After each close: one `close` check `settle` later, when providers have the final daily bar.
    Otherwise: the next session's open. `settle` must end before midnight New York (minutes, not hours).
    """
    now = _utc(now)
    day = now.astimezone(NEW_YORK).date()
    if is_session(day):
        opens, closes = session_open(day), session_close(day)
        if now < opens:
            return Check(opens, "intraday", day)
        if now < closes:
            steps = (now - opens) // every + 1
            at = opens + steps * every
            if at < closes:
                return Check(at, "intraday", day)
        if now < closes + settle:
            return Check(closes + settle, "close", day)
    following = next_session(day)
    return Check(session_open(following), "intraday", following)


def check_times(
    start: datetime,
    end: datetime,
    every: timedelta = timedelta(minutes=15),
    settle: timedelta = timedelta(minutes=10),
) -> list[Check]:
    """Every check after `start` up to and including `end`."""
    checks: list[Check] = []
    check = next_check(start, every, settle)
    while check.at <= _utc(end):
        checks.append(check)
        check = next_check(check.at, every, settle)
    return checks

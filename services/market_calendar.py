"""When the US stock market (NYSE, `XNYS`) trades: sessions, early closes, the last completed session.

All datetimes in and out are timezone-aware; returned datetimes are UTC. A session is named by its date in
New York. The exchange_calendars calendar is built on first use, once per process (building it takes a moment,
so `warm_up()` lets start-up do it off the event loop).
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
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


def sessions_behind(as_of: date, last_session: date) -> int:
    """How many sessions after `as_of` have closed up to `last_session` (0 when the data has it)."""
    if as_of >= last_session:
        return 0
    return len(calendar().sessions_in_range(_stamp(as_of + timedelta(days=1)), _stamp(last_session)))


def missing_sessions(days: pd.DatetimeIndex, since: date) -> list[date]:
    """The NYSE sessions from `since` to the last of `days` that `days` lacks (a half-updated history)."""
    if len(days) == 0:
        return []
    sessions = calendar().sessions_in_range(_stamp(since), _stamp(days[-1].date()))
    return [s.date() for s in sessions.difference(pd.DatetimeIndex(days).normalize())]


def last_session_now() -> date:
    """The last session whose close has passed, plus an hour (the providers' usual delay): live data has it."""
    return last_completed_session(datetime.now(UTC) - timedelta(hours=1))


def session_on_or_before(day: date) -> date:
    """`day` when it is a session, else the last session before it."""
    return day if is_session(day) else previous_session(day)

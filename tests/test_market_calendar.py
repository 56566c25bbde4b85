"""XNYS sessions: holidays, early closes, weekends, daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services import market_calendar as mc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_calendar_is_built_once() -> None:
    assert mc.calendar() is mc.calendar()


@pytest.mark.parametrize("holiday", [date(2025, 7, 4), date(2025, 12, 25)])
def test_holidays_are_closed(holiday: date) -> None:
    assert not mc.is_session(holiday)
    assert not mc.is_open(datetime.combine(holiday, datetime.min.time(), mc.NEW_YORK).replace(hour=11))
    assert mc.last_completed_session(utc(holiday.year, holiday.month, holiday.day, 23)) == mc.previous_session(holiday)


def test_holiday_neighbours() -> None:
    assert mc.previous_session(date(2025, 7, 7)) == date(2025, 7, 3)
    assert mc.next_session(date(2025, 7, 3)) == date(2025, 7, 7)
    assert mc.next_session(date(2025, 12, 24)) == date(2025, 12, 26)


@pytest.mark.parametrize(("day", "close_utc"), [
    (date(2025, 11, 28), utc(2025, 11, 28, 18)),  # day after Thanksgiving: 13:00 EST
    (date(2025, 7, 3), utc(2025, 7, 3, 17)),  # eve of Independence Day: 13:00 EDT
    (date(2025, 12, 24), utc(2025, 12, 24, 18)),
])
def test_early_closes(day: date, close_utc: datetime) -> None:
    assert mc.session_close(day) == close_utc
    assert mc.is_open(close_utc - timedelta(minutes=1))
    assert not mc.is_open(close_utc)
    assert mc.last_completed_session(close_utc - timedelta(seconds=1)) == mc.previous_session(day)
    assert mc.last_completed_session(close_utc) == day


def test_regular_day() -> None:
    day = date(2025, 11, 26)
    assert mc.session_open(day) == utc(2025, 11, 26, 14, 30)
    assert mc.session_close(day) == utc(2025, 11, 26, 21)
    assert not mc.is_open(utc(2025, 11, 26, 14, 29))
    assert mc.is_open(utc(2025, 11, 26, 14, 30))
    assert mc.last_completed_session(utc(2025, 11, 26, 20, 59)) == date(2025, 11, 25)


def test_weekend() -> None:
    saturday = date(2025, 11, 29)
    assert not mc.is_session(saturday) and not mc.is_session(date(2025, 11, 30))
    assert not mc.is_open(utc(2025, 11, 29, 16))
    assert mc.last_completed_session(utc(2025, 11, 30, 12)) == date(2025, 11, 28)


def test_daylight_saving_boundaries() -> None:
    # US clocks moved forward on Sunday 2025-03-09 and back on Sunday 2025-11-02: 16:00 New York moves in UTC.
    assert mc.session_close(date(2025, 3, 7)) == utc(2025, 3, 7, 21)
    assert mc.session_close(date(2025, 3, 10)) == utc(2025, 3, 10, 20)
    assert mc.session_open(date(2025, 3, 10)) == utc(2025, 3, 10, 13, 30)
    assert mc.is_open(utc(2025, 3, 10, 13, 45)) and not mc.is_open(utc(2025, 3, 7, 13, 45))
    assert mc.session_close(date(2025, 10, 31)) == utc(2025, 10, 31, 20)
    assert mc.session_close(date(2025, 11, 3)) == utc(2025, 11, 3, 21)
    # 20:30 UTC is after the close in summer time and before it in winter time.
    assert mc.last_completed_session(utc(2025, 10, 31, 20, 30)) == date(2025, 10, 31)
    assert mc.last_completed_session(utc(2025, 11, 3, 20, 30)) == date(2025, 10, 31)


def test_month_closing_sessions() -> None:
    assert mc.closes_month(date(2025, 10, 31))
    assert mc.closes_month(date(2025, 11, 28))  # an early close, before a weekend
    assert not mc.closes_month(date(2025, 10, 30))
    assert mc.closes_month(date(2027, 5, 28))  # Monday 2027-05-31 is Memorial Day


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        mc.is_open(datetime(2025, 11, 26, 15))

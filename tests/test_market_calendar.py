"""XNYS sessions and the watcher's check times: holidays, early closes, weekends, daylight-saving changes."""

from __future__ import annotations

import itertools
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
    check = mc.next_check(utc(2025, 11, 29, 16))
    assert check == mc.Check(utc(2025, 12, 1, 14, 30), "intraday", date(2025, 12, 1))


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


def test_check_times_on_an_early_close() -> None:
    every, settle = timedelta(minutes=30), timedelta(minutes=10)
    checks = mc.check_times(utc(2025, 11, 28, 12), utc(2025, 12, 1, 15), every, settle)
    intraday = [c.at for c in checks if c.session == date(2025, 11, 28) and c.kind == "intraday"]
    assert intraday == [utc(2025, 11, 28, 14, 30) + every * k for k in range(7)]  # 14:30 .. 17:30, close 18:00
    closes = [c for c in checks if c.kind == "close"]
    assert closes == [mc.Check(utc(2025, 11, 28, 18, 10), "close", date(2025, 11, 28))]
    after = checks[checks.index(closes[0]) + 1:]
    assert [c.at for c in after] == [utc(2025, 12, 1, 14, 30), utc(2025, 12, 1, 15)]


def test_checks_skip_a_holiday_and_one_close_check_per_session() -> None:
    checks = mc.check_times(utc(2025, 7, 2, 12), utc(2025, 7, 8, 0), timedelta(minutes=15), timedelta(minutes=5))
    closes = [c for c in checks if c.kind == "close"]
    assert [c.session for c in closes] == [date(2025, 7, 2), date(2025, 7, 3), date(2025, 7, 7)]
    assert closes[1].at == utc(2025, 7, 3, 17, 5)
    assert all(mc.is_open(c.at) for c in checks if c.kind == "intraday")
    assert not any(c.session == date(2025, 7, 4) for c in checks)
    assert all(b.at > a.at for a, b in itertools.pairwise(checks))


def test_next_check_while_open_is_aligned_to_the_open() -> None:
    check = mc.next_check(utc(2025, 11, 26, 15, 7), timedelta(minutes=15))
    assert check == mc.Check(utc(2025, 11, 26, 15, 15), "intraday", date(2025, 11, 26))
    last = mc.next_check(utc(2025, 11, 26, 20, 50), timedelta(minutes=15), timedelta(minutes=10))
    assert last == mc.Check(utc(2025, 11, 26, 21, 10), "close", date(2025, 11, 26))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        mc.is_open(datetime(2025, 11, 26, 15))

"""Data age: live by default on Discord only, every answer says how far its data is behind the last close,
months that stop with the data are not "month to date", and as_of up to today answers as of the latest bar."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

import bot
from app import open_resources
from console import answer
from services import market_calendar
from services.config import Settings, Zones
from services.errors import InputError
from services.levels import compute_levels
from services.market import Bars, BundledProvider, DataAge, MarketData
from tests.support.provider_server import ProviderServer, Reply

DATA_END = date(2026, 10, 5)  # the bundled IWM/SPY history ends there


def weekdays_after(day: date, last: date, holidays: tuple[date, ...] = ()) -> int:
    """An independent count: weekdays after `day` up to `last`, less the NYSE holidays given."""
    days = pd.bdate_range(day + timedelta(days=1), last)
    return len(days) - sum(pd.Timestamp(h) in days for h in holidays)


def test_live_by_default_only_when_asked():
    assert Settings.from_env({}).provider == "bundled"
    assert Settings.from_env({}, live_by_default=True).provider == "yahoo"
    assert Settings.from_env({"MARKET_DATA_PROVIDER": "bundled"}, live_by_default=True).provider == "bundled"
    assert Settings.from_env({"MARKET_DATA_PROVIDER": "stooq", "STOOQ_API_KEY": "k"},
                             live_by_default=True).provider == "stooq"


@pytest.mark.parametrize(("env", "provider"), [({}, "yahoo"), ({"MARKET_DATA_PROVIDER": "bundled"}, "bundled")])
def test_bot_run_uses_live_data_unless_told(monkeypatch, tmp_path, env, provider):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("MARKET_DATA_PROVIDER", raising=False)
    for name, value in {"DISCORD_TOKEN": "t", **env}.items():
        monkeypatch.setenv(name, value)
    seen: list[Settings] = []

    async def fake_run(settings: Settings, *, sync: bool = False) -> None:
        seen.append(settings)

    monkeypatch.setattr(bot, "run_bot", fake_run)
    monkeypatch.setattr(bot, "setup_logging", lambda settings: None)
    assert bot.main(["run"]) == 0
    assert [s.provider for s in seen] == [provider]


def test_sessions_behind_matches_an_independent_count():
    thanksgiving = date(2026, 11, 26)
    assert market_calendar.sessions_behind(DATA_END, date(2026, 12, 1)) == weekdays_after(
        DATA_END, date(2026, 12, 1), (thanksgiving,)) == 40
    assert market_calendar.sessions_behind(DATA_END, DATA_END) == 0
    assert market_calendar.sessions_behind(date(2026, 10, 6), DATA_END) == 0
    age = DataAge(DATA_END, date(2026, 12, 1), 40)
    assert age.describe() == "data ends 2026-10-05, 40 sessions behind the last close (2026-12-01)"
    assert DataAge(DATA_END, DATA_END, 0).describe() is None


async def test_age_for_latest_and_as_of_answers():
    async def last() -> date:
        return date(2026, 12, 1)

    market = MarketData([], expected_session=last)
    assert (await market.age(DATA_END)).behind == 40
    # As of a Sunday after the data ends: behind the Friday before it (2026-10-09: four sessions after 10-05).
    assert await market.age(DATA_END, date(2026, 10, 11)) == DataAge(DATA_END, date(2026, 10, 9), 4)
    assert (await market.age(DATA_END, date(2026, 9, 1))).behind == 0


async def test_as_of_after_the_data_answers_a_future_day_is_refused():
    iwm = Bars("IWM", await BundledProvider().fetch("IWM"), "bundled")
    assert iwm.as_of == DATA_END
    iwm.check_as_of(date.today())
    assert iwm.until(date.today()).as_of == DATA_END
    with pytest.raises(InputError, match="is in the future"):
        iwm.check_as_of(date.today() + timedelta(days=1))


async def test_month_labels_follow_the_calendar():
    provider = BundledProvider()
    iwm, spy = [Bars(s, await provider.fetch(s), "bundled") for s in ("IWM", "SPY")]
    zones = Zones()
    # October 2026 ended long before the last close: the data stops early, the month is not "to date".
    stopped = compute_levels(iwm, spy, zones, None, date(2026, 12, 1))
    assert stopped.monthly_returns.index[-1] == pd.Period("2026-10", "M")
    assert stopped.month_data_ends and not stopped.month_in_progress
    # The day after the data ends is still October: the month is in progress.
    current = compute_levels(iwm, spy, zones, None, date(2026, 10, 6))
    assert current.month_in_progress and not current.month_data_ends
    # 2026-09-30, a Wednesday, is September's last weekday and no NYSE holiday: the month is complete.
    assert weekdays_after(date(2026, 9, 30), date(2026, 10, 1)) == 1
    complete = compute_levels(iwm, spy, zones, date(2026, 9, 30), date(2026, 12, 1))
    assert not complete.month_in_progress and not complete.month_data_ends


async def test_console_answers_say_how_old_bundled_data_is(resources):
    last = await resources.market.last_session()
    behind = market_calendar.sessions_behind(DATA_END, last)
    assert behind > 0  # the bundled data ends before today's last close
    note = f"data ends {DATA_END}, {behind} sessions behind the last close ({last})"
    for command in ("/iwm levels", "/iwm sectors", "/iwm rates", "/iwm compare",
                    f"/iwm levels as_of:{date.today()}"):
        status, messages = await answer(resources, command)
        assert status == 0, messages[0].content
        (embed,) = [e.to_dict() for e in messages[0].embeds]
        # Sectors' returns end on the funds' last common day (the bundled sector funds end earlier).
        expected = f"sessions behind the last close ({last})" if "sectors" in command else note
        assert expected in embed["footer"]["text"] and "bundled" in embed["footer"]["text"], command
        assert expected in embed["description"], command
    status, messages = await answer(resources, "/iwm levels")
    streak = next(f["value"] for f in messages[0].embeds[0].to_dict()["fields"] if f["name"] == "Monthly streak")
    assert "2026-10 (to 10-05, data ends)" in streak and "month to date" not in streak
    status, messages = await answer(resources, "/iwm status")
    value = next(f["value"] for f in messages[0].embeds[0].to_dict()["fields"] if f["name"] == "Data in memory")
    assert f"IWM: bundled, last bar {DATA_END} ({behind} sessions behind the last close)" in value
    status, messages = await answer(resources, f"/iwm levels as_of:{date.today() + timedelta(days=2)}")
    assert status == 2 and messages[0].ephemeral and "in the future" in messages[0].content


async def test_live_source_down_at_start_is_a_warning_and_stale_answers(tmp_path: Path, caplog):
    async with ProviderServer() as server:
        for symbol in ("IWM", "SPY"):
            server.script(f"/v8/finance/chart/{symbol}", Reply(status=503, body="unavailable"))
        settings = Settings.from_env({"YAHOO_BASE_URL": server.url, "DATABASE_PATH": str(tmp_path / "live.db"),
                                      "HTTP_TIMEOUT_SECONDS": "2"}, live_by_default=True)
        with caplog.at_level(logging.WARNING):
            async with open_resources(settings, render_processes=False) as res:
                status, messages = await answer(res, "/iwm levels")
    assert status == 0
    embed = messages[0].embeds[0].to_dict()
    assert "STALE" in embed["footer"]["text"] and "sessions behind the last close" in embed["footer"]["text"]
    assert any(r.levelno == logging.WARNING and "provider yahoo failed for IWM" in r.getMessage()
               for r in caplog.records)

"""Buttons under chart answers and autocomplete, through the local Discord: a press by the member the answer was
for edits it in place, anyone else gets an ephemeral copy, presses work after a restart, a stale button answers
sensibly; autocomplete answers with choices in time. Every body the bot sends is checked against Discord's OpenAPI
description by the local Discord; the clicked message is checked as the spec's MessageResponse here."""

from __future__ import annotations

import re
import time
from datetime import date
from typing import Any

import pytest

from cogs.autocomplete import MAX_CHOICES, list_completions, recent_days
from cogs.buttons import CHART_TEMPLATE, ChartState
from services.alerts import EVENT_KINDS
from services.market import read_bundled_csv
from tests.support.discord_helpers import answer_of, assert_acknowledged_in_time, invoke
from tests.support.discord_schema import discord_schema
from tests.support.local_discord import EPHEMERAL, InteractionHandle, LocalDiscord

DAY = "2025-09-26"


@pytest.mark.parametrize("state", [
    ChartState("levels", "6mo", None, date(2025, 9, 26)), ChartState("levels", "max", date(2024, 1, 5), None),
    ChartState("sectors", "ytd", date(2025, 9, 26), date(2025, 9, 26)),
])
def test_a_button_id_carries_its_whole_state(state: ChartState) -> None:
    match = re.fullmatch(CHART_TEMPLATE, state.custom_id)
    assert match and ChartState.parse(match) == state and len(state.custom_id) <= 100  # Discord's custom_id limit


def test_completions_follow_what_was_typed() -> None:
    days = [f"2025-0{m}-{d:02d}" for m in (8, 9) for d in range(1, 29)]
    assert recent_days(days, "2025-09-1") == [f"2025-09-{d}" for d in range(19, 9, -1)]
    assert recent_days(days, " ") == days[::-1][:MAX_CHOICES]
    assert list_completions(["IWM", "SPY", "QQQ"], "spy, i") == ["SPY,IWM"]
    assert list_completions(["IWM", "SPY", "QQQ"], "IWM,SPY,QQQ,") == []
    assert list_completions(["breakout", "breakdown"], "BREAKOUT,b") == ["breakout,breakdown"]


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's buttons by label."""
    return {c["label"]: c for row in message["components"] for c in row["components"]}


async def click(discord_: LocalDiscord, custom_id: str, message: dict[str, Any] | None = None,
                member: str = "alice") -> InteractionHandle:
    payload = discord_.component_click(custom_id, message, member=member)
    assert discord_schema().validate_object("MessageResponse", payload["message"]) == []
    return await discord_.dispatch_interaction(payload)


async def levels_message(discord_: LocalDiscord, options: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    answer = await invoke(discord_, "levels", options)
    assert answer.final.status == 200
    return discord_.find_message(answer.final.response["id"]), answer.files[0].data


async def edited(handle: InteractionHandle) -> Any:
    """The callback (type 6: the update is deferred) and the edit of the clicked message that follows it."""
    callback, patch = await handle.wait_for_responses(2, timeout=20)
    assert callback.json == {"type": 6} and callback.status in (200, 204), callback
    assert patch.method == "PATCH" and patch.path.endswith("/messages/@original") and patch.status == 200, patch
    return patch


async def test_a_period_button_edits_the_answer_in_place_for_its_author(running_bot: Any) -> None:
    _, discord_ = await running_bot()
    message, chart = await levels_message(discord_, {"as_of": DAY})
    shown = buttons(message)
    assert list(shown) == ["3mo", "6mo", "1y", "5y", "max", "Refresh"]
    assert shown["1y"]["disabled"] and shown["1y"]["style"] == 1  # the period shown: highlighted, not pressable
    assert not shown["6mo"].get("disabled") and shown["6mo"]["style"] == 2
    assert shown["6mo"]["custom_id"] == f"smallcaps:levels:6mo:{DAY}:{DAY}"
    assert shown["Refresh"]["custom_id"] == f"smallcaps:levels:1y:{DAY}:refresh"
    title = message["embeds"][0]["title"]
    stored = len(discord_.channel_messages(message["channel_id"]))

    handle = await click(discord_, shown["6mo"]["custom_id"])
    patch = await edited(handle)
    assert_acknowledged_in_time(handle)
    assert [f.filename for f in patch.files] == ["iwm-levels.png"] and patch.files[0].data != chart
    after = discord_.find_message(message["id"])
    assert after["embeds"][0]["title"] == title  # the embed is kept: a period changes only the chart
    assert after["embeds"][0]["image"]["url"] == "attachment://iwm-levels.png"
    assert buttons(after)["6mo"]["disabled"] and not buttons(after)["1y"].get("disabled")
    assert len(discord_.channel_messages(message["channel_id"])) == stored  # edited, nothing new posted
    discord_.assert_requests_valid()


async def test_a_press_by_another_member_gets_an_ephemeral_copy(running_bot: Any) -> None:
    _, discord_ = await running_bot()
    message, _ = await levels_message(discord_, {"as_of": DAY})
    before = message["components"]

    handle = await click(discord_, f"smallcaps:levels:5y:{DAY}:{DAY}", member="bob")
    answer = await answer_of(handle)
    assert answer.callback.json["type"] == 5 and answer.callback.json["data"]["flags"] & EPHEMERAL
    assert answer.ephemeral and answer.final.method == "POST"
    assert [f.filename for f in answer.files] == ["iwm-levels.png"]
    copy = discord_.find_message(answer.final.response["id"])
    assert copy["flags"] & EPHEMERAL and copy["interaction_metadata"]["user"]["username"] == "bob"
    assert buttons(copy)["5y"]["disabled"]
    assert discord_.find_message(message["id"])["components"] == before  # the author's answer is untouched

    # bob's own copy is his: his press on it edits it in place
    await edited(await click(discord_, f"smallcaps:levels:max:{DAY}:{DAY}", copy, member="bob"))
    assert buttons(discord_.find_message(copy["id"]))["max"]["disabled"]
    discord_.assert_requests_valid()


async def test_buttons_work_after_a_restart(running_bot: Any) -> None:
    _, discord_ = await running_bot()
    message, _ = await levels_message(discord_, {"period": "6mo", "as_of": DAY})
    await running_bot()  # a new process on the same database: no view was stored anywhere
    await edited(await click(discord_, f"smallcaps:levels:1y:{DAY}:{DAY}", message))
    assert buttons(discord_.find_message(message["id"]))["1y"]["disabled"]

    refresh = await click(discord_, f"smallcaps:levels:1y:{DAY}:refresh", message)
    patch = await edited(refresh)
    assert patch.json["embeds"][0]["title"] == message["embeds"][0]["title"]  # the whole answer again, same day


async def test_a_stale_button_answers_sensibly(running_bot: Any) -> None:
    """An as_of the data no longer covers: a short ephemeral error, the message unchanged. A live answer whose
    data moved on: the chart for the day shown, and a note that newer data exists."""
    _, discord_ = await running_bot()
    message, _ = await levels_message(discord_, {"as_of": DAY})
    stale = "smallcaps:levels:6mo:1990-01-02:1990-01-02"  # as if the history had since been cut after that day
    buttons(message)["6mo"]["custom_id"] = stale
    handle = await click(discord_, stale, message)
    responses = await handle.wait_for_responses(2, timeout=20)
    error = responses[-1]
    assert error.method == "POST" and error.json["flags"] & EPHEMERAL and error.json["content"].startswith("⚠️")
    assert "1990-01-02" in error.json["content"]
    assert buttons(discord_.find_message(message["id"]))["1y"]["disabled"]  # unchanged

    live, _ = await levels_message(discord_, {})
    latest = read_bundled_csv("IWM").index[-1].date()
    moved = f"smallcaps:levels:6mo:live:{DAY}"  # a live answer given when the data ended on DAY
    buttons(live)["6mo"]["custom_id"] = moved
    patch = await edited(await click(discord_, moved, live))
    assert patch.json["content"] == f"ℹ️ Newer data than this answer: {latest}. Press Refresh for it."
    assert buttons(discord_.find_message(live["id"]))["Refresh"]["custom_id"] == "smallcaps:levels:6mo:live:refresh"


async def test_breadth_has_its_windows_as_buttons(running_bot: Any) -> None:
    _, discord_ = await running_bot()
    answer = await invoke(discord_, "breadth", {"period": "3mo", "as_of": DAY})
    message = discord_.find_message(answer.final.response["id"])
    assert list(buttons(message)) == ["3mo", "6mo", "1y", "2y", "max", "Refresh"]
    await edited(await click(discord_, f"smallcaps:breadth:2y:{DAY}:{DAY}", message))
    assert buttons(discord_.find_message(message["id"]))["2y"]["disabled"]


async def test_a_sectors_period_button_answers_for_that_period_as_of_the_day_shown(running_bot: Any) -> None:
    """The sectors' period ranks the funds: the press rebuilds the embed for it, on the same day."""
    _, discord_ = await running_bot()
    answer = await invoke(discord_, "sectors", {"period": "1y", "as_of": DAY})
    message = discord_.find_message(answer.final.response["id"])
    assert list(buttons(message)) == ["1m", "3m", "ytd", "1y", "Refresh"]
    assert message["embeds"][0]["title"].startswith(f"IWM sectors · 1y to {DAY}")
    patch = await edited(await click(discord_, f"smallcaps:sectors:3m:{DAY}:{DAY}", message))
    assert patch.json["embeds"][0]["title"].startswith(f"IWM sectors · 3m to {DAY}")
    assert buttons(discord_.find_message(message["id"]))["3m"]["disabled"]


async def autocomplete(discord_: LocalDiscord, subcommand: str, option: str, typed: str) -> list[dict[str, Any]]:
    started = time.monotonic()
    payload = discord_.slash_command("iwm", subcommand, {option: typed}, focused=option)
    assert payload["type"] == 4
    (callback,) = await (await discord_.dispatch_interaction(payload)).wait_for_responses(1)
    assert time.monotonic() - started < 3.0
    assert callback.status in (200, 204), callback
    assert callback.json["type"] == 8 and not callback.problems
    return callback.json["data"]["choices"]


async def test_autocomplete_offers_sessions_symbols_and_events(running_bot: Any) -> None:
    _, discord_ = await running_bot()
    days = [d.isoformat() for d in read_bundled_csv("IWM").index.date]
    september = [d for d in reversed(days) if d.startswith("2025-09")]
    assert [c["value"] for c in await autocomplete(discord_, "levels", "as_of", "2025-09")] == september
    assert [c["value"] for c in await autocomplete(discord_, "levels", "as_of", "")] == days[::-1][:25]
    assert await autocomplete(discord_, "levels", "as_of", "1899") == []
    assert [c["value"] for c in await autocomplete(discord_, "compare", "since", "2021-11-0")] == [
        d for d in reversed(days) if d.startswith("2021-11-0")]
    assert [c["value"] for c in await autocomplete(discord_, "compare", "symbols", "iwm,s")] == ["IWM,SPY"]
    assert [c["value"] for c in await autocomplete(discord_, "compare", "symbols", "")] == ["IWM", "SPY", "QQQ",
                                                                                           "RUT"]
    assert [c["value"] for c in await autocomplete(discord_, "subscribe", "events", "breakout,")] == [
        f"breakout,{k}" for k in ("all", *EVENT_KINDS) if k != "breakout"]
    # breadth answers from the member closes, which end before IWM's bars do (README: to 2026-07-31)
    assert any(d.startswith("2026-08") for d in days)
    assert await autocomplete(discord_, "breadth", "as_of", "2026-08") == []
    assert [c["value"] for c in await autocomplete(discord_, "breadth", "as_of", "2026-07-3")] == [
        d for d in reversed(days) if d.startswith("2026-07-3")]
    discord_.assert_requests_valid()

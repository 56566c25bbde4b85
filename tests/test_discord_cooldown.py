"""The per-member render cooldown, through the local Discord: a member who asks for charts faster than
RENDER_COOLDOWN_SECONDS gets an ephemeral "try again in N s" and nothing is drawn; other members, commands that
draw nothing, and the same member after the wait are served. A chart button counts like a command."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from services.config import ConfigError, Settings
from tests.support.discord_helpers import PNG_MAGIC, invoke
from tests.support.local_discord import EPHEMERAL
from tests.test_discord_buttons import buttons, click, levels_message

COOLDOWN = 2.0


def refused_for(answer: Any) -> int:
    """The seconds a refusal asks to wait; it is the only response, ephemeral, with no defer before it."""
    responses = answer.handle.responses()
    assert len(responses) == 1 and responses[0].json["type"] == 4, responses
    assert responses[0].json["data"]["flags"] == EPHEMERAL
    match = re.fullmatch(r"⏳ Slow down: try again in (\d+)s\.", answer.content)
    assert match, answer.content
    return int(match[1])


async def test_a_member_drawing_charts_too_fast_is_told_to_wait(running_bot: Any) -> None:
    bot, discord_ = await running_bot(RENDER_COOLDOWN_SECONDS=str(COOLDOWN))
    renderer = bot.resources.renderer
    first = await invoke(discord_, "levels", member="alice")
    assert first.files and first.files[0].data.startswith(PNG_MAGIC)
    drawn = renderer.drawn

    too_soon = await invoke(discord_, "compare", member="alice")  # another chart command: the same cooldown
    assert 1 <= refused_for(too_soon) <= COOLDOWN
    assert renderer.drawn == drawn  # nothing drawn for it
    again = await invoke(discord_, "levels", member="alice")  # a chart the cache holds counts as well
    assert 1 <= refused_for(again) <= COOLDOWN

    other = await invoke(discord_, "levels", member="bob")  # another member is not held up
    assert other.files and other.files[0].data.startswith(PNG_MAGIC)
    status = await invoke(discord_, "status", member="alice")  # a command without a chart is not limited
    assert status.embeds and status.embeds[0]["title"] == "smallcaps status"

    await asyncio.sleep(COOLDOWN + 0.1)
    later = await invoke(discord_, "compare", member="alice")
    assert later.files and later.files[0].data.startswith(PNG_MAGIC)
    assert renderer.drawn == drawn + 1


async def test_a_chart_button_counts_like_a_command(running_bot: Any) -> None:
    bot, discord_ = await running_bot(RENDER_COOLDOWN_SECONDS=str(COOLDOWN))
    message, _ = await levels_message(discord_, {"period": "1y"})
    drawn = bot.resources.renderer.drawn
    handle = await click(discord_, buttons(message)["5y"]["custom_id"], message)
    (callback,) = await handle.wait_for_responses(1, timeout=20)
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] == EPHEMERAL, callback.json
    assert re.fullmatch(r"⏳ Slow down: try again in \d+s\.", callback.json["data"]["content"])
    assert bot.resources.renderer.drawn == drawn
    assert discord_.find_message(message["id"])["components"] == message["components"]  # the answer untouched


def test_render_cooldown_setting() -> None:
    assert Settings.from_env({}).render_cooldown_seconds == 3.0
    assert Settings.from_env({"RENDER_COOLDOWN_SECONDS": "0"}).render_cooldown_seconds == 0
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(ConfigError, match="RENDER_COOLDOWN_SECONDS"):
            Settings.from_env({"RENDER_COOLDOWN_SECONDS": bad})

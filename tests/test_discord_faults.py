"""Faults and odd input through the real bot and the local Discord: a followup that hits a 500, and message
content of any size and any Unicode (plus attachment-only and embed-only messages) in the community log."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.discord_helpers import log_on, messages, send


async def test_a_500_on_the_followup_is_retried_and_answered_once(running_bot: Any) -> None:
    _, discord_ = await running_bot()
    discord_.fail_next("POST", "/webhooks/{app}/{token}", 500)
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "levels", {"period": "3mo"}))
    responses = await handle.wait_for_responses(3, timeout=15)
    assert responses[0].json["type"] == 5
    failed, delivered = responses[1], responses[2]
    assert failed.status == 500 and delivered.status == 200
    assert delivered.files and delivered.files[0].filename == "iwm-levels.png"
    await asyncio.sleep(0.5)  # nothing more arrives: one answer, not two
    assert len(handle.responses()) == 3


CONTENT = st.one_of(
    st.text(max_size=4000),  # any Unicode: emoji, ZWJ sequences, combining marks, RTL, NUL
    st.text(alphabet=st.sampled_from("🚀📉🐂🐻👨‍👩‍👧$IWM éü中文\u200d\u0301 \n"), min_size=3000, max_size=4000),
    st.just(""),
)


async def test_any_message_content_is_logged_intact(running_bot: Any) -> None:
    bot, discord_ = await running_bot(MESSAGE_CONTENT_INTENT="1")
    assert (await log_on(discord_)).startswith("✅")
    sent: list[tuple[int, str]] = []

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(content=CONTENT)
    def collect(content: str) -> None:
        sent.append((0, content))

    collect()
    for i, (_, content) in enumerate(sent):
        message = await send(discord_, content, channel="general")
        sent[i] = (int(message["id"]), content)
    attachment_only = discord_.user_message("", channel="general", attachments=[{
        "id": str(discord_.snowflake()), "filename": "chart.png", "size": 10, "url": f"{discord_.base_url}/c.png",
        "proxy_url": f"{discord_.base_url}/c.png"}])
    embed_only = discord_.user_message("", channel="general", embeds=[{"type": "rich", "title": "shared link"}])
    for extra in (attachment_only, embed_only):
        await discord_.dispatch("MESSAGE_CREATE", extra)
        sent.append((int(extra["id"]), ""))
    for _ in range(200):  # the listener runs as the gateway delivers; wait for it
        stored = await messages(bot)
        if len(stored) >= len(sent):
            break
        await asyncio.sleep(0.05)
    for message_id, content in sent:
        assert message_id in stored, "a message was dropped"
        kept = content.replace("\x00", "")  # NUL is dropped on both engines (PostgreSQL's text cannot hold it)
        assert stored[message_id]["content"] == kept.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    assert len(stored) == len(sent)

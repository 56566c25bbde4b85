"""Helpers the Discord tests share: run a command and wait for its answer, check a refusal, read what the bot
stored, post a poll, send member messages, switch the community log on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import discord

from app import SmallcapsBot
from tests.support.local_discord import (
    EPHEMERAL,
    INTERACTION_ACK_SECONDS,
    MEMBER_PERMISSIONS,
    MODERATOR_PERMISSIONS,
    FilePart,
    InteractionHandle,
    LocalDiscord,
    RecordedRequest,
)

MODERATOR = MODERATOR_PERMISSIONS  # what the guild's Moderator role grants
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNTRACKED_TABLES = ("_meta", "bars_cache")  # bookkeeping and the market-data cache, not member-visible state


# --- answers ------------------------------------------------------------------------------------------------

@dataclass
class Answer:
    """The bot's answer to one interaction: the callback, and the request that carries the message (the callback
    itself, or the followup / original-response edit after a defer)."""

    handle: InteractionHandle
    callback: RecordedRequest
    final: RecordedRequest
    body: dict[str, Any]
    files: list[FilePart]

    @property
    def ephemeral(self) -> bool:
        return bool((self.body.get("flags") or 0) & EPHEMERAL)

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.body.get("embeds") or []

    @property
    def content(self) -> str:
        return self.body.get("content") or ""


async def answer_of(handle: InteractionHandle, timeout: float = 20.0) -> Answer:
    """Wait for the callback, and after a defer (type 5) for the message that follows it (a followup or an edit
    of the original response; deleting the placeholder first is allowed)."""
    callback = (await handle.wait_for_responses(1, timeout))[0]
    assert callback.path.endswith("/callback"), f"first response is not the callback: {callback}"
    if callback.status == 200 and (callback.json or {}).get("type") == 5:

        def carrying() -> RecordedRequest | None:
            return next((r for r in handle.responses()[1:] if r.method in ("POST", "PATCH")), None)

        final = await handle.discord.wait_until(carrying, timeout, "the answer after the defer")
        return Answer(handle, callback, final, final.json or {}, final.files)
    return Answer(handle, callback, callback, (callback.json or {}).get("data") or {}, callback.files)


async def invoke(discord_: LocalDiscord, subcommand: str, options: dict[str, Any] | None = None, *,
                 manage: bool = False, root: str = "iwm", **kwargs: Any) -> Answer:
    """Dispatch `/root subcommand option:value ...` (as a moderator, holding the guild's Moderator role: Manage
    Channels, Messages and Server in every channel, if `manage`; otherwise as a plain member) and wait for the
    answer."""
    if manage:
        kwargs["roles"] = (*kwargs.get("roles", ()), "Moderator")
    payload = discord_.slash_command(root, subcommand, options, **kwargs)
    return await answer_of(await discord_.dispatch_interaction(payload))


def assert_acknowledged_in_time(handle: InteractionHandle) -> None:
    """Discord forgets an interaction whose first callback comes more than 3 s after it was dispatched."""
    assert handle.ack_seconds is not None, "no callback at all"
    assert handle.ack_seconds < INTERACTION_ACK_SECONDS, f"first callback after {handle.ack_seconds:.2f}s"


def assert_refused(answer: Answer) -> None:
    """A short ephemeral error: in time, no embed, no file."""
    assert_acknowledged_in_time(answer.handle)
    assert answer.ephemeral and answer.content[:1] in ("⚠", "⛔"), answer.body
    assert not answer.embeds and not answer.files


async def stored_rows(bot: SmallcapsBot) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the bot keeps for members (subscriptions, levels, outbox, polls, logs...), table by table."""

    def dump(db: Any) -> dict[str, list[tuple[Any, ...]]]:
        return {t: sorted(tuple(r.values()) for r in db.query(f"select * from [{t}]"))
                for t in db.table_names() if t not in UNTRACKED_TABLES}

    return await bot.resources.database.run(dump)


def levels(*values: float) -> dict[str, float]:
    names = ("support", "entry_low", "entry_high", "resistance_low", "resistance_high")
    return dict(zip(names, values, strict=True))


# --- commands by name ---------------------------------------------------------------------------------------

# Manage Messages alone (MODERATOR above also has Manage Channels and Manage Server)
POLL_MODERATOR = discord.Permissions(MEMBER_PERMISSIONS | discord.Permissions(manage_messages=True).value)


async def command(discord_: LocalDiscord, name: str, options: dict[str, Any] | None = None, *, responses: int = 1,
                  **kwargs: Any) -> InteractionHandle:
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", name, options, **kwargs))
    await handle.wait_for_responses(responses, timeout=10)
    return handle


async def post_poll(discord_: LocalDiscord, **options: Any) -> dict[str, Any]:
    """`/iwm poll` by a moderator; the stored poll message."""
    handle = await command(discord_, "poll", options, permissions=POLL_MODERATOR, guild=options.pop("guild", None))
    callback = handle.callback
    assert callback is not None and callback.status == 200, callback
    return discord_.find_message(callback.response["interaction"]["response_message_id"])


def ephemeral_error(handle: InteractionHandle) -> str:
    (callback,) = handle.responses()
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL, callback.json
    return callback.json["data"]["content"]


# --- the community log --------------------------------------------------------------------------------------

MANAGER = discord.Permissions(MEMBER_PERMISSIONS | discord.Permissions(manage_guild=True).value)


async def query(bot: Any, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    """Rows from the bot's database once everything queued so far is written."""
    await bot.resources.community.flush()
    return await bot.resources.database.run(lambda d: list(d.query(sql, params or [])))


async def messages(bot: Any) -> dict[int, dict[str, Any]]:
    return {r["message_id"]: r for r in await query(bot, "SELECT * FROM community_messages")}


async def send(discord_: LocalDiscord, content: str, **kwargs: Any) -> dict[str, Any]:
    message = discord_.user_message(content, **kwargs)
    await discord_.dispatch("MESSAGE_CREATE", message)
    return message


async def log_on(discord_: LocalDiscord, **kwargs: Any) -> str:
    return ephemeral_error(await command(discord_, "log", {"state": "on"}, permissions=MANAGER, **kwargs))


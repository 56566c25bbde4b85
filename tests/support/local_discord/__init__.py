"""A local stand-in for Discord (REST API + gateway) to run the real bot against, on 127.0.0.1.

One aiohttp application serves `/api/v10/...` (REST), `/gateway` (the websocket) and `/attachments/...` (the CDN
for files the bot uploaded). Every REST request is recorded and checked against Discord's OpenAPI description
(tests/support/discord_schema.py); an invalid body is answered 400 "Invalid Form Body" as Discord would. Tests
script the gateway side: they build real-shaped payloads (`slash_command`, `component_click`, `user_message`,
`reaction_add`, `poll_vote`, ...) and `dispatch` them to the connection owning the guild, then wait for what the bot
sends back.

    async with LocalDiscord() as discord_:        # usually the `discord_` fixture from conftest.py
        async with run_bot(MyBot(), discord_):
            handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "levels"))
            callback, followup = await handle.wait_for_responses(2)

discord.py must be pointed here first: `with pointed_at(discord_):` (the fixture does it). `smallcaps_bot` runs the
real bot, built as bot.py builds it, against it.

`LocalDiscord` is composed of its parts: `state` (ids, guilds, channels, messages, FakeGuild), `rest` (recording,
validation, faults, routing) and `routes` (the handlers), `gateway` (connections, sessions, dispatch) and `events`
(the payload builders); `payloads` holds Discord's constants and object shapes, `harness` runs a bot against it.
"""

from tests.support.local_discord.gateway import GatewayConnection, GatewaySession, InteractionHandle
from tests.support.local_discord.harness import pointed_at, run_bot, smallcaps_bot
from tests.support.local_discord.payloads import (
    ATTACHMENT_SIZE_LIMIT,
    BOT_PERMISSIONS,
    EPHEMERAL,
    INTERACTION_ACK_SECONDS,
    LOADING,
    MEMBER_PERMISSIONS,
    MODERATOR_PERMISSIONS,
    DiscordError,
    member_payload,
    now_iso,
    png_size,
    user_payload,
)
from tests.support.local_discord.rest import FilePart, RecordedRequest
from tests.support.local_discord.server import LocalDiscord
from tests.support.local_discord.state import FakeGuild

__all__ = [
    "ATTACHMENT_SIZE_LIMIT",
    "BOT_PERMISSIONS",
    "EPHEMERAL",
    "INTERACTION_ACK_SECONDS",
    "LOADING",
    "MEMBER_PERMISSIONS",
    "MODERATOR_PERMISSIONS",
    "DiscordError",
    "FakeGuild",
    "FilePart",
    "GatewayConnection",
    "GatewaySession",
    "InteractionHandle",
    "LocalDiscord",
    "RecordedRequest",
    "member_payload",
    "now_iso",
    "png_size",
    "pointed_at",
    "run_bot",
    "smallcaps_bot",
    "user_payload",
]

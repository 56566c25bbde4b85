"""Discord's shapes the local Discord speaks: API constants, message flags, intents, permissions, user and member
objects, and its JSON error."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024  # what Discord reports for a guild without boosts
INTERACTION_ACK_SECONDS = 3.0  # an interaction not answered within this is unknown to Discord
EPHEMERAL, LOADING = 1 << 6, 1 << 7  # message flags

# Gateway intents the events below need (guild, direct message); without them the event is not sent.
GUILD_MEMBERS_INTENT, MESSAGE_CONTENT_INTENT = 1 << 1, 1 << 15
EVENT_INTENTS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(
        ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK"), (1 << 9, 1 << 12)
    ),
    **dict.fromkeys(
        ("MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE", "MESSAGE_REACTION_REMOVE_ALL"), (1 << 10, 1 << 13)
    ),
    **dict.fromkeys(("MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE"), (1 << 24, 1 << 25)),
}

MEMBER_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, read_message_history=True, embed_links=True, attach_files=True,
    add_reactions=True, use_external_emojis=True, use_application_commands=True, send_polls=True,
    send_messages_in_threads=True, create_public_threads=True, change_nickname=True, connect=True, speak=True,
).value
# What the README's invite grants the bot (Mention Everyone: to ping a role in alerts).
BOT_PERMISSIONS = MEMBER_PERMISSIONS | discord.Permissions(manage_messages=True, manage_threads=True,
                                                           mention_everyone=True).value
# The guild's "Moderator" role (held by nobody by default; `slash_command(roles=["Moderator"])`).
MODERATOR_PERMISSIONS = MEMBER_PERMISSIONS | discord.Permissions(manage_channels=True, manage_messages=True,
                                                                 manage_guild=True, mention_everyone=True).value
ALL_PERMISSIONS = discord.Permissions.all().value
ADMINISTRATOR = discord.Permissions(administrator=True).value
VIEW_CHANNEL = discord.Permissions(view_channel=True).value
ROLE_OVERWRITE, MEMBER_OVERWRITE = 0, 1  # a permission overwrite's `type`


def now_iso(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + offset).isoformat(timespec="microseconds")


def user_payload(user_id: int, username: str, *, bot: bool = False) -> dict[str, Any]:
    """A user object as Discord sends it today (pomelo usernames: discriminator "0")."""
    return {
        "id": str(user_id), "username": username, "discriminator": "0",
        "global_name": None if bot else username.title(),
        "avatar": None, "avatar_decoration_data": None, "banner": None, "accent_color": None, "bot": bot,
        "system": False, "public_flags": 0, "flags": 0, "collectibles": None, "display_name_styles": None,
        "primary_guild": None,
    }


def member_payload(
    user: dict[str, Any], roles: Iterable[int | str] = (), joined_at: str | None = None
) -> dict[str, Any]:
    return {
        "user": user, "nick": None, "avatar": None, "banner": None, "roles": [str(r) for r in roles],
        "joined_at": joined_at or now_iso(timedelta(days=-30)), "premium_since": None, "deaf": False, "mute": False,
        "flags": 0, "pending": False, "communication_disabled_until": None, "unusual_dm_activity_until": None,
    }


def png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


class DiscordError(Exception):
    """Answered as Discord's JSON error: `{"message": ..., "code": ...}`."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {message} ({code})")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


"""The local Discord's state: ids, guilds (FakeGuild) and their channels and members, DM channels, stored messages
and their attachments, synced commands, poll voters, dispatched interactions; and waiting for it to change.

`DiscordState` holds every attribute of `LocalDiscord`; the REST, gateway and event-builder parts build on it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord
from aiohttp.test_utils import TestServer

from tests.support.local_discord.payloads import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    API_PREFIX,
    BOT_PERMISSIONS,
    DISCORD_EPOCH_MS,
    LOADING,
    MEMBER_OVERWRITE,
    MEMBER_PERMISSIONS,
    MODERATOR_PERMISSIONS,
    ROLE_OVERWRITE,
    VIEW_CHANNEL,
    DiscordError,
    member_payload,
    now_iso,
    png_size,
    user_payload,
)

if TYPE_CHECKING:
    from tests.support.local_discord.gateway import GatewayConnection, GatewaySession
    from tests.support.local_discord.rest import Fault, FilePart, Hold, RecordedRequest


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: list[dict[str, Any]]
    channels: list[dict[str, Any]]
    members: list[dict[str, Any]]

    def channel(self, which: str | int | None = None) -> dict[str, Any]:
        """By name or id; the first text channel by default."""
        for channel in self.channels:
            if (which is None and channel["type"] == 0) or str(which) in (channel["name"], channel["id"]):
                return channel
        raise LookupError(f"no channel {which!r} in guild {self.name!r}")

    def member(self, which: str | int | None = None) -> dict[str, Any]:
        """By username or id; the first human member by default."""
        for member in self.members:
            user = member["user"]
            if (which is None and not user["bot"]) or which in (user["username"], user["id"], int(user["id"])):
                return member
        raise LookupError(f"no member {which!r} in guild {self.name!r}")

    def role(self, which: str | int) -> dict[str, Any]:
        for role in self.roles:
            if which in (role["name"], role["id"], int(role["id"])):
                return role
        raise LookupError(f"no role {which!r} in guild {self.name!r}")

    def add_role(self, name: str, permissions: int = 0, *, mentionable: bool = False) -> dict[str, Any]:
        """A new role, above the others (set it up before the bot connects: it arrives with GUILD_CREATE)."""
        role = {**self.roles[0], "id": str(self.id + len(self.roles)), "name": name, "permissions": str(permissions),
                "position": len(self.roles), "mentionable": mentionable}
        self.roles.append(role)
        return role

    def overwrite(self, channel: str | int, target: dict[str, Any], *, allow: int = 0, deny: int = 0) -> dict[str, Any]:
        """Set a permission overwrite on a channel for a role or a member (as returned by `role` / `member`), in
        Discord's shape (ChannelPermissionOverwriteResponse); returns the channel."""
        the_channel = self.channel(channel)
        is_member = "user" in target
        oid = target["user"]["id"] if is_member else target["id"]
        overwrites = [o for o in the_channel["permission_overwrites"] if o["id"] != oid]
        overwrites.append({"id": oid, "type": MEMBER_OVERWRITE if is_member else ROLE_OVERWRITE,
                           "allow": str(allow), "deny": str(deny)})
        the_channel["permission_overwrites"] = overwrites
        return the_channel

    def permissions(self, member: dict[str, Any], channel: str | int | None = None) -> int:
        """A member's permissions in a channel as Discord computes them (the "Permission Overwrites" algorithm of
        Discord's documentation): owner and Administrator have all; else @everyone's and the member's roles, then
        the channel's @everyone, role and member overwrites, in that order. Without View Channel a member has none
        of the channel permissions (discord.py's `permissions_for` does the same)."""
        user_id = member["user"]["id"]
        if user_id == str(self.owner_id):
            return ALL_PERMISSIONS
        roles = {r["id"]: int(r["permissions"]) for r in self.roles}
        value = roles[str(self.id)]
        for role_id in member["roles"]:
            value |= roles.get(role_id, 0)
        if value & ADMINISTRATOR:
            return ALL_PERMISSIONS
        listed = self.channel(channel)["permission_overwrites"]
        overwrites = {o["id"]: (int(o["allow"]), int(o["deny"])) for o in listed}
        allow, deny = overwrites.get(str(self.id), (0, 0))
        value = (value & ~deny) | allow
        allow = deny = 0
        for role_id in member["roles"]:
            role_allow, role_deny = overwrites.get(role_id, (0, 0))
            allow, deny = allow | role_allow, deny | role_deny
        value = (value & ~deny) | allow
        allow, deny = overwrites.get(user_id, (0, 0))
        value = (value & ~deny) | allow
        if not value & VIEW_CHANNEL:
            value &= ~discord.Permissions.all_channel().value
        return value

    def payload(self, *, with_members: bool = True, bot_user_id: int | None = None) -> dict[str, Any]:
        """The GUILD_CREATE payload. Without the GUILD_MEMBERS intent Discord sends only the bot's own member."""
        members = self.members if with_members else [m for m in self.members if m["user"]["id"] == str(bot_user_id)]
        return {
            "id": str(self.id), "name": self.name, "icon": None, "splash": None, "discovery_splash": None,
            "banner": None, "description": None, "owner_id": str(self.owner_id), "region": "deprecated",
            "afk_channel_id": None, "afk_timeout": 300, "widget_enabled": False, "verification_level": 1,
            "default_message_notifications": 1, "explicit_content_filter": 2, "features": [], "mfa_level": 0,
            "application_id": None, "system_channel_id": self.channels[0]["id"], "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "max_members": 500000, "max_video_channel_users": 25, "max_stage_video_channel_users": 50,
            "vanity_url_code": None, "premium_tier": 0, "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False, "preferred_locale": "en-US", "nsfw": False, "nsfw_level": 0,
            "hub_type": None, "incidents_data": None, "latest_onboarding_question_id": None, "home_header": None,
            "roles": self.roles, "emojis": [], "stickers": [], "soundboard_sounds": [],
            "joined_at": now_iso(timedelta(days=-7)), "large": False, "unavailable": False, "lazy": True,
            "member_count": len(self.members), "members": members, "channels": self.channels, "threads": [],
            "presences": [], "voice_states": [], "stage_instances": [], "guild_scheduled_events": [],
            "embedded_activities": [], "activity_instances": [], "application_command_counts": {},
            "version": int(time.time() * 1000),
        }


@dataclass
class InteractionState:
    """What the local Discord remembers of a dispatched interaction: answered yet, its original response and
    followups."""

    payload: dict[str, Any]
    dispatched_at: float
    responded: bool = False
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def channel_id(self) -> int:
        return int(self.payload["channel_id"])


class DiscordState:
    """Ids, guilds, channels, messages, commands, interactions, sessions and recorded requests; lookups and
    waiting. Every attribute of LocalDiscord is set here."""

    server: TestServer  # serves REST, gateway and CDN; made by LocalDiscord

    def __init__(self, *, shard_count: int, token: str) -> None:
        self.shard_count = shard_count  # what GET /gateway/bot recommends
        self.token = token
        self._ms = int(time.time() * 1000) - DISCORD_EPOCH_MS - 1000
        self.application_id = self.snowflake()
        self.bot_user = user_payload(self.application_id, "smallcaps-test-bot", bot=True)
        self.guilds: list[FakeGuild] = []
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.holds: list[Hold] = []
        self.messages: dict[int, dict[int, dict[str, Any]]] = {}  # channel id -> message id -> message
        self.dm_channels: dict[str, dict[str, Any]] = {}  # channel id -> a DM channel (see `in_a_dm`)
        self.attachment_data: dict[int, bytes] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> synced commands
        self.poll_voters: dict[tuple[int, int], list[dict[str, Any]]] = {}  # (message id, answer id) -> users
        self.sessions: list[GatewaySession] = []
        self.heartbeat_interval_ms = 41250  # sent in HELLO; a test may shorten it before the bot connects
        self.connections: list[GatewayConnection] = []
        self._interactions: dict[str, InteractionState] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self._changed = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/gateway"

    # -- state set-up -------------------------------------------------------------------------------------------
    def snowflake(self, shard: tuple[int, int] | None = None) -> int:
        """A fresh id; with `shard=(id, count)`, a guild id that this shard owns."""
        self._ms += 1
        while shard is not None and self._ms % shard[1] != shard[0]:
            self._ms += 1
        return (self._ms << 22) | (1 << 17) | (self._ms & 0xFFF)

    def add_guild(
        self,
        name: str,
        *,
        guild_id: int | None = None,
        shard: tuple[int, int] | None = None,
        channels: Iterable[str] = ("general", "iwm-alerts"),
        members: Iterable[str] = ("alice", "bob"),
    ) -> FakeGuild:
        gid = guild_id or self.snowflake(shard)
        everyone = {
            "id": str(gid), "name": "@everyone", "permissions": str(MEMBER_PERMISSIONS), "position": 0, "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None}, "hoist": False,
            "managed": False, "mentionable": False, "icon": None, "unicode_emoji": None, "flags": 0,
            "description": None,
        }
        member_role = {**everyone, "id": str(self.snowflake()), "name": "Member", "position": 1}
        moderator_role = {**everyone, "id": str(self.snowflake()), "name": "Moderator", "position": 2,
                          "permissions": str(MODERATOR_PERMISSIONS)}
        bot_role = {
            **everyone, "id": str(self.snowflake()), "name": "smallcaps", "position": 3, "managed": True,
            "permissions": str(BOT_PERMISSIONS), "tags": {"bot_id": str(self.application_id)},
        }
        text = [
            {
                "id": str(self.snowflake()), "type": 0, "guild_id": str(gid), "name": channel, "position": i,
                "permission_overwrites": [], "parent_id": None, "topic": None, "nsfw": False, "last_message_id": None,
                "last_pin_timestamp": None, "rate_limit_per_user": 0, "flags": 0, "icon_emoji": None,
                "theme_color": None,
            }
            for i, channel in enumerate(channels)
        ]
        humans = [
            member_payload(user_payload(self.snowflake(), username), [member_role["id"]]) for username in members
        ]
        bot_member = member_payload(self.bot_user, [bot_role["id"]], joined_at=now_iso(timedelta(days=-7)))
        # The owner, who has every permission everywhere, is none of the members tests act as.
        guild = FakeGuild(gid, name, self.snowflake(), [everyone, member_role, moderator_role, bot_role], text,
                          [*humans, bot_member])
        self.guilds.append(guild)
        return guild

    @property
    def guild(self) -> FakeGuild:
        """The default guild."""
        return self.guilds[0]

    def get_guild(self, which: FakeGuild | int | str | None = None) -> FakeGuild:
        if isinstance(which, FakeGuild):
            return which
        for guild in self.guilds:
            if which is None or which in (guild.id, str(guild.id), guild.name):
                return guild
        raise LookupError(f"no guild {which!r}")

    def channel(self, channel_id: int | str) -> dict[str, Any]:
        """A guild channel or a DM channel, by id (404 Unknown Channel if there is none)."""
        return self.dm_channels.get(str(channel_id)) or self.find_channel(channel_id)[1]

    def find_channel(self, channel_id: int | str) -> tuple[FakeGuild, dict[str, Any]]:
        for guild in self.guilds:
            for channel in guild.channels:
                if channel["id"] == str(channel_id):
                    return guild, channel
        raise DiscordError(404, 10003, "Unknown Channel")

    def channel_messages(self, channel: int | str | dict[str, Any]) -> list[dict[str, Any]]:
        """What is stored for this channel (the bot's messages and the ones tests posted), oldest first."""
        cid = int(channel["id"]) if isinstance(channel, dict) else int(channel)
        return [self.messages[cid][mid] for mid in sorted(self.messages.get(cid, {}))]

    def find_message(self, message_id: int | str) -> dict[str, Any]:
        for stored in self.messages.values():
            if int(message_id) in stored:
                return stored[int(message_id)]
        raise LookupError(f"no message {message_id}")

    def synced_commands(self, guild: FakeGuild | int | None = None) -> list[dict[str, Any]]:
        key = None if guild is None else self.get_guild(guild).id
        return self.commands.get(key, [])

    def set_poll_voters(self, message: dict[str, Any] | int, answer_id: int, users: Iterable[dict[str, Any]]) -> None:
        """Who GET /channels/{cid}/polls/{mid}/answers/{answer_id} lists (user objects or members)."""
        mid = int(message["id"]) if isinstance(message, dict) else int(message)
        self.poll_voters[(mid, answer_id)] = [u.get("user", u) for u in users]

    # -- waiting ----------------------------------------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()

    async def wait_until(self, condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        """Wait until `condition()` (or, for an async condition, what it awaits to) is truthy and return it: checked
        when a request or gateway frame comes in, and every 50 ms besides, so conditions on the bot's own state work
        too."""
        deadline = time.monotonic() + timeout

        async def check() -> Any:
            result = condition()
            return await result if inspect.isawaitable(result) else result

        while not (result := await check()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; requests: {self.requests}")
            self._changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
        return result


    # -- messages ---------------------------------------------------------------------------------------------------
    def _make_attachments(
        self, channel_id: int, body: dict[str, Any], files: list[FilePart], existing: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Uploaded files become attachments; on edits, `attachments: [{"id": <old id>}]` keeps old ones."""
        uploads = {int(f.name[6:-1]): f for f in files if f.name.startswith("files[")}
        old = {a["id"]: a for a in existing}
        listed = body.get("attachments")
        chosen: list[tuple[dict[str, Any], FilePart | None]]
        if listed is None:
            result = list(existing)
            chosen = [({}, f) for f in uploads.values()]
        else:
            result = [old[str(a["id"])] for a in listed if str(a.get("id")) in old]
            chosen = [(a, uploads.get(int(a["id"]))) for a in listed if str(a.get("id")) not in old]
        for meta, upload in chosen:
            if upload is None:
                continue
            aid = self.snowflake()
            filename = meta.get("filename") or upload.filename or "file"
            self.attachment_data[aid] = upload.data
            url = f"{self.base_url}/attachments/{channel_id}/{aid}/{filename}"
            attachment: dict[str, Any] = {
                "id": str(aid), "filename": filename, "size": len(upload.data), "url": url, "proxy_url": url,
                "content_type": "image/png" if png_size(upload.data) else upload.content_type,
            }
            if meta.get("description"):
                attachment["description"] = meta["description"]
            if size := png_size(upload.data):
                attachment["width"], attachment["height"] = size
            result.append(attachment)
        return result

    def _store(self, message: dict[str, Any]) -> dict[str, Any]:
        self.messages.setdefault(int(message["channel_id"]), {})[int(message["id"])] = message
        return message

    def _create_message(
        self, channel_id: int, body: dict[str, Any], files: list[FilePart], interaction: InteractionState | None = None
    ) -> dict[str, Any]:
        self.channel(channel_id)
        message: dict[str, Any] = {
            "id": str(self.snowflake()), "channel_id": str(channel_id), "type": 0, "content": body.get("content") or "",
            "author": self.bot_user, "mentions": [], "mention_roles": [], "mention_channels": [],
            "mention_everyone": False, "pinned": False, "tts": bool(body.get("tts")), "timestamp": now_iso(),
            "edited_timestamp": None, "flags": body.get("flags") or 0,
            "components": _as_stored(body.get("components") or []),
            "embeds": [{"type": "rich", **e} for e in body.get("embeds") or []],
            "attachments": self._make_attachments(channel_id, body, files, []),
        }
        if body.get("nonce") is not None:
            message["nonce"] = body["nonce"]
        if poll := body.get("poll"):
            message["poll"] = {
                "question": poll["question"],
                "answers": [{"answer_id": i, "poll_media": a["poll_media"]} for i, a in enumerate(poll["answers"], 1)],
                "expiry": now_iso(timedelta(hours=poll.get("duration") or 24)),
                "allow_multiselect": bool(poll.get("allow_multiselect")), "layout_type": poll.get("layout_type") or 1,
                "results": {"is_finalized": False, "answer_counts": []},
            }
        if reference := body.get("message_reference"):
            message["type"] = 19
            message["message_reference"] = {"type": 0, "channel_id": str(channel_id), **reference}
        if interaction is not None:
            payload = interaction.payload
            user = payload["member"]["user"] if "member" in payload else payload["user"]
            message["webhook_id"] = message["application_id"] = str(self.application_id)
            message["type"] = 20 if payload["type"] == 2 else 0
            message["interaction_metadata"] = {
                "id": payload["id"], "type": payload["type"], "user": user,
                "authorizing_integration_owners": payload["authorizing_integration_owners"],
            }
            if payload["type"] == 2:
                message["interaction_metadata"]["name"] = payload["data"]["name"]
            if payload["type"] == 3:
                message["interaction_metadata"]["interacted_message_id"] = payload["message"]["id"]
        return self._store(message)

    def _edit_message(self, message: dict[str, Any], body: dict[str, Any], files: list[FilePart]) -> dict[str, Any]:
        for key in ("content", "components", "flags", "allowed_mentions"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ("" if key == "content" else [])
        message["components"] = _as_stored(message.get("components") or [])
        if "embeds" in body:
            message["embeds"] = [{"type": "rich", **e} for e in body["embeds"] or []]
        if "attachments" in body or files:
            channel_id = int(message["channel_id"])
            message["attachments"] = self._make_attachments(channel_id, body, files, message["attachments"])
        message["flags"] = (message.get("flags") or 0) & ~LOADING
        message["edited_timestamp"] = now_iso()
        return message

    def _stored_message(self, channel_id: str | int, message_id: str | int) -> dict[str, Any]:
        self.channel(channel_id)
        try:
            return self.messages[int(channel_id)][int(message_id)]
        except KeyError:
            raise DiscordError(404, 10008, "Unknown Message") from None


def _as_stored(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Components as Discord stores them, in the message-response shape a component interaction then carries:
    each with its numeric `id` (the sender's, or numbered in order from 1), a unicode emoji without an `id`."""
    taken = {c["id"] for c in _walk(components) if "id" in c}
    counter = iter(n for n in range(1, 1000) if n not in taken)
    for component in _walk(components):
        component.setdefault("id", next(counter))
        if isinstance(component.get("emoji"), dict) and component["emoji"].get("id") is None:
            component["emoji"] = {k: v for k, v in component["emoji"].items() if k != "id"}
    return components


def _walk(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for component in components:
        found.append(component)
        found += _walk(component.get("components") or [])
    return found

"""A local stand-in for Discord (REST API + gateway) to run the real bot against, on 127.0.0.1.

One aiohttp application serves `/api/v10/...` (REST), `/gateway` (the websocket) and `/attachments/...` (the CDN
for files the bot uploaded). Every REST request is recorded and checked against Discord's OpenAPI description
(tests/discord_schema.py); an invalid body is answered 400 "Invalid Form Body" as Discord would. Tests script the
gateway side: they build real-shaped payloads (`slash_command`, `component_click`, `user_message`, `reaction_add`,
`poll_vote`, ...) and `dispatch` them to the connection owning the guild, then wait for what the bot sends back.

    async with LocalDiscord() as discord_:        # usually the `discord_` fixture from conftest.py
        async with run_bot(MyBot(), discord_):
            handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "levels"))
            callback, followup = await handle.wait_for_responses(2)

discord.py must be pointed here first: `with pointed_at(discord_):` (the fixture does it). `smallcaps_bot` runs the
real bot, built as app.py builds it, against it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
import secrets
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tests.discord_schema import SchemaViolation, discord_schema

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
BOT_PERMISSIONS = MEMBER_PERMISSIONS | discord.Permissions(manage_messages=True, manage_threads=True).value


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


@dataclass
class FilePart:
    name: str  # the form field: files[0], files[1], ...
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the /api/v10 prefix, e.g. /channels/123/messages
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None  # the JSON body, or the parsed payload_json of a multipart body
    files: list[FilePart] = field(default_factory=list)
    multipart: bool = False
    received_at: float = 0.0  # time.monotonic()
    status: int | None = None  # what the local Discord answered
    response: Any = None
    problems: list[str] = field(default_factory=list)  # what Discord's API description says is wrong with it

    def matches(self, method: str, path: str) -> bool:
        """`path` may use {placeholders}: `matches("POST", "/channels/{id}/messages")`."""
        return self.method == method.upper() and _template_regex(path).fullmatch(self.path) is not None

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} -> {self.status}>"


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    retry_after: float
    body: dict[str, Any] | None


@dataclass
class GatewayConnection:
    ws: web.WebSocketResponse
    path: str
    query: dict[str, str]
    zlib_stream: bool
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    compressor: Any = field(default_factory=zlib.compressobj)

    async def send(self, frame: dict[str, Any]) -> bool:
        """Send one frame (zlib-stream compressed when the client asked for it); False if the socket is gone."""
        async with self.lock:
            if self.ws.closed:
                return False
            raw = json.dumps(frame)
            try:
                if self.zlib_stream:
                    packed = self.compressor.compress(raw.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(packed)
                else:
                    await self.ws.send_str(raw)
            except (ConnectionError, RuntimeError):
                return False
            self.sent.append(frame)
            return True


@dataclass
class GatewaySession:
    """One IDENTIFY'd session: survives reconnects (RESUME replays the events the client missed)."""

    session_id: str
    shard_id: int
    shard_count: int
    intents: int
    identify: dict[str, Any]
    connection: GatewayConnection | None
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # every dispatch frame, for replay
    resumes: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def owns(self, guild_id: int) -> bool:
        return (guild_id >> 22) % self.shard_count == self.shard_id

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.ws.closed


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
class _Interaction:
    payload: dict[str, Any]
    dispatched_at: float
    responded: bool = False
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def channel_id(self) -> int:
        return int(self.payload["channel_id"])


@dataclass
class InteractionHandle:
    """What a test holds after dispatching an interaction: the bot's answers to it, in order."""

    discord: LocalDiscord
    payload: dict[str, Any]
    dispatched_at: float  # time.monotonic()

    @property
    def token(self) -> str:
        return self.payload["token"]

    def responses(self) -> list[RecordedRequest]:
        """Callback, followups, edits and deletes the bot sent for this interaction (GETs left out)."""
        marker = f"/{self.token}"
        return [r for r in self.discord.requests if marker in r.path and r.method != "GET"]

    async def wait_for_responses(self, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        await self.discord.wait_until(lambda: len(self.responses()) >= count, timeout, f"{count} interaction responses")
        return self.responses()

    @property
    def callback(self) -> RecordedRequest | None:
        return next((r for r in self.responses() if r.path.endswith("/callback")), None)

    @property
    def ack_seconds(self) -> float | None:
        """Time from dispatch to the first callback request (Discord allows 3 seconds)."""
        callback = self.callback
        return None if callback is None else callback.received_at - self.dispatched_at


Handler = Callable[..., Awaitable[Any]]


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)))


class LocalDiscord:
    """The server and its state: guilds (one default, "Smallcaps HQ", with #general, #iwm-alerts, alice and bob),
    messages per channel, synced commands, gateway sessions, and every REST request the bot made."""

    def __init__(self, *, shard_count: int = 1, token: str = "local.discord.token") -> None:
        self.shard_count = shard_count  # what GET /gateway/bot recommends
        self.token = token
        self._ms = int(time.time() * 1000) - DISCORD_EPOCH_MS - 1000
        self.application_id = self.snowflake()
        self.bot_user = user_payload(self.application_id, "smallcaps-test-bot", bot=True)
        self.guilds: list[FakeGuild] = []
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.messages: dict[int, dict[int, dict[str, Any]]] = {}  # channel id -> message id -> message
        self.dm_channels: dict[str, dict[str, Any]] = {}  # channel id -> a DM channel (see `in_a_dm`)
        self.attachment_data: dict[int, bytes] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> synced commands
        self.poll_voters: dict[tuple[int, int], list[dict[str, Any]]] = {}  # (message id, answer id) -> users
        self.sessions: list[GatewaySession] = []
        self.connections: list[GatewayConnection] = []
        self._interactions: dict[str, _Interaction] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self._changed = asyncio.Event()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._add_routes()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/resume", self._gateway)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api)
        self.server = TestServer(app, host="127.0.0.1")
        self.add_guild("Smallcaps HQ")

    # -- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self) -> LocalDiscord:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        for conn in self.connections:
            if not conn.ws.closed:
                await conn.ws.close(code=1001)
        await self.server.close()

    async def __aenter__(self) -> LocalDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        bot_role = {
            **everyone, "id": str(self.snowflake()), "name": "smallcaps", "position": 2, "managed": True,
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
        guild = FakeGuild(gid, name, int(humans[0]["user"]["id"]) if humans else self.application_id,
                          [everyone, member_role, bot_role], text, [*humans, bot_member])
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

    # -- waiting --------------------------------------------------------------------------------------------------
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

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 5.0, *, after: int = 0
    ) -> RecordedRequest:
        """The first recorded request (from index `after` on, e.g. `len(discord_.requests)`) matching `predicate`."""

        def find() -> RecordedRequest | None:
            return next((r for r in self.requests[after:] if predicate(r)), None)

        return await self.wait_until(find, timeout, "a matching request")

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests for METHOD + path template, e.g. `requests_to("PUT", "/applications/{a}/commands")`."""
        return [r for r in self.requests if r.matches(method, path)]

    # -- faults and validation ----------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        path: str,
        status: int,
        *,
        count: int = 1,
        retry_after: float = 0.2,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `count` requests matching METHOD + path template with `status` (429, 403, 404, 500...).

        Faults are consumed in the order they were added. A 429 carries `retry_after`, `global: false`, the
        X-RateLimit-* headers, `Retry-After` and `Via` (discord.py treats a 429 without `Via` as a Cloudflare ban).
        """
        self.faults.append(Fault(method.upper(), _template_regex(path), status, count, retry_after, body))

    def problems(self) -> list[str]:
        return [f"{r.method} {r.path}: {p}" for r in self.requests for p in r.problems]

    def assert_requests_valid(self) -> None:
        """Raise SchemaViolation if any recorded request broke Discord's published API description or limits."""
        problems = self.problems()
        if problems:
            raise SchemaViolation("the bot sent requests Discord would refuse:\n  " + "\n  ".join(problems))

    # -- REST -------------------------------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        rec = RecordedRequest(
            request.method, request.path[len(API_PREFIX):] or "/", dict(request.query), dict(request.headers),
            received_at=time.monotonic(),
        )
        try:
            await self._read_body(request, rec)
            response = self._take_fault(rec) or await self._route(rec)
        finally:
            self.requests.append(rec)  # once answered, so a waiting test sees the body and the status together
            self._notify()
        return response

    async def _read_body(self, request: web.Request, rec: RecordedRequest) -> None:
        if request.content_type.startswith("multipart/"):
            rec.multipart = True
            async for part in await request.multipart():
                data = bytes(await part.read(decode=False))  # type: ignore[union-attr]
                if part.name == "payload_json":
                    rec.json = json.loads(data)
                else:
                    content_type = part.headers.get("Content-Type")
                    rec.files.append(FilePart(part.name or "", part.filename, content_type, data))  # type: ignore[union-attr]
        elif request.body_exists:
            raw = await request.read()
            rec.json = json.loads(raw) if raw and request.content_type == "application/json" else None

    def _take_fault(self, rec: RecordedRequest) -> web.Response | None:
        fault = next((f for f in self.faults if f.method == rec.method and f.pattern.fullmatch(rec.path)), None)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            self.faults.remove(fault)
        headers: dict[str, str] = {}
        if fault.status == 429:
            body = {"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": False}
            headers = {
                "Retry-After": str(math.ceil(fault.retry_after)), "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": f"{time.time() + fault.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}", "X-RateLimit-Bucket": "local-bucket",
                "X-RateLimit-Scope": "user", "Via": "1.1 google",
            }
        else:
            known = {
                403: (50013, "Missing Permissions"), 404: (0, "404: Not Found"), 500: (0, "500: Internal Server Error")
            }
            code, message = known.get(fault.status, (0, f"{fault.status}: Error"))
            body = {"message": message, "code": code}
        return self._respond(rec, fault.status, fault.body or body, headers)

    def _respond(
        self, rec: RecordedRequest, status: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        rec.status, rec.response = status, body
        if body is None:
            return web.Response(status=status, headers=headers)
        # exactly `application/json`: discord.py compares the header verbatim, so no `; charset=utf-8`
        headers = {**(headers or {}), "Content-Type": "application/json"}
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)

    async def _route(self, rec: RecordedRequest) -> web.Response:
        if rec.json is not None or rec.files:
            rec.problems = discord_schema().validate(
                rec.method, rec.path, rec.json, [(f.filename or f.name, len(f.data)) for f in rec.files]
            )
            if rec.problems:  # answered as Discord answers a body its API description refuses
                errors = {"_errors": [{"code": "BASE_TYPE_INVALID", "message": p} for p in rec.problems]}
                return self._respond(rec, 400, DiscordError(400, 50035, "Invalid Form Body", errors).body())
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(rec.path)
            if match and method == rec.method:
                try:
                    status, body = 200, await handler(rec, **match.groupdict())
                    if body is None:
                        status = 204
                except DiscordError as exc:
                    status, body = exc.status, exc.body()
                return self._respond(rec, status, body)
        return self._respond(rec, 404, {"message": "404: Not Found", "code": 0})

    def _add_routes(self) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/applications/{app_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self._webhook_execute),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_message),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("POST", "/channels/{channel_id}/typing", self._no_content),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._own_reaction),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._own_reaction),
            ("GET", "/channels/{channel_id}/polls/{message_id}/answers/{answer_id}", self._poll_voters),
            ("POST", "/channels/{channel_id}/polls/{message_id}/expire", self._poll_expire),
        ]
        self._routes = [(method, _template_regex(path), handler) for method, path, handler in routes]

    async def _no_content(self, rec: RecordedRequest, **_: str) -> None:
        return None

    async def _get_me(self, rec: RecordedRequest) -> dict[str, Any]:
        if rec.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")
        return {**self.bot_user, "verified": True, "mfa_enabled": True, "email": None, "locale": "en-US"}

    async def _get_user(self, rec: RecordedRequest, user_id: str) -> dict[str, Any]:
        for guild in self.guilds:
            with suppress(LookupError):
                return guild.member(user_id)["user"]
        raise DiscordError(404, 10013, "Unknown User")

    async def _get_member(self, rec: RecordedRequest, guild_id: str, user_id: str) -> dict[str, Any]:
        try:
            return self.get_guild(guild_id).member(user_id)
        except LookupError:
            raise DiscordError(404, 10007, "Unknown Member") from None

    async def _get_application(self, rec: RecordedRequest) -> dict[str, Any]:
        owner = user_payload(self.snowflake(), "bot-owner")
        return {
            "id": str(self.application_id), "name": self.bot_user["username"], "icon": None,
            "description": "local stand-in", "summary": "", "type": None, "hook": True, "bot_public": False,
            "bot_require_code_grant": False, "verify_key": "0" * 64, "flags": 0, "owner": owner, "team": None,
            "bot": self.bot_user, "redirect_uris": [], "interactions_endpoint_url": None,
            "role_connections_verification_url": None, "tags": [], "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0, "integration_types_config": {"0": {}},
        }

    async def _get_gateway(self, rec: RecordedRequest) -> dict[str, Any]:
        return {"url": self.gateway_url}

    async def _get_gateway_bot(self, rec: RecordedRequest) -> dict[str, Any]:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
        return {"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limit}

    def _check_application(self, app_id: str) -> None:
        if app_id != str(self.application_id):
            raise DiscordError(403, 50001, "Missing Access")

    async def _get_commands(self, rec: RecordedRequest, app_id: str, guild_id: str | None = None) -> list[Any]:
        self._check_application(app_id)
        return self.commands.get(int(guild_id) if guild_id else None, [])

    async def _put_commands(self, rec: RecordedRequest, app_id: str, guild_id: str | None = None) -> list[Any]:
        """Echo the commands as Discord does: ids that stay the same across syncs, application_id, version..."""
        self._check_application(app_id)
        gid = int(guild_id) if guild_id else None
        if gid is not None and gid not in {g.id for g in self.guilds}:
            raise DiscordError(403, 50001, "Missing Access")
        synced = []
        for command in rec.json or []:
            kind = command.get("type") or 1
            key = (gid, command["name"], kind)
            command_id = self._command_ids.setdefault(key, self.snowflake())
            permissions = command.get("default_member_permissions")
            echoed = {
                "id": str(command_id), "application_id": str(self.application_id), "version": str(self.snowflake()),
                "type": kind, "name": command["name"], "name_localizations": command.get("name_localizations"),
                "description": command.get("description", ""),
                "description_localizations": command.get("description_localizations"),
                "default_member_permissions": None if permissions is None else str(permissions),
                "dm_permission": command.get("dm_permission", True), "nsfw": command.get("nsfw", False),
                "contexts": command.get("contexts"), "integration_types": command.get("integration_types") or [0],
            }
            if command.get("options"):
                echoed["options"] = command["options"]
            if gid is not None:
                echoed["guild_id"] = str(gid)
            synced.append(echoed)
        self.commands[gid] = synced
        return synced

    # messages --------------------------------------------------------------------------------------------------
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
        self, channel_id: int, body: dict[str, Any], files: list[FilePart], interaction: _Interaction | None = None
    ) -> dict[str, Any]:
        self.channel(channel_id)
        message: dict[str, Any] = {
            "id": str(self.snowflake()), "channel_id": str(channel_id), "type": 0, "content": body.get("content") or "",
            "author": self.bot_user, "mentions": [], "mention_roles": [], "mention_channels": [],
            "mention_everyone": False, "pinned": False, "tts": bool(body.get("tts")), "timestamp": now_iso(),
            "edited_timestamp": None, "flags": body.get("flags") or 0, "components": body.get("components") or [],
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
        return self._store(message)

    def _edit_message(self, message: dict[str, Any], body: dict[str, Any], files: list[FilePart]) -> dict[str, Any]:
        for key in ("content", "components", "flags", "allowed_mentions"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ("" if key == "content" else [])
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

    async def _get_channel(self, rec: RecordedRequest, channel_id: str) -> dict[str, Any]:
        return self.channel(channel_id)

    async def _get_messages(self, rec: RecordedRequest, channel_id: str) -> list[Any]:
        self.channel(channel_id)
        newest_first = list(reversed(self.channel_messages(channel_id)))
        if "before" in rec.query:
            newest_first = [m for m in newest_first if int(m["id"]) < int(rec.query["before"])]
        if "after" in rec.query:
            newest_first = [m for m in newest_first if int(m["id"]) > int(rec.query["after"])]
        return newest_first[: int(rec.query.get("limit", 50))]

    async def _post_message(self, rec: RecordedRequest, channel_id: str) -> dict[str, Any]:
        return self._create_message(int(channel_id), rec.json or {}, rec.files)

    async def _channel_message(self, rec: RecordedRequest, channel_id: str, message_id: str) -> Any:
        message = self._stored_message(channel_id, message_id)
        if rec.method == "GET":
            return message
        if message["author"]["id"] != self.bot_user["id"] and rec.method == "PATCH":
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        if rec.method == "PATCH":
            return self._edit_message(message, rec.json or {}, rec.files)
        del self.messages[int(channel_id)][int(message_id)]
        return None

    async def _own_reaction(self, rec: RecordedRequest, channel_id: str, message_id: str, emoji: str) -> None:
        message = self._stored_message(channel_id, message_id)
        name, _, emoji_id = emoji.partition(":")
        reactions = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"]["name"] == name), None)
        if rec.method == "PUT" and (entry is None or not entry["me"]):
            if entry is None:
                entry = {"emoji": {"id": emoji_id or None, "name": name}, "count": 0, "me": False, "burst_colors": [],
                         "count_details": {"burst": 0, "normal": 0}, "me_burst": False, "burst_me": False}
                reactions.append(entry)
            entry["count"] += 1
            entry["me"] = True
        elif rec.method == "DELETE" and entry is not None and entry["me"]:
            entry["count"] -= 1
            entry["me"] = False
        return None

    async def _poll_voters(self, rec: RecordedRequest, channel_id: str, message_id: str, answer_id: str) -> Any:
        message = self._stored_message(channel_id, message_id)
        if "poll" not in message and (int(message_id), int(answer_id)) not in self.poll_voters:
            raise DiscordError(404, 10008, "Unknown Message")
        users = sorted(self.poll_voters.get((int(message_id), int(answer_id)), []), key=lambda u: int(u["id"]))
        after = int(rec.query.get("after", 0))
        return {"users": [u for u in users if int(u["id"]) > after][: int(rec.query.get("limit", 25))]}

    async def _poll_expire(self, rec: RecordedRequest, channel_id: str, message_id: str) -> dict[str, Any]:
        message = self._stored_message(channel_id, message_id)
        if "poll" not in message:
            raise DiscordError(400, 520001, "This message does not have a poll")  # close enough to Discord's
        if message["author"]["id"] != self.bot_user["id"]:
            raise DiscordError(403, 50013, "Missing Permissions")
        message["poll"]["expiry"] = now_iso()
        message["poll"]["results"]["is_finalized"] = True
        return message

    # interactions ----------------------------------------------------------------------------------------------
    def _interaction(self, token: str, interaction_id: str | None = None) -> _Interaction:
        state = self._interactions.get(token)
        if state is None or (interaction_id is not None and state.payload["id"] != interaction_id):
            raise DiscordError(404, 10062, "Unknown interaction")
        return state

    async def _interaction_callback(self, rec: RecordedRequest, interaction_id: str, token: str) -> Any:
        state = self._interaction(token, interaction_id)
        if rec.received_at - state.dispatched_at > INTERACTION_ACK_SECONDS:
            raise DiscordError(404, 10062, "Unknown interaction")
        if state.responded:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        state.responded = True
        body = rec.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        message = None
        if kind == 4:
            message = self._create_message(state.channel_id, data, rec.files, state)
        elif kind == 5:
            message = self._create_message(state.channel_id, {"flags": data.get("flags", 0)}, [], state)
            message["flags"] |= LOADING
        elif kind == 7 and "message" in state.payload:
            original = state.payload["message"]
            message = self._edit_message(self._stored_message(original["channel_id"], original["id"]), data, rec.files)
        if message is not None and kind in (4, 5):
            state.original_id = int(message["id"])
        if rec.query.get("with_response") not in ("1", "true", "True"):
            return None
        answer: dict[str, Any] = {
            "interaction": {
                "id": state.payload["id"], "type": state.payload["type"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool((message or {}).get("flags", 0) & EPHEMERAL),
            },
            "resource": {"type": kind},
        }
        if message is not None:
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"]["message"] = message
        return answer

    async def _webhook_execute(self, rec: RecordedRequest, app_id: str, token: str) -> Any:
        state = self._interactions.get(token)
        if state is None or app_id != str(self.application_id) or not state.responded:
            raise DiscordError(404, 10015, "Unknown Webhook")
        message = self._create_message(state.channel_id, rec.json or {}, rec.files, state)
        state.followup_ids.append(int(message["id"]))
        return message if rec.query.get("wait") in ("1", "true", "True") else None

    async def _webhook_message(self, rec: RecordedRequest, app_id: str, token: str, message_id: str) -> Any:
        state = self._interactions.get(token)
        if state is None or app_id != str(self.application_id):
            raise DiscordError(404, 10015, "Unknown Webhook")
        mid = state.original_id if message_id == "@original" else int(message_id)
        if mid is None or (mid != state.original_id and mid not in state.followup_ids):
            raise DiscordError(404, 10008, "Unknown Message")
        message = self._stored_message(state.channel_id, mid)
        if rec.method == "PATCH":
            return self._edit_message(message, rec.json or {}, rec.files)
        if rec.method == "DELETE":
            del self.messages[state.channel_id][mid]
            return None
        return message

    async def _cdn(self, request: web.Request) -> web.Response:
        data = self.attachment_data.get(int(request.match_info["attachment_id"]))
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    # -- gateway ------------------------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        """Plain JSON text frames, or zlib-stream when the URL asks for it (discord.py does, by default)."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(ws, request.path, dict(request.query), request.query.get("compress") == "zlib-stream")
        self.connections.append(conn)
        session: GatewaySession | None = None
        hello = {"heartbeat_interval": 41250, "_trace": ['["local-gateway"]']}
        await conn.send({"op": 10, "d": hello, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                conn.received.append(frame)
                self._notify()
                op, data = frame.get("op"), frame.get("d")
                if op == 1:
                    await conn.send({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    session = await self._identify(conn, data)
                elif op == 6:
                    session = await self._resume(conn, data)
                elif op == 8 and session is not None:
                    await self._request_members(session, data)
        finally:
            self._notify()
        return ws

    async def _identify(self, conn: GatewayConnection, data: dict[str, Any]) -> GatewaySession | None:
        if data.get("token") not in (self.token, f"Bot {self.token}"):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return None
        shard_id, shard_count = data.get("shard") or (0, 1)
        session = GatewaySession(secrets.token_hex(16), shard_id, shard_count, data.get("intents", 0), data, conn)
        self.sessions.append(session)
        guilds = [g for g in self.guilds if session.owns(g.id)]
        ready = {
            "v": 10, "user": {**self.bot_user, "verified": True, "mfa_enabled": True, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds], "session_id": session.session_id,
            "session_type": "normal", "resume_gateway_url": self.gateway_url + "/resume",
            "application": {"id": str(self.application_id), "flags": 0}, "relationships": [],
            "private_channels": [], "presences": [], "guild_join_requests": [], "user_settings": {}, "auth": {},
            "geo_ordered_rtc_regions": ["local"], "_trace": ["[\"local-gateway\"]"],
        }
        if "shard" in data:
            ready["shard"] = [shard_id, shard_count]
        await self.dispatch("READY", ready, session=session)
        with_members = bool(session.intents & GUILD_MEMBERS_INTENT)
        for guild in guilds:
            payload = guild.payload(with_members=with_members, bot_user_id=self.application_id)
            await self.dispatch("GUILD_CREATE", payload, session=session)
        return session

    async def _resume(self, conn: GatewayConnection, data: dict[str, Any]) -> GatewaySession | None:
        session = next((s for s in self.sessions if s.session_id == data.get("session_id")), None)
        if session is None or data.get("token") not in (self.token, f"Bot {self.token}"):
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return None
        async with session.lock:
            old, session.connection = session.connection, conn
            if old is not None and not old.ws.closed:
                await old.ws.close(code=4000)
            last_seen = data.get("seq") or 0
            for frame in session.events:
                if frame["s"] > last_seen:
                    await conn.send(frame)
            session.resumes += 1
        await self.dispatch("RESUMED", {"_trace": ["[\"local-gateway\"]"]}, session=session)
        return session

    async def _request_members(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self.get_guild(int(data["guild_id"]))
        members = guild.members
        if data.get("user_ids"):
            wanted = {str(u) for u in (data["user_ids"] if isinstance(data["user_ids"], list) else [data["user_ids"]])}
            members = [m for m in members if m["user"]["id"] in wanted]
        elif data.get("query"):
            members = [m for m in members if m["user"]["username"].startswith(data["query"])]
        chunk = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1, "not_found": []}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, session=session)

    def session_for(self, *, guild_id: int | str | None = None, shard_id: int | None = None) -> GatewaySession:
        """The newest session owning this guild (or shard); with a single shard, that one's."""
        candidates = self.sessions
        if guild_id is not None:
            candidates = [s for s in candidates if s.owns(int(guild_id))]
        if shard_id is not None:
            candidates = [s for s in candidates if s.shard_id == shard_id]
        if guild_id is None and shard_id is None and len({s.shard_id for s in candidates}) > 1:
            raise LookupError("several shards are connected: say which guild or shard")
        if not candidates:
            raise LookupError(f"no gateway session for guild {guild_id} / shard {shard_id}; is the bot connected?")
        return candidates[-1]

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        guild_id: int | str | None = None,
        shard_id: int | None = None,
        session: GatewaySession | None = None,
    ) -> int | None:
        """Send a DISPATCH (op 0) to the connection owning the guild (default: `data["guild_id"]`).

        Returns its sequence number, or None when the session lacks the intent the event needs (Discord would
        not send it). While the client is disconnected the event is kept and replayed on RESUME.
        """
        if session is None:
            guild_id = guild_id if guild_id is not None else data.get("guild_id")
            session = self.session_for(guild_id=guild_id if shard_id is None else None, shard_id=shard_id)
        if event in EVENT_INTENTS:
            needed = EVENT_INTENTS[event][0 if data.get("guild_id") else 1]
            if not session.intents & needed:
                return None
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not session.intents & MESSAGE_CONTENT_INTENT:
            data = self._without_content(data)
        self._track_votes(event, data)
        async with session.lock:
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.events.append(frame)
            if session.connection is not None:
                await session.connection.send(frame)
        self._notify()
        return frame["s"]

    def _without_content(self, message: dict[str, Any]) -> dict[str, Any]:
        """Without the MESSAGE_CONTENT intent, Discord blanks other users' messages unless they mention the bot."""
        author_id = message.get("author", {}).get("id")
        mentioned = any(u.get("id") == self.bot_user["id"] for u in message.get("mentions", []))
        if author_id == self.bot_user["id"] or mentioned:
            return message
        blank = {"content": "", "embeds": [], "attachments": [], "components": []}
        return {**{k: v for k, v in message.items() if k != "poll"}, **{k: blank[k] for k in blank if k in message}}

    def _track_votes(self, event: str, data: dict[str, Any]) -> None:
        if event not in ("MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE"):
            return
        voters = self.poll_voters.setdefault((int(data["message_id"]), int(data["answer_id"])), [])
        voters[:] = [u for u in voters if u["id"] != data["user_id"]]
        if event == "MESSAGE_POLL_VOTE_ADD":
            guild = self.get_guild(int(data["guild_id"])) if data.get("guild_id") else self.guild
            voters.append(guild.member(data["user_id"])["user"])

    async def dispatch_interaction(self, payload: dict[str, Any]) -> InteractionHandle:
        """Dispatch INTERACTION_CREATE and return a handle on the bot's responses to it."""
        dispatched_at = time.monotonic()
        self._interactions[payload["token"]] = _Interaction(payload, dispatched_at)
        await self.dispatch("INTERACTION_CREATE", payload)
        return InteractionHandle(self, payload, dispatched_at)

    async def force_reconnect(
        self, *, guild_id: int | None = None, shard_id: int | None = None, timeout: float = 5.0
    ) -> GatewaySession:
        """Send op 7 RECONNECT and wait until the client has dropped that connection (it then RESUMEs)."""
        session = self.session_for(guild_id=guild_id, shard_id=shard_id)
        conn = session.connection
        assert conn is not None, "session is not connected"
        await conn.send({"op": 7, "d": None, "s": None, "t": None})
        await self.wait_until(lambda: conn.ws.closed, timeout, "the client to drop the connection after op 7")
        if session.connection is conn:
            session.connection = None
        return session

    # -- payload builders --------------------------------------------------------------------------------------
    def _find_command(self, name: str, guild: FakeGuild) -> dict[str, Any]:
        for command in [*self.commands.get(guild.id, []), *self.commands.get(None, [])]:
            if command["name"] == name and command.get("type", 1) == 1:
                return command
        raise LookupError(f"/{name} was not synced (globally or to guild {guild.name!r}); synced: {self.commands}")

    def slash_command(
        self,
        name: str,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        guild: FakeGuild | int | str | None = None,
        channel: str | int | None = None,
        member: str | int | None = None,
        permissions: int | discord.Permissions | None = None,
        focused: str | None = None,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """An APPLICATION_COMMAND interaction for `/name [group] [subcommand] option:value ...`.

        `subcommand` is "sub" or "group sub". Option types come from the command tree the bot synced, so the
        values are plain Python values (a username / role name / channel name for user, role and channel
        options; `(filename, bytes)` for attachments). With `focused="option"` it is an autocomplete request.
        """
        target = self.get_guild(guild)
        command = self._find_command(name, target)
        node, chain = command, []
        for part in (subcommand or "").split():
            node = next((o for o in node.get("options") or [] if o["name"] == part and o["type"] in (1, 2)), None)
            if node is None:
                raise LookupError(f"/{name} has no subcommand {subcommand!r}")
            chain.append(node)
        if any(o["type"] in (1, 2) for o in node.get("options") or []):
            raise ValueError(f"/{name} {subcommand or ''} needs a subcommand")
        given = dict(options or {})
        resolved: dict[str, dict[str, Any]] = {}
        built = []
        for spec in node.get("options") or []:
            if spec["name"] not in given:
                if spec.get("required") and spec["name"] != focused:
                    raise ValueError(f"required option {spec['name']!r} missing")
                continue
            built.append(self._option(spec, given.pop(spec["name"]), target, resolved, spec["name"] == focused))
        if given:
            raise LookupError(f"unknown options {sorted(given)} for /{name} {subcommand or ''}")
        for parent in reversed(chain):
            built = [{"type": parent["type"], "name": parent["name"], "options": built}]
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": built}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        if resolved:
            data["resolved"] = resolved
        kind = 4 if focused else 2
        return self._interaction_payload(kind, data, target, channel, member, permissions, locale)

    def _option(
        self, spec: dict[str, Any], value: Any, guild: FakeGuild, resolved: dict[str, dict[str, Any]], focused: bool
    ) -> dict[str, Any]:
        kind = spec["type"]
        option: dict[str, Any] = {"type": kind, "name": spec["name"]}
        if focused:
            return {**option, "value": str(value), "focused": True}
        if kind == 3:
            value = str(value)
        elif kind == 4:
            value = int(value)
        elif kind == 5:
            value = bool(value)
        elif kind == 10:
            value = float(value)
        elif kind in (6, 9) and not (kind == 9 and any(value in (r["name"], r["id"]) for r in guild.roles)):
            member = guild.member(value)
            value = member["user"]["id"]
            resolved.setdefault("users", {})[value] = member["user"]
            resolved.setdefault("members", {})[value] = {
                **{k: v for k, v in member.items() if k != "user"}, "permissions": str(MEMBER_PERMISSIONS)
            }
        elif kind in (8, 9):
            role = guild.role(value)
            value = role["id"]
            resolved.setdefault("roles", {})[value] = role
        elif kind == 7:
            channel = guild.channel(value)
            value = channel["id"]
            resolved.setdefault("channels", {})[value] = {**channel, "permissions": str(MEMBER_PERMISSIONS)}
        elif kind == 11:
            filename, data = value
            aid = self.snowflake()
            self.attachment_data[aid] = data
            url = f"{self.base_url}/attachments/0/{aid}/{filename}"
            value = str(aid)
            resolved.setdefault("attachments", {})[value] = {
                "id": value, "filename": filename, "size": len(data), "url": url, "proxy_url": url, "ephemeral": True,
            }
        choices = [c["value"] for c in spec.get("choices") or []]
        if choices and value not in choices:
            raise ValueError(f"{value!r} is not one of the choices {choices} of option {spec['name']!r}")
        return {**option, "value": value}

    def _interaction_payload(
        self,
        kind: int,
        data: dict[str, Any],
        guild: FakeGuild,
        channel: str | int | None,
        member: str | int | None,
        permissions: int | discord.Permissions | None,
        locale: str,
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if isinstance(permissions, discord.Permissions):
            permissions = permissions.value
        perms = str(MEMBER_PERMISSIONS if permissions is None else permissions)
        the_channel = guild.channel(channel)
        payload: dict[str, Any] = {
            "id": str(self.snowflake()), "application_id": str(self.application_id), "type": kind, "data": data,
            "guild_id": str(guild.id), "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": the_channel["id"], "channel": {**the_channel, "permissions": perms},
            "member": {**guild.member(member), "permissions": perms}, "token": secrets.token_urlsafe(96),
            "version": 1, "app_permissions": str(BOT_PERMISSIONS), "locale": locale, "guild_locale": "en-US",
            "entitlements": [], "entitlement_sku_ids": [], "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0, "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if message is not None:
            payload["message"] = message
        return payload

    def in_a_dm(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The same interaction sent from a DM with the bot: no guild or member, the user, a DM channel."""
        user = payload.pop("member")["user"]
        del payload["guild_id"], payload["guild"]
        payload["data"].pop("guild_id", None)
        dm = {"id": str(self.snowflake()), "type": 1, "recipients": [user]}
        self.dm_channels[dm["id"]] = dm
        payload.update(user=user, channel_id=dm["id"], channel=dm, context=1,
                       authorizing_integration_owners={"1": user["id"]})
        return payload

    def component_click(
        self,
        custom_id: str,
        message: dict[str, Any] | int | str | None = None,
        *,
        values: Iterable[str] | None = None,
        component_type: int = 2,
        guild: FakeGuild | int | str | None = None,
        member: str | int | None = None,
        permissions: int | discord.Permissions | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_COMPONENT interaction: a button click (or select, with `values`) on a stored message.

        By default the newest stored message carrying a component with this custom_id is the one clicked.
        """
        if message is None:
            carrying = [m for c in self.messages.values() for m in c.values() if _has_custom_id(m, custom_id)]
            if not carrying:
                raise LookupError(f"no stored message has a component with custom_id {custom_id!r}")
            message = max(carrying, key=lambda m: int(m["id"]))
        elif not isinstance(message, dict):
            message = self.find_message(message)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
            component_type = data["component_type"] = 3 if component_type == 2 else component_type
        target = self.get_guild(guild if guild is not None else self.find_channel(message["channel_id"])[0])
        return self._interaction_payload(
            3, data, target, message["channel_id"], member, permissions, "en-US", message=message
        )

    def user_message(
        self,
        content: str = "",
        *,
        guild: FakeGuild | int | str | None = None,
        channel: str | int | None = None,
        member: str | int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload from a member (stored, so the bot can fetch it). `extra` adds/overrides fields."""
        target = self.get_guild(guild)
        author = target.member(member)
        message = {
            "id": str(self.snowflake()), "channel_id": target.channel(channel)["id"], "guild_id": str(target.id),
            "type": 0, "content": content, "author": author["user"],
            "member": {k: v for k, v in author.items() if k != "user"}, "mentions": [], "mention_roles": [],
            "mention_everyone": False, "attachments": [], "embeds": [], "components": [], "pinned": False,
            "tts": False, "timestamp": now_iso(), "edited_timestamp": None, "flags": 0, "nonce": str(self.snowflake()),
            **extra,
        }
        return self._store(message)

    def message_update(self, message: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """A MESSAGE_UPDATE payload (the full message with `changes`), also applied to the stored copy."""
        stored = self.find_message(message["id"])
        stored.update(changes, edited_timestamp=now_iso())
        guild, _ = self.find_channel(stored["channel_id"])
        return {**stored, "guild_id": str(guild.id)}

    def message_delete(self, message: dict[str, Any]) -> dict[str, Any]:
        guild, _ = self.find_channel(message["channel_id"])
        self.messages.get(int(message["channel_id"]), {}).pop(int(message["id"]), None)
        return {"id": message["id"], "channel_id": message["channel_id"], "guild_id": str(guild.id)}

    def message_delete_bulk(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        deleted = [self.message_delete(m) for m in messages]
        first = deleted[0]
        return {"ids": [d["id"] for d in deleted], "channel_id": first["channel_id"], "guild_id": first["guild_id"]}

    def _reaction(self, message: dict[str, Any], emoji: str, member: str | int | None) -> dict[str, Any]:
        guild, _ = self.find_channel(message["channel_id"])
        name, _, emoji_id = emoji.partition(":")
        return {
            "user_id": guild.member(member)["user"]["id"], "channel_id": message["channel_id"],
            "message_id": message["id"], "guild_id": str(guild.id),
            "emoji": {"id": emoji_id or None, "name": name, **({"animated": False} if emoji_id else {})},
            "burst": False, "type": 0,
        }

    def reaction_add(
        self, message: dict[str, Any], emoji: str = "🚀", *, member: str | int | None = None
    ) -> dict[str, Any]:
        """MESSAGE_REACTION_ADD; `emoji` is a unicode emoji or "name:id" for a custom one."""
        payload = self._reaction(message, emoji, member)
        guild = self.get_guild(int(payload["guild_id"]))
        return {
            **payload, "member": guild.member(member), "message_author_id": message["author"]["id"], "burst_colors": [],
        }

    def reaction_remove(
        self, message: dict[str, Any], emoji: str = "🚀", *, member: str | int | None = None
    ) -> dict[str, Any]:
        return self._reaction(message, emoji, member)

    def reaction_remove_all(self, message: dict[str, Any]) -> dict[str, Any]:
        guild, _ = self.find_channel(message["channel_id"])
        return {"channel_id": message["channel_id"], "message_id": message["id"], "guild_id": str(guild.id)}

    def poll_vote(self, message: dict[str, Any], answer_id: int, *, member: str | int | None = None) -> dict[str, Any]:
        """MESSAGE_POLL_VOTE_ADD / _REMOVE payload; dispatching it also updates the answer's voter list."""
        guild, _ = self.find_channel(message["channel_id"])
        return {
            "user_id": guild.member(member)["user"]["id"], "channel_id": message["channel_id"],
            "message_id": message["id"], "guild_id": str(guild.id), "answer_id": answer_id,
        }


def _has_custom_id(node: Any, custom_id: str) -> bool:
    if isinstance(node, dict):
        return node.get("custom_id") == custom_id or any(_has_custom_id(v, custom_id) for v in node.values())
    if isinstance(node, list):
        return any(_has_custom_id(v, custom_id) for v in node)
    return False


@contextmanager
def pointed_at(local: LocalDiscord) -> Iterator[None]:
    """Point discord.py's REST base URL and gateway at the local Discord; restore them afterwards."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = local.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(local.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


@asynccontextmanager
async def smallcaps_bot(local: LocalDiscord, env: Mapping[str, str]) -> AsyncIterator[Any]:
    """The real SmallcapsBot, built as app.py builds it (settings from `env` plus the local token, then
    `open_resources`), running against the local Discord until the block ends."""
    from app import SmallcapsBot, open_resources
    from services.config import Settings

    settings = Settings.from_env({"DISCORD_TOKEN": local.token, **env})
    async with open_resources(settings) as resources:
        async with run_bot(SmallcapsBot(settings, resources), local) as bot:
            yield bot


@asynccontextmanager
async def run_bot(bot: discord.Client, local: LocalDiscord, *, timeout: float = 10.0) -> AsyncIterator[discord.Client]:
    """Start `bot` against the local Discord (discord.py must already point at it), wait until ready, close after.

    Two discord.py waits meant for the real Discord are shortened: the 5 s pause before each IDENTIFY after the
    first (identify rate limit) and the 2 s `guild_ready_timeout` after the last GUILD_CREATE.
    """

    async def no_identify_wait(shard_id: int | None, *, initial: bool = False) -> None:
        return None

    bot.before_identify_hook = no_identify_wait  # type: ignore[method-assign]
    bot._connection.guild_ready_timeout = min(bot._connection.guild_ready_timeout, 0.1)
    task = asyncio.create_task(bot.start(local.token))
    try:
        deadline = time.monotonic() + timeout
        while not bot.is_ready():
            if task.done():
                task.result()  # raises what stopped the bot
                raise RuntimeError("the bot stopped before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bot not ready after {timeout}s; requests: {local.requests}")
            await asyncio.sleep(0.02)
        yield bot
    finally:
        await bot.close()
        with suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5.0)

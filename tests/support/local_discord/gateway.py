"""The gateway side of the local Discord: websocket connections (zlib-stream or plain JSON), IDENTIFY'd sessions
that survive reconnects (RESUME replays what the client missed), dispatching events with Discord's intent rules,
and the handle a test holds on an interaction it dispatched."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.support.local_discord.payloads import EVENT_INTENTS, GUILD_MEMBERS_INTENT, MESSAGE_CONTENT_INTENT
from tests.support.local_discord.rest import RecordedRequest
from tests.support.local_discord.state import DiscordState, InteractionState


@dataclass
class GatewayConnection:
    ws: web.WebSocketResponse
    path: str
    query: dict[str, str]
    zlib_stream: bool
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    # (time.monotonic(), sequence): each heartbeat's "last sequence number received", the client's acknowledgement
    heartbeats: list[tuple[float, int | None]] = field(default_factory=list)
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
class InteractionHandle:
    """What a test holds after dispatching an interaction: the bot's answers to it, in order."""

    discord: DiscordState  # the LocalDiscord it was dispatched to
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


class Gateway(DiscordState):
    """HELLO, heartbeats, IDENTIFY (READY and one GUILD_CREATE per guild the shard owns), RESUME, member requests;
    `dispatch` sends an event to the session owning its guild."""

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        """Plain JSON text frames, or zlib-stream when the URL asks for it (discord.py does, by default)."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(ws, request.path, dict(request.query), request.query.get("compress") == "zlib-stream")
        self.connections.append(conn)
        session: GatewaySession | None = None
        hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ['["local-gateway"]']}
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
                    conn.heartbeats.append((time.monotonic(), data))
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
        self._interactions[payload["token"]] = InteractionState(payload, dispatched_at)
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


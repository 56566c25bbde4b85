"""The REST routes the local Discord answers, and the CDN serving uploaded files."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from aiohttp import web

from tests.support.local_discord.payloads import (
    EPHEMERAL,
    INTERACTION_ACK_SECONDS,
    LOADING,
    DiscordError,
    now_iso,
    user_payload,
)
from tests.support.local_discord.rest import Handler, RecordedRequest, Rest, template_regex
from tests.support.local_discord.state import InteractionState


class Routes(Rest):
    """Users, application, gateway URL, commands, channel messages, reactions, polls, interaction callbacks and
    webhooks (followups), as Discord answers them."""

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
        self._routes = [(method, template_regex(path), handler) for method, path, handler in routes]

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

    # channels and messages -----------------------------------------------------------------------------------------
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
    def _interaction(self, token: str, interaction_id: str | None = None) -> InteractionState:
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
        elif kind in (6, 7) and "message" in state.payload:  # a component's @original is the message it is on
            state.original_id = int(state.payload["message"]["id"])
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


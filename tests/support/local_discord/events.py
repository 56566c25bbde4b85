"""Real-shaped payloads tests dispatch: slash commands (options typed from the synced tree), autocomplete, component
clicks, member messages and their edits and deletes, reactions, poll votes."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import discord

from tests.support.local_discord.payloads import ATTACHMENT_SIZE_LIMIT, MEMBER_PERMISSIONS, now_iso
from tests.support.local_discord.state import DiscordState, FakeGuild


class Events(DiscordState):
    """Builders for INTERACTION_CREATE, MESSAGE_*, MESSAGE_REACTION_* and MESSAGE_POLL_VOTE_* payloads."""

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
        roles: Iterable[str] = (),
        focused: str | None = None,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """An APPLICATION_COMMAND interaction for `/name [group] [subcommand] option:value ...`.

        `subcommand` is "sub" or "group sub". Option types come from the command tree the bot synced, so the
        values are plain Python values (a username / role name / channel name for user, role and channel
        options; `(filename, bytes)` for attachments). With `focused="option"` it is an autocomplete request.
        The member's permissions (in the channel, and in each channel option) are computed from the guild's
        roles and overwrites, as Discord does, with `roles` (names) held besides their own; `permissions`
        overrides the figure for the channel the command is typed in.
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
        payload = self._interaction_payload(kind, data, target, channel, member, permissions, locale, roles=roles)
        for option_channel in resolved.get("channels", {}).values():
            option_channel["permissions"] = str(target.permissions(payload["member"], option_channel["id"]))
        return payload

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
        roles: Iterable[str] = (),
    ) -> dict[str, Any]:
        if isinstance(permissions, discord.Permissions):
            permissions = permissions.value
        the_channel = guild.channel(channel)
        invoker = guild.member(member)
        invoker = {**invoker, "roles": [*invoker["roles"], *(guild.role(r)["id"] for r in roles)]}
        perms = str(guild.permissions(invoker, the_channel["id"]) if permissions is None else permissions)
        app_perms = str(guild.permissions(guild.member(self.application_id), the_channel["id"]))
        payload: dict[str, Any] = {
            "id": str(self.snowflake()), "application_id": str(self.application_id), "type": kind, "data": data,
            "guild_id": str(guild.id), "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": the_channel["id"], "channel": {**the_channel, "permissions": perms},
            "member": {**invoker, "permissions": perms}, "token": secrets.token_urlsafe(96),
            "version": 1, "app_permissions": app_perms, "locale": locale, "guild_locale": "en-US",
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


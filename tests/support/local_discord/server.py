"""`LocalDiscord`: one aiohttp application serving the REST API, the gateway and the CDN, composed of its parts."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.local_discord.events import Events
from tests.support.local_discord.gateway import Gateway
from tests.support.local_discord.payloads import API_PREFIX
from tests.support.local_discord.routes import Routes


class LocalDiscord(Routes, Gateway, Events):
    """The server and its state: guilds (one default, "Smallcaps HQ", with #general, #iwm-alerts, alice and bob),
    messages per channel, synced commands, gateway sessions, and every REST request the bot made."""

    def __init__(self, *, shard_count: int = 1, token: str = "local.discord.token") -> None:
        super().__init__(shard_count=shard_count, token=token)
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


"""A local stand-in for upstream HTTP providers: an aiohttp server on 127.0.0.1 whose answers tests script.

Each route answers from a queue of `Reply`s (the last one repeats), and every request is recorded, so a test
can say "first a 429, then a 500, then the real body" and count the upstream calls.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Reply:
    status: int = 200
    body: str | bytes = ""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a timeout, when longer than the client's)


class ProviderServer:
    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.requests: list[web.Request] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(self.app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def script(self, path: str, *replies: Reply) -> None:
        """Answer requests to `path` with these replies in turn; the last one repeats."""
        self.replies[path] = list(replies)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.calls[request.path] += 1
        queue = self.replies.get(request.path)
        if not queue:
            return web.Response(status=404, text="not scripted")
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        return web.Response(status=reply.status, body=body, headers={"Content-Type": reply.content_type,
                                                                       **reply.headers})

    async def __aenter__(self) -> ProviderServer:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()


class Clock:
    """A clock a test moves by hand (`clock.now += 60`), for TTLs and circuit breakers."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

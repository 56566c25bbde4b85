"""The REST side of the local Discord: every request recorded, checked against Discord's API description, answered
by a scripted fault or routed to its handler (routes.py)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.discord_schema import SchemaViolation, discord_schema
from tests.support.local_discord.payloads import API_PREFIX, DiscordError
from tests.support.local_discord.ratelimits import RateLimits
from tests.support.local_discord.state import DiscordState


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
        return self.method == method.upper() and template_regex(path).fullmatch(self.path) is not None

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
class Hold:
    """The next request matching `method` and `pattern` is handled (its effect is in the state) but its answer waits
    until `release` is set: a test kills the client meanwhile, as a crash right after Discord acted."""

    method: str
    pattern: re.Pattern[str]
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    request: RecordedRequest | None = None


Handler = Callable[..., Awaitable[Any]]


def template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)))


class Rest(DiscordState):
    """Recording, validation, faults and routing; the route table and its handlers are in `Routes`."""

    _routes: list[tuple[str, re.Pattern[str], Handler]]
    rate_limits: RateLimits | None = None  # off unless a test calls `enforce_rate_limits`

    # -- recorded requests ------------------------------------------------------------------------------------------
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
        self.faults.append(Fault(method.upper(), template_regex(path), status, count, retry_after, body))

    def hold_next(self, method: str, path: str) -> Hold:
        """Handle the next request matching METHOD + path template, then hold its answer (see Hold)."""
        hold = Hold(method.upper(), template_regex(path))
        self.holds.append(hold)
        return hold

    def enforce_rate_limits(self, limits: RateLimits | None = None) -> RateLimits:
        """From now on answer as Discord does over its global and per-route limits (ratelimits.py)."""
        self.rate_limits = limits or RateLimits()
        return self.rate_limits

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
            response = self._take_fault(rec) or self._over_rate_limit(rec) or await self._route(rec)
            if self.rate_limits is not None and response.status != 429:
                response.headers.update(self.rate_limits.headers(rec.method, rec.path))
            hold = next((h for h in self.holds if h.method == rec.method and h.pattern.fullmatch(rec.path)), None)
            if hold is not None:
                self.holds.remove(hold)
                hold.request = rec
                hold.reached.set()
                await hold.release.wait()
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

    def _over_rate_limit(self, rec: RecordedRequest) -> web.Response | None:
        limits = self.rate_limits
        limited = limits.check(rec.method, rec.path, rec.received_at) if limits is not None else None
        return None if limited is None else self._respond(rec, 429, *limited)

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


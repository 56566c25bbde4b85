"""Discord's rate limits, as the local Discord enforces them when a test turns them on (`enforce_rate_limits`).

What Discord documents (https://discord.com/developers/docs/topics/rate-limits), modelled here:
- the **global** limit: 50 requests a second per bot, across all its shards and processes; interaction callbacks
  and webhooks (`/interactions/...`, `/webhooks/...`) are exempt. Over it: 429 with `"global": true`, the headers
  `X-RateLimit-Global: true` and `X-RateLimit-Scope: global`, and no bucket headers.
- **per-route buckets**: here creating a message, 5 per 5 s per channel (the figure Discord answers for
  `POST /channels/{channel.id}/messages`). Every answer on a bucketed route carries `X-RateLimit-Limit`,
  `-Remaining`, `-Reset`, `-Reset-After` and `-Bucket`, which discord.py reads to wait before it runs out; over
  it: 429 with `"global": false` and `X-RateLimit-Scope: user`.
Every 429 has `Retry-After` and `Via` (without `Via` discord.py takes a 429 for a Cloudflare ban).
"""

from __future__ import annotations

import bisect
import math
import re
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

EXEMPT = re.compile(r"^/(interactions|webhooks)/")
MESSAGE_ROUTE = re.compile(r"^/channels/(?P<channel>\d+)/messages$")


@dataclass
class Bucket:
    resets_at: float  # time.monotonic()
    used: int = 0


@dataclass
class RateLimits:
    global_per_second: int = 50
    route_limit: int = 5
    route_window: float = 5.0
    global_429s: int = 0
    route_429s: int = 0
    _recent: deque[float] = field(default_factory=deque)  # monotonic times of the last seconds' counted requests
    _buckets: dict[str, Bucket] = field(default_factory=dict)

    def check(self, method: str, path: str,
              arrived: float | None = None) -> tuple[dict[str, Any], dict[str, str]] | None:
        """Count one request, as of when it `arrived` (time.monotonic(); default now): (429 body, headers) if it is
        over a limit, else None (then `headers` for the answer). Discord counts a request when it arrives, not when
        its upload is read: a busy local Discord that reads several uploads at once has not seen a burst."""
        if EXEMPT.match(path):
            return None
        now = time.monotonic() if arrived is None else arrived
        recent = self._recent  # sorted: a request may be counted after one that arrived later
        while recent and now - recent[0] >= 2.0:
            recent.popleft()
        first = bisect.bisect_right(recent, now - 1.0)  # the requests of the second up to `now`
        if bisect.bisect_right(recent, now) - first >= self.global_per_second:
            self.global_429s += 1
            retry = max(0.001, 1.0 - (now - recent[first]))
            return self._limited(retry, True, {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"})
        bisect.insort(recent, now)
        bucket = self._bucket(method, path, now)
        if bucket is None:
            return None
        if bucket.used >= self.route_limit:
            self.route_429s += 1
            retry = bucket.resets_at - now
            return self._limited(retry, False, {**self._bucket_headers(method, path, bucket, now),
                                                "X-RateLimit-Scope": "user"})
        bucket.used += 1
        return None

    def headers(self, method: str, path: str) -> dict[str, str]:
        """The bucket headers of an answered request on a bucketed route (none on other routes)."""
        now = time.monotonic()
        bucket = self._bucket(method, path, now)
        return {} if bucket is None else self._bucket_headers(method, path, bucket, now)

    def _bucket(self, method: str, path: str, now: float) -> Bucket | None:
        if method != "POST" or not MESSAGE_ROUTE.match(path):
            return None
        bucket = self._buckets.get(path)
        if bucket is None or now >= bucket.resets_at:
            bucket = self._buckets[path] = Bucket(now + self.route_window)
        return bucket

    def _bucket_headers(self, method: str, path: str, bucket: Bucket, now: float) -> dict[str, str]:
        reset_after = max(0.0, bucket.resets_at - now)
        return {
            "X-RateLimit-Limit": str(self.route_limit),
            "X-RateLimit-Remaining": str(max(0, self.route_limit - bucket.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"messages-{zlib.crc32(path.encode()):08x}",
        }

    @staticmethod
    def _limited(retry: float, is_global: bool, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        body = {"message": "You are being rate limited.", "retry_after": round(retry, 3), "global": is_global}
        return body, {**headers, "Retry-After": str(math.ceil(retry)), "Via": "1.1 google"}

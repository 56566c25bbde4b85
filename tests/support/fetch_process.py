"""Shard processes' data side, as real OS processes sharing one database: each builds the market data and the
documents from its environment as `app.open_resources` does (Settings.from_env, Database.from_settings,
build_providers, build_documents, the fetch deadline), and answers requests from its parent over stdin/stdout.

For the tests and the bench that run several processes against one PostgreSQL and one provider server; no Discord
(the bot's cogs hand the same calls to these services). `python tests/support/fetch_process.py` prints "ready", then
answers each JSON line on stdin, all of them concurrently, with a JSON line {"id": ..., "result": ...}:
  {"id": 1, "bars": ["IWM", "IWM", "SPY"]}  -> one entry per symbol asked, all asked at once
  {"id": 2, "refresh": "2026-08-04", "symbols": [...], "cookie_url": "..."}  -> {"complete": bool}
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
READY = b"ready\n"


class FetchProcess:
    """One such process, from its parent's side."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: Mapping[str, str], log: Path) -> FetchProcess:
        """Start one with the settings in `env` (DATABASE_URL, YAHOO_BASE_URL, ...); stderr goes to `log`."""
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
                "MARKET_DATA_PROVIDER": "yahoo", "LOG_LEVEL": "WARNING", **env}
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            proc = await asyncio.create_subprocess_exec(sys.executable, __file__, env=full, cwd=ROOT, stdin=-1,
                                                        stdout=-1, stderr=fd)
        finally:
            os.close(fd)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line != READY:
            proc.kill()
            raise RuntimeError(f"fetch process did not start: {line!r}; see {log}")
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, **request: Any) -> asyncio.Future[Any]:
        """Send one request now; the future is its result."""
        assert self.proc.stdin is not None
        n = next(self._ids)
        self._waiting[n] = asyncio.get_running_loop().create_future()
        self.proc.stdin.write(json.dumps({"id": n, **request}).encode() + b"\n")
        return self._waiting[n]

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply = json.loads(line)
            self._waiting.pop(reply["id"]).set_result(reply["result"])
        for future in self._waiting.values():
            future.set_exception(RuntimeError(f"fetch process {self.pid} ended"))

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as when the machine or the OOM killer stops it."""
        self.proc.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        """End of input: the process finishes what it was asked and exits (killed if it does not in 10 s)."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


# --- the process itself --------------------------------------------------------------------------------------

async def serve() -> None:
    import logging

    import aiohttp

    from services.config import Settings
    from services.documents import build_documents
    from services.http import Sources
    from services.market import MarketData, build_providers
    from services.members import daily_refresh
    from services.storage import Database

    settings = Settings.from_env(live_by_default=True)
    logging.basicConfig(level=settings.log_level, stream=sys.stderr)
    database = Database.from_settings(settings)
    await database.open()
    async with aiohttp.ClientSession(headers={"User-Agent": "smallcaps-bot/0.1"}) as session:
        sources = Sources()
        # No expected session: the served bars end on a bundled day, which is not the last session today.
        market = MarketData(build_providers(settings, session), database=database, ttl=settings.cache_ttl_seconds,
                            sources=sources, deadline=settings.fetch_deadline_seconds)
        documents = build_documents(settings, session, database, sources)

        async def bars(symbol: str) -> dict[str, Any]:
            start = time.perf_counter()
            got = await market.bars(symbol)
            return {"symbol": got.symbol, "source": got.source, "stale": got.stale, "as_of": got.as_of.isoformat(),
                    "adj_close": float(got.frame["adj_close"].iloc[-1]), "seconds": time.perf_counter() - start}

        async def handle(request: dict[str, Any]) -> None:
            result: Any
            if "bars" in request:
                result = await asyncio.gather(*(bars(s) for s in request["bars"]))
            else:
                complete = await daily_refresh(documents, database, request["symbols"],
                                               date.fromisoformat(request["refresh"]),
                                               holdings_url=settings.holdings_url,
                                               yahoo_base_url=settings.yahoo_base_url,
                                               yahoo_cookie_url=request["cookie_url"],
                                               close_symbols=request["close_symbols"], pause=0.0)
                result = {"complete": complete}
            sys.stdout.write(json.dumps({"id": request["id"], "result": result}) + "\n")
            sys.stdout.flush()

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        sys.stdout.write(READY.decode())
        sys.stdout.flush()
        tasks: set[asyncio.Task[None]] = set()
        while line := await reader.readline():
            task = asyncio.create_task(handle(json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    await database.close()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(serve())

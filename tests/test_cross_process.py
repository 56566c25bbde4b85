"""Several processes on one PostgreSQL: each symbol is fetched from upstream once however many processes ask, the
daily member refresh runs once, and a process killed (SIGKILL) while it holds a fetch's lease leaves it to lapse:
another process then fetches. Real OS processes (tests/support/fetch_process.py), one throwaway PostgreSQL schema,
one local provider server counting requests, real-format Yahoo bodies."""

from __future__ import annotations

import asyncio
import gzip
import math
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

import psycopg
from aiohttp import web

from services.lease import Leases
from services.market import read_bundled_csv
from services.storage import Database
from tests.support.fetch_process import FetchProcess
from tests.support.member_closes import BUNDLE_END, full_iwm_members, live_sessions, served
from tests.support.postgres import schema_url
from tests.support.provider_server import ProviderServer, Reply, yahoo_chart_body, yahoo_spark_body
from tests.support.yahoo_quote import YahooSession, member_rows, quote_body

SYMBOLS = ["IWM", "SPY", "QQQ", "PSCF", "PSCI", "PSCH", "PSCD", "PSCE", "PSCM", "PSCT"]  # bundled: real bars
REQUESTS = 100
HOLDINGS = gzip.decompress((Path(__file__).parents[1] / "services" / "data" / "IWM_holdings.2026-05-05.csv.gz")
                           .read_bytes()).decode()
HOLDINGS_PATH, QUOTE, CRUMB = "/holdings.csv", "/v7/finance/quote", "/v1/test/getcrumb"
DUMP, DAY = "2026-08-04", date(2026, 8, 4)
SPARK = "/v7/finance/spark"
KILL_DEADLINE = 4.0  # FETCH_DEADLINE_SECONDS in the kill test: a fetch's lease lasts half of it unrenewed


def chart(symbol: str) -> str:
    return f"/v8/finance/chart/{symbol}"


def served_adj_close(symbol: str) -> float:
    """The last adjusted close of the bars the provider serves for `symbol` (what every answer must show; the
    sector funds' bundled bars carry adjusted closes only)."""
    return float(read_bundled_csv(symbol).tail(30)["adj_close"].iloc[-1])


def serve_bars(server: ProviderServer, symbols: list[str], delay: float) -> None:
    for symbol in symbols:
        server.script(chart(symbol), Reply(body=yahoo_chart_body(read_bundled_csv(symbol).tail(30), symbol),
                                           delay=delay))


@asynccontextmanager
async def processes(n: int, url: str, server: ProviderServer, tmp_path: Path,
                    deadline: float = 8.0) -> AsyncIterator[list[FetchProcess]]:
    env = {"DATABASE_URL": url, "YAHOO_BASE_URL": server.url, "FETCH_DEADLINE_SECONDS": str(deadline),
           "IWM_HOLDINGS_URL": f"{server.url}{HOLDINGS_PATH}"}
    started = await asyncio.gather(*(FetchProcess.start(env, tmp_path / f"process{i}.log") for i in range(n)),
                                   return_exceptions=True)
    procs = [p for p in started if isinstance(p, FetchProcess)]
    try:
        if len(procs) < n:
            raise next(e for e in started if isinstance(e, BaseException))
        yield procs
    finally:
        for proc in procs:
            if proc.proc.returncode is None:
                proc.kill()
            await proc.close()


def leases(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT name, holder FROM leases ORDER BY name")]


async def test_three_processes_fetch_each_symbol_once_share_a_failure_and_run_the_member_refresh_once(postgres,
                                                                                                    tmp_path):
    async with ProviderServer() as server:
        serve_bars(server, SYMBOLS, delay=0.3)  # slow enough that every process asks while the first is fetching
        missing, asked_missing = "XBI", asyncio.Event()  # bundled: the answers fall back on it

        def not_found(request: web.Request) -> Reply:
            asked_missing.set()
            return Reply(status=404, body="{}", delay=0.5)  # "no such symbol", after a while

        server.handle(chart(missing), not_found)
        yahoo = YahooSession(server)
        members = list(member_rows(DUMP).index[:100])  # one batch of the refresh
        server.script(QUOTE, Reply(body=quote_body(members, DUMP)))
        server.script(HOLDINGS_PATH, Reply(body=HOLDINGS, content_type="text/csv"))
        closing = full_iwm_members(3)  # their closes on the sessions up to DAY, one spark batch
        sessions = [BUNDLE_END, *[d for d in live_sessions() if d <= DAY]]
        server.script(SPARK, Reply(body=yahoo_spark_body({s: served(s, sessions) for s in closing})))
        with schema_url(postgres) as url:
            async with processes(3, url, server, tmp_path) as procs:
                # 100 cold requests: request i asks for SYMBOLS[i % 10] in process i % 3, all at once
                asked = [[SYMBOLS[i % len(SYMBOLS)] for i in range(REQUESTS) if i % 3 == p] for p in range(3)]
                answers = await asyncio.gather(*(proc.send(bars=a) for proc, a in zip(procs, asked, strict=True)))

                assert {chart(s): server.calls[chart(s)] for s in SYMBOLS} == {chart(s): 1 for s in SYMBOLS}
                flat = [a for answer in answers for a in answer]
                assert len(flat) == REQUESTS
                assert [a["symbol"] for answer in answers for a in answer] == [s for a in asked for s in a]
                assert all(a["source"] == "yahoo" and not a["stale"] for a in flat)
                assert all(math.isclose(a["adj_close"], served_adj_close(a["symbol"]), abs_tol=1e-6)  # cached: %.6f
                           for a in flat)

                # a fetch that fails: the processes waiting on it share its answer and ask nothing themselves
                first = procs[0].send(bars=[missing])
                await asyncio.wait_for(asked_missing.wait(), 10)
                rest = [proc.send(bars=[missing]) for proc in procs[1:]]  # they find the lease held and wait
                failed = [a for answer in await asyncio.gather(first, *rest) for a in answer]
                assert server.calls[chart(missing)] == 1
                assert len(failed) == 3 and all(a["source"] == "bundled" and a["stale"] for a in failed)
                assert all(math.isclose(a["adj_close"], float(read_bundled_csv(missing)["adj_close"].iloc[-1]),
                                        abs_tol=1e-9) for a in failed)

                # the daily refresh, scheduled in every process at the same moment
                refreshed = await asyncio.gather(*(proc.send(refresh=DAY.isoformat(), symbols=members,
                                                             close_symbols=closing, cookie_url=yahoo.cookie_url)
                                                   for proc in procs))
                assert refreshed == [{"complete": True}] * 3
                # one process's run: the fundamentals' and the closes' Yahoo sessions each take a cookie and crumb
                assert (server.calls[QUOTE], server.calls[SPARK]) == (1, 1)
                assert (server.calls[CRUMB], server.calls["/"]) == (2, 2)
                assert server.calls[HOLDINGS_PATH] == 1
                with psycopg.connect(url) as conn:
                    stored = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT symbol, day, market_cap "
                                                                       "FROM member_snapshot")}
                expected = member_rows(DUMP)["market_cap"]
                assert stored == {s: (DAY.isoformat(), float(expected[s])) for s in members}
                # every holder let go, but the failed fetch's, kept to its time (then taken over) with its error
                with psycopg.connect(url) as conn:
                    assert conn.execute("SELECT name, error FROM leases").fetchall() == [
                        (f"bars_cache:{missing}", "yahoo: HTTP 404")]  # every provider's error


async def test_a_holder_killed_mid_fetch_leaves_its_lease_to_lapse_and_another_process_fetches(postgres, tmp_path):
    symbol = "KRE"
    async with ProviderServer() as server:
        serve_bars(server, [symbol], delay=0.0)
        first = asyncio.Event()

        def hang_first(request: web.Request) -> Reply | None:
            if first.is_set():
                return None  # the scripted bars
            first.set()
            return Reply(hang=True)  # the holder's request: it is killed while waiting for this

        server.handle(chart(symbol), hang_first)
        with schema_url(postgres) as url:
            async with processes(2, url, server, tmp_path, KILL_DEADLINE) as (holder, other):
                holder.send(bars=[symbol])
                await asyncio.wait_for(first.wait(), 10)  # the holder's request reached the provider
                [(name, held_by)] = leases(url)
                assert name == f"bars_cache:{symbol}" and held_by.startswith(f"{socket.gethostname()}:{holder.pid}:")
                waiting = other.send(bars=[symbol])
                await asyncio.sleep(0.3)  # the other process found the lease held and waits
                assert server.calls[chart(symbol)] == 1 and not waiting.done()

                holder.kill()
                await holder.proc.wait()
                assert leases(url) == [(name, held_by)]  # nobody let go: the row lapses by itself
                [answer] = await asyncio.wait_for(waiting, 2 * KILL_DEADLINE)
                assert answer["source"] == "yahoo" and not answer["stale"]
                assert math.isclose(answer["adj_close"], served_adj_close(symbol), abs_tol=1e-6)
                assert server.calls[chart(symbol)] == 2  # the dead holder's request and the one that took over
                assert leases(url) == []


async def test_a_lease_is_held_by_one_database_connection_at_a_time_until_it_lapses(database_target):
    """Two connections (two processes' databases): the second gets the lease only once the first lets go or its time
    runs out; a holder whose lease was taken over cannot renew or drop it. On SQLite every lease is granted."""
    async with Database(database_target) as one, Database(database_target) as two:
        first, second = Leases(one), Leases(two)
        if one.engine == "sqlite":
            assert not first.enabled and await first.take("k", 5) and await second.take("k", 5)
            return
        held = await first.take("k", 0.3)
        assert held is not None and await second.take("k", 5) is None and await second.held("k") == (True, None)
        assert await first.renew(held, 0.3)
        async with first.kept(held, 0.3):  # renewed while the work lasts, past its 0.3 s
            await asyncio.sleep(0.5)
            assert await second.take("k", 5) is None
        await asyncio.sleep(0.4)  # lapsed: the other takes it over
        taken = await second.take("k", 5)
        assert taken is not None and taken.holder != held.holder
        assert not await first.renew(held, 5)
        await first.release(held)  # not its lease any more: nothing happens
        assert await first.take("k", 5) is None
        await second.fail(taken, "HTTP 503")  # kept to its time, with the error for whoever waits on it
        assert await first.held("k") == (True, "HTTP 503") and await first.take("k", 5) is None
        await second.release(taken)
        assert await first.held("k") == (False, None) and await first.take("k", 5) is not None

"""Shared fixtures.

`discord_`: a local Discord (tests/support/local_discord/) that discord.py is pointed at.
`running_bot`: a factory starting the real SmallcapsBot against it: `bot, discord_ = await running_bot()`.
`resources`: the bot's resources as the console opens them; `database`, `renderer`, `server`, `session`.
`postgres`: the URL of a throwaway PostgreSQL server for the whole session (tests/support/postgres.py).
`database` runs each test on both engines: a SQLite file, and its own schema on that server (started on first
use). `database_target` is what `Database` opens; `engine_env` does the same for a `running_bot`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis  # noqa: F401  # imported up front: its pytest plugin imports it late otherwise, which trips a
import pytest  # CPython 3.11.7 bug ("AST constructor recursion depth mismatch") under assertion rewriting

from app import open_resources
from services.charts import Renderer
from services.config import Settings
from services.storage import Database
from tests.support.local_discord import LocalDiscord, pointed_at, smallcaps_bot
from tests.support.postgres import OPTIONAL_ENV, PostgresMissing, postgres_server, schema_url
from tests.support.provider_server import ProviderServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "discord_invalid_requests: the test sends Discord invalid requests on purpose; skip the check"
    )


@pytest.fixture
async def discord_(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AsyncIterator[LocalDiscord]:
    """A running local Discord; every request the bot sent is checked against Discord's API description at the end
    (mark a test `@pytest.mark.discord_invalid_requests` to skip that)."""
    async with LocalDiscord() as local:
        with pointed_at(local):
            yield local
        if request.node.get_closest_marker("discord_invalid_requests") is None:
            local.assert_requests_valid()


RunningBot = Callable[..., Awaitable[tuple[Any, LocalDiscord]]]


@pytest.fixture
async def running_bot(discord_: LocalDiscord, tmp_path: Path) -> AsyncIterator[RunningBot]:
    """`await running_bot(**env)` starts the real bot in-process (fake token, tmp database, bundled market data,
    commands synced to the local Discord's default guild), waits until it is ready and returns (bot, discord_).
    `env` overrides settings, e.g. `running_bot(DEV_GUILD_ID="")` for a global sync; the per-member render
    cooldown is off unless `RENDER_COOLDOWN_SECONDS` says otherwise. Stopped at teardown.

    Calling it again restarts: the running bot is stopped (cogs unloaded, database closed) and a new one starts on
    the same database. `await running_bot.stop()` stops it without starting another."""
    runner = BotRunner(discord_, tmp_path)
    try:
        yield runner
    finally:
        await runner.stop()


class BotRunner:
    """The `running_bot` fixture: starts, restarts and stops the real bot against the local Discord."""

    def __init__(self, discord_: LocalDiscord, tmp_path: Path) -> None:
        self.discord, self.tmp_path = discord_, tmp_path
        self._stack: AsyncExitStack | None = None

    async def __call__(self, **env: str) -> tuple[Any, LocalDiscord]:
        await self.stop()
        async with AsyncExitStack() as stack:
            bot = await stack.enter_async_context(smallcaps_bot(self.discord, {
                "DATABASE_PATH": str(self.tmp_path / "smallcaps.db"),
                "DEV_GUILD_ID": str(self.discord.guild.id),
                "MARKET_DATA_PROVIDER": "bundled",
                "RENDER_COOLDOWN_SECONDS": "0",  # tests run chart commands back to back as one member
                **env,
            }))
            self._stack = stack.pop_all()
        return bot, self.discord

    async def stop(self) -> None:
        """Stop the running bot (if any), then close its resources."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    """A local upstream HTTP server (tests/support/provider_server.py) whose answers the test scripts."""
    async with ProviderServer() as srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(params=ENGINES)
def database_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """A fresh database on each engine: a SQLite file, or a URL whose search_path is a new, empty schema."""
    if request.param == "sqlite":
        yield tmp_path / "test.db"
    else:
        with schema_url(request.getfixturevalue("postgres")) as url:
            yield url


@pytest.fixture(params=ENGINES)
def engine_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings that put a `running_bot` on each engine: {} (its SQLite file), or DATABASE_URL naming a new,
    empty schema on the session's PostgreSQL server. `await running_bot(**engine_env)`."""
    if request.param == "sqlite":
        yield {}
    else:
        with schema_url(request.getfixturevalue("postgres")) as url:
            yield {"DATABASE_URL": url}


@pytest.fixture
async def database(database_target: Path | str) -> AsyncIterator[Database]:
    async with Database(database_target) as db:
        yield db


@pytest.fixture
async def resources(tmp_path: Path) -> AsyncIterator[Any]:
    """The bot's resources as the console opens them (bundled data, charts rendered in a thread)."""
    async with open_resources(Settings(database_path=tmp_path / "resources.db"), render_processes=False) as res:
        yield res


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a unix socket, one per session; yields its URL. Fails without server
    binaries unless SMALLCAPS_POSTGRES_OPTIONAL=1 (then skips)."""
    try:
        with postgres_server() as url:
            yield url
    except PostgresMissing as exc:  # raised before the server starts, never after the yield
        if os.environ.get(OPTIONAL_ENV, "").strip().lower() not in ("1", "true", "yes"):
            raise
        pytest.skip(str(exc))


@pytest.fixture
async def renderer() -> AsyncIterator[Renderer]:
    r = Renderer()
    yield r
    r.close()

"""Property-based: whatever a member types, the bot accepts it or answers a clear ephemeral error."""

from __future__ import annotations

import asyncio
import shlex
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import EXTENSIONS, SmallcapsBot, open_resources
from console import answer, parse_command
from services.config import Settings
from services.errors import InputError

LAST_IWM = date(2026, 10, 5)  # the bundled IWM history; the first two bars are too few for levels


@pytest.fixture(scope="module")
def tree():
    async def build():
        bot = SmallcapsBot(Settings(), resources=None, background=False)  # type: ignore[arg-type]
        for ext in EXTENSIONS:
            await bot.load_extension(ext)
        return bot.tree

    return asyncio.run(build())


option_value = st.one_of(st.text(max_size=40), st.integers().map(str), st.floats().map(str),
                         st.dates().map(str), st.sampled_from(["", '"', "'", ":", "max", "1y", "<#123>"]))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
def test_any_text_parses_or_is_a_clear_input_error(tree, text):
    try:
        parse_command(tree, text)
    except InputError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(period=option_value, as_of=option_value)
def test_levels_options_parse_or_are_refused(tree, period, as_of):
    text = f"/iwm levels period:{period!r} as_of:{as_of!r}"
    try:
        _, kwargs = parse_command(tree, text)
    except InputError:
        return
    assert kwargs["period"] in ("3mo", "6mo", "1y", "2y", "5y", "max")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(day=st.one_of(st.dates(date(1900, 1, 1), date(2100, 1, 1)), st.text(max_size=12)))
async def test_any_as_of_is_answered_or_refused_ephemerally(resources, day):
    status, messages = await answer(resources, f"/iwm levels period:3mo as_of:{shlex.quote(str(day))}")
    (message,) = messages
    blank = isinstance(day, str) and not day.strip()  # an empty option means "latest", like leaving it out
    if blank or (isinstance(day, date) and date(2000, 5, 30) <= day <= LAST_IWM):
        assert status == 0 and message.embeds and message.files
    else:
        assert status == 2 and message.ephemeral and message.content.startswith("⚠️")


def leaf_commands(tree) -> list:
    from discord import app_commands

    def walk(node):
        for child in node.commands:
            yield from walk(child) if isinstance(child, app_commands.Group) else [child]

    return [c for root in tree.get_commands() for c in (walk(root) if isinstance(root, app_commands.Group) else [root])]


def option_strategy(param) -> st.SearchStrategy[str]:
    """Values as a member could send them: anything the option type allows and worse (the console is looser
    than Discord's client, which enforces types, choices and ranges before sending)."""
    from discord import AppCommandOptionType as T

    edge = st.sampled_from(["", " ", "0", "-1", "1e9", "nan", "inf", "2000-01-01", "1999-12-31", "2031-01-01",
                            "9999-99-99", "all", "on", "off", "IWM,SPY", "<#1>", "12:00", "25:61", "Monday"])
    if param.choices:
        base = st.sampled_from([str(c.value) for c in param.choices])
    elif param.type is T.integer:
        base = st.integers(-10**6, 10**6).map(str)
    elif param.type is T.number:
        base = st.floats(allow_nan=True, allow_infinity=True).map(str)
    elif param.type is T.boolean:
        base = st.sampled_from(["true", "false"])
    elif param.type in (T.channel, T.role, T.user, T.mentionable):
        base = st.integers(1, 2**63 - 1).map(str)
    else:
        base = st.text(max_size=60)
    return st.one_of(base, edge, st.text(max_size=20))


STATE_TABLES_SKIPPED = {"bars_cache", "documents_cache", "_meta"}  # caches may fill on any read


async def snapshot(resources) -> dict:
    def read(d):
        return {t: sorted(map(repr, d.execute(f"select * from [{t}]").fetchall()))
                for t in d.table_names() if t not in STATE_TABLES_SKIPPED}
    return await resources.database.run(read)


@pytest.mark.parametrize("name", [
    "levels", "valuation", "sectors", "breadth", "rates", "compare", "subscribe", "unsubscribe", "subscriptions",
    "setlevels", "poll", "poll-schedule", "poll-unschedule", "sentiment", "log", "community", "forget-me", "export",
    "status",
])
async def test_every_command_accepts_or_refuses_anything(tree, tmp_path, name):
    """For each command, random option values: status 0 (answered) or 2 (a clear ephemeral refusal that changed
    nothing); never a crash (status 1)."""
    (command,) = [c for c in leaf_commands(tree) if c.name == name]
    params = {p.display_name: p for p in command.parameters}
    strategies = {n: st.one_of(st.none(), option_strategy(p)) if not p.required else option_strategy(p)
                  for n, p in params.items()}
    async with open_resources(Settings(database_path=tmp_path / "p.db"), render_processes=False) as res:
        seen: list[int] = []

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
        @given(values=st.fixed_dictionaries(strategies))
        def check(values):
            text = f"/iwm {name} " + " ".join(f"{k}:{shlex.quote(v)}" for k, v in values.items() if v is not None)

            async def run():
                before = await snapshot(res)
                status, messages = await answer(res, text)
                if status == 2:
                    (message,) = messages
                    assert message.ephemeral and message.content.startswith("⚠️"), message.content
                    assert await snapshot(res) == before, f"{text!r} was refused but changed state"
                return status

            status = asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=120)
            assert status in (0, 2), text
            seen.append(status)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(check)
        assert seen

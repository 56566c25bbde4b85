"""Property-based: whatever a member types, the bot accepts it or answers a clear ephemeral error."""

from __future__ import annotations

import asyncio
import shlex
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import EXTENSIONS, SmallcapsBot, open_resources
from console import answer, parse_command
from services.config import Settings
from services.errors import InputError

LAST_IWM = date(2026, 8, 21)  # the bundled IWM history; the first two bars are too few for levels


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


@pytest.fixture
async def resources(tmp_path):
    async with open_resources(Settings(database_path=tmp_path / "b.db"), render_processes=False) as res:
        yield res


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

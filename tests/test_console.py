"""The console path: the real cog callbacks, answering offline on bundled data."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from console import answer, parse_command
from services.errors import InputError
from services.market import read_bundled_csv
from services.swing_levels import RULE, derived_zones, swing_levels
from tests.support.discord_schema import assert_within_embed_limits
from tests.support.local_discord import png_size

ROOT = Path(__file__).resolve().parent.parent


async def test_levels_through_the_console_path(resources, tmp_path):
    status, messages = await answer(resources, "/iwm levels period:6mo as_of:2025-09-26")
    assert status == 0 and len(messages) == 1
    message = messages[0]
    payload = message.payload(tmp_path)
    assert not payload["ephemeral"]
    (embed,) = payload["embeds"]
    assert_within_embed_limits(embed)
    assert embed["title"].startswith("IWM 241.34") and "testing resistance" in embed["title"]
    assert embed["image"]["url"] == "attachment://iwm-levels.png"
    assert "as of 2025-09-26" in embed["footer"]["text"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    nearest = swing_levels(read_bundled_csv("IWM"), date(2025, 9, 26))
    lines = fields["Derived levels (swing highs and lows, as of 2025-09-26)"].splitlines()
    assert lines == ([f"▲ {lv.describe()}" for lv in reversed(nearest) if lv.kind == "resistance"]
                     + ["— close 241.34 —"]
                     + [f"▼ {lv.describe()}" for lv in reversed(nearest) if lv.kind == "support"])
    zones = fields["Derived zones (`/iwm setlevels preset:derived` adopts them)"]
    assert zones.endswith(derived_zones(read_bundled_csv("IWM"), date(2025, 9, 26)).method)
    assert fields["Method"] == RULE
    (file,) = message.files
    assert file.filename == "iwm-levels.png"
    file.fp.seek(0)
    assert png_size(file.fp.read()) == (1280, 720)


@pytest.mark.parametrize("text", [
    "/iwm levels period:7y", "/iwm levels as_of:yesterday", "/iwm levels as_of:1990-01-01",
    "/iwm levels as_of:2031-01-01", "/iwm nothing", "/spy levels", "iwm levels", "/iwm", "/iwm levels bogus:1",
    '/iwm levels period:"1y',
])
async def test_bad_input_is_status_2_with_one_ephemeral_message(resources, text):
    status, messages = await answer(resources, text)
    assert status == 2
    (message,) = messages
    assert message.ephemeral and message.content.startswith("⚠️")
    assert not message.embeds and not message.files


async def test_levels_before_two_years_of_history_say_why_derived_levels_are_missing(resources, tmp_path):
    status, (message,) = await answer(resources, "/iwm levels as_of:2001-01-02")
    assert status == 0
    (embed,) = message.payload(tmp_path)["embeds"]
    assert_within_embed_limits(embed)
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Derived levels"].startswith("Not available: swing levels need 504 sessions of history")


async def test_unknown_command_lists_valid_ones(resources):
    _, (message,) = await answer(resources, "/iwm levls")
    assert "/iwm levels" in message.content


async def test_parse_command_converts_by_the_tree(resources):
    from app import EXTENSIONS, SmallcapsBot

    bot = SmallcapsBot(resources.settings, resources, background=False)
    for ext in EXTENSIONS:
        await bot.load_extension(ext)
    command, kwargs = parse_command(bot.tree, '/iwm levels period:2y as_of:"2024-01-05"')
    assert command.qualified_name == "iwm levels"
    assert kwargs == {"period": "2y", "as_of": "2024-01-05"}
    with pytest.raises(InputError, match="3mo, 6mo, 1y"):
        parse_command(bot.tree, "/iwm levels period:10y")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_PATH": str(cwd / "cli.db"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "bot.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_cli_json_reports_the_worked_example(tmp_path):
    """`python bot.py console --json "/iwm levels as_of:2025-09-26"`, as an operator runs it."""
    proc = run_cli("console", "--json", "--out", str(tmp_path / "out"), "/iwm levels as_of:2025-09-26",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert set(payload) == {"content", "embeds", "attachments", "components", "ephemeral"}
    (embed,) = payload["embeds"]
    text = json.dumps(embed)
    for expected in ["241.34", "testing resistance", "244.46", "242.56", "2021-11-08", "247.18", "2025-09-23",
                     "244.84", "2025-09-18", "**5** up months", "2025-09 (month to date)", "(none yet)"]:
        assert expected in text, expected
    (attachment,) = payload["attachments"]
    assert png_size(Path(attachment["path"]).read_bytes()) == (1280, 720)


def test_cli_bad_option_exits_2(tmp_path):
    proc = run_cli("console", "/iwm levels period:forever", cwd=tmp_path)
    assert proc.returncode == 2
    assert "period" in proc.stderr and "3mo" in proc.stderr


def test_no_token_says_how_to_get_one(tmp_path):
    proc = run_cli("run", cwd=tmp_path)
    assert proc.returncode == 1
    assert "DISCORD_TOKEN" in proc.stderr and "console" in proc.stderr


def test_an_unusable_database_is_one_clear_line(tmp_path):
    (tmp_path / "cli.db").mkdir()  # run_cli points DATABASE_PATH here
    proc = run_cli("console", "/iwm levels", cwd=tmp_path)
    assert proc.returncode == 1
    assert "cannot open database" in proc.stderr and "Traceback" not in proc.stderr


def test_the_console_keeps_its_own_database_and_says_where_state_went(tmp_path):
    """Without DATABASE_PATH the console writes ./smallcaps-console.db, never the bot's ./smallcaps.db; a command
    that changes state says so on one stderr line, one that only reads says nothing."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}

    def console(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "bot.py"), "console", command], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=120)

    changed = console("/iwm setlevels preset:article")
    assert changed.returncode == 0, changed.stderr
    assert (tmp_path / "smallcaps-console.db").is_file() and not (tmp_path / "smallcaps.db").exists()
    (line,) = changed.stderr.splitlines()
    assert "smallcaps-console.db" in line and "DATABASE_PATH" in line
    read = console("/iwm subscriptions")
    assert read.returncode == 0 and read.stderr == ""
    assert "support 200 · entry 205–220 · resistance 240–245" in read.stdout  # the state it saved is read back


def test_the_console_honours_database_path(tmp_path):
    proc = run_cli("console", "/iwm setlevels support:190 entry_low:200 entry_high:215 resistance_low:235 "
                   "resistance_high:240", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path / "cli.db") in proc.stderr and not (tmp_path / "smallcaps-console.db").exists()

"""The deployment examples in deploy/ (and .env.example) name only settings the bot reads, run the bot's real entry
point with arguments it accepts, and describe a shard layout the settings accept."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

import bot
from services.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NAME = re.compile(r"[A-Z][A-Z0-9_]*")


class Recording(dict[str, str]):
    """An environment that remembers every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def settings_names() -> set[str]:
    """Every variable services/config.py reads, found by letting it read an empty environment."""
    env = Recording()
    Settings.from_env(env)
    return env.asked


def blocks(text: str, indent: int) -> dict[str, str]:
    """The YAML blocks at this indentation (`name:` starting a line), each with its body."""
    found: dict[str, str] = {}
    for match in re.finditer(rf"^ {{{indent}}}([\w-]+):.*\n((?:(?: {{{indent + 1},}}.*)?\n)*)", text, re.M):
        found[match.group(1)] = match.group(2)
    return found


def env_keys(body: str) -> dict[str, str]:
    """`NAME: value` lines (environment entries) in a YAML body, values unquoted."""
    return {m.group(1): m.group(2).strip().strip('"') for m in
            re.finditer(r"^\s+([A-Z][A-Z0-9_]*):\s*(.*?)\s*(?:#.*)?$", body, re.M)}


def unit_lines(path: Path) -> Iterator[tuple[str, str]]:
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            yield key.strip(), value.strip()


def compose() -> tuple[dict[str, str], dict[str, str]]:
    text = (DEPLOY / "docker-compose.yml").read_text()
    return blocks(text, 0), blocks(blocks(text, 0)["services"], 2)


def test_every_variable_the_examples_set_is_one_the_bot_reads() -> None:
    names = settings_names()
    assert {"DISCORD_TOKEN", "DATABASE_URL", "SHARD_COUNT", "SHARD_IDS"} <= names
    top, services = compose()
    bots = {name: body for name, body in services.items() if "<<: *bot" in body}
    assert len(bots) >= 2
    for body in [top["x-bot-env"], *bots.values()]:
        assert set(env_keys(body)) <= names
    unit = DEPLOY / "systemd" / "smallcaps@.service"
    set_by_unit = {value.split("=", 1)[0] for key, value in unit_lines(unit) if key == "Environment"}
    assert set_by_unit == {"SHARD_IDS"}
    example = {key for key, _ in unit_lines(DEPLOY / "systemd" / "smallcaps.env.example")}
    assert {"DISCORD_TOKEN", "DATABASE_URL", "SHARD_COUNT"} <= example <= names
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert documented <= names, documented - names


def test_the_compose_shards_are_a_layout_the_settings_accept() -> None:
    """Every shard id 0..SHARD_COUNT-1 once, each service's settings valid, the database URL naming the
    postgres service's user and database."""
    top, services = compose()
    shared = env_keys(top["x-bot-env"])
    postgres = env_keys(services["postgres"])
    url = shared["DATABASE_URL"].replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "secret")
    assert url == f"postgresql://{postgres['POSTGRES_USER']}:secret@postgres:5432/{postgres['POSTGRES_DB']}"
    ids: list[int] = []
    for name, body in services.items():
        if "<<: *bot" not in body:
            continue
        assert "<<: *bot-env" in body, name
        settings = Settings.from_env({**shared, **env_keys(body), "DATABASE_URL": url})
        assert settings.shard_ids is not None and settings.database_url == url
        ids += settings.shard_ids
    assert sorted(ids) == list(range(int(shared["SHARD_COUNT"])))


@pytest.mark.parametrize("argv", [
    pytest.param(lambda: next(v for k, v in unit_lines(DEPLOY / "systemd" / "smallcaps@.service")
                              if k == "ExecStart"), id="systemd"),
    pytest.param(lambda: " ".join(json.loads(re.search(r"^CMD (.*)$", (DEPLOY / "Dockerfile").read_text(),
                                                       re.M).group(1))), id="docker"),  # type: ignore[union-attr]
])
def test_the_examples_start_the_bot_the_way_bot_py_runs_it(argv) -> None:
    """systemd runs `./run bot run` (the run script hands `bot ARGS` to `python bot.py ARGS`), the image
    `python bot.py run`: both end in arguments bot.py accepts, in its `run` mode."""
    words = shlex.split(argv())
    if words[0].endswith("/run"):
        assert words[1] == "bot" and re.search(r'^\s*bot\)\s.*python" bot\.py "\$@"', (ROOT / "run").read_text(), re.M)
        args = words[2:]
    else:
        assert words[:2] == ["python", "bot.py"]
        args = words[2:]
    assert bot.parse_args(args).mode == "run"


def test_the_target_gathers_the_shard_units() -> None:
    unit = dict(unit_lines(DEPLOY / "systemd" / "smallcaps@.service"))
    assert unit["WantedBy"] == "smallcaps.target" and unit["PartOf"] == "smallcaps.target"
    assert (DEPLOY / "systemd" / "smallcaps.target").exists()

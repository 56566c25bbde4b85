"""`/iwm help` is made from the command tree, and the README's command list is the same text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from app import EXTENSIONS, SmallcapsBot
from cogs.help import help_embed, help_groups, help_markdown

README = Path(__file__).parents[1] / "README.md"
BLOCK = re.compile(r"<!-- iwm help: start -->\n\n(.*?)\n\n<!-- iwm help: end -->", re.S)


async def groups_of(resources: Any) -> list[tuple[str, list[str]]]:
    bot = SmallcapsBot(resources.settings, resources, background=False)
    for extension in EXTENSIONS:
        await bot.load_extension(extension)
    try:
        return help_groups(bot)
    finally:
        for extension in EXTENSIONS:
            await bot.unload_extension(extension)


async def test_the_readme_command_list_is_the_help_text(resources: Any) -> None:
    """Regenerate the README block from the failure message after a command changes."""
    text = help_markdown(await groups_of(resources))
    found = BLOCK.search(README.read_text(encoding="utf-8"))
    assert found, "README.md has no `<!-- iwm help: start -->` ... `<!-- iwm help: end -->` block"
    assert found.group(1) == text, f"README's command list differs from /iwm help; it should read:\n\n{text}"


async def test_help_lists_every_command_once_with_who_may_use_it(resources: Any) -> None:
    groups = await groups_of(resources)
    lines = [line for _, group in groups for line in group]
    names = [re.match(r"`(/iwm [\w-]+(?: [\w-]+)?)", line).group(1) for line in lines]  # type: ignore[union-attr]
    assert len(names) == len(set(names)) and "/iwm levels" in names and "/iwm help" in names
    by_name = dict(zip(names, lines, strict=True))
    assert "· Manage Channels:" in by_name["/iwm subscribe"]
    assert "· Manage Messages:" in by_name["/iwm poll"]
    assert "· Manage Server:" in by_name["/iwm export"]
    assert "· everyone:" in by_name["/iwm levels"]
    embed = help_embed(groups).to_dict()
    assert [f["name"] for f in embed["fields"]] == [name for name, _ in groups]
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])

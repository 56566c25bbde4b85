"""The real bot as Discord runs it: started in-process against the local Discord (tests/support/local_discord/).

What this module proves: start-up (login, READY, command sync) and the synced command tree; that every slash
command in that tree is acknowledged within Discord's 3-second window, answers with its embed (and chart), and
refuses a bad input with an ephemeral error that changes nothing; that a failing command gets a short ephemeral
error and the bot keeps serving; that `/iwm status` lists every live source once used (market data providers and
document hosts, through the local provider server); that the harness catches a command that forgets to defer and
an embed Discord refuses; that state survives a restart and the bot syncs globally only when its tree changed;
that the token never reaches a log line or a message.

Snapshot: the command tree the bot syncs (names, descriptions, options with their types/choices/required,
default_member_permissions, contexts, ...) is kept in tests/snapshots/command_tree.json together with the
EXTENSIONS it came from, so an accidental change to any command fails `test_command_tree_matches_the_snapshot`.
After an intended change, regenerate it and review the diff:

    UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_discord_bot.py -k snapshot
    git diff tests/snapshots/command_tree.json

Adding a command? Give it examples in EXAMPLES below, or `test_every_command_answers_in_time` says it is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands

from app import EXTENSIONS, RedactToken, SmallcapsBot
from cogs.common import IwmCog, add_iwm_cog
from cogs.errors import error_text
from services.bundled import bundled_text
from tests.support.discord_helpers import (
    MODERATOR,
    PNG_MAGIC,
    Answer,
    answer_of,
    assert_acknowledged_in_time,
    assert_refused,
    invoke,
    levels,
    stored_rows,
)
from tests.support.discord_schema import SchemaViolation
from tests.support.fred import fred_replies
from tests.support.local_discord import (
    EPHEMERAL,
    LocalDiscord,
    RecordedRequest,
)
from tests.support.provider_server import ProviderServer, Reply
from tests.support.snapshot import assert_snapshot

# --- answers ------------------------------------------------------------------------------------------------

def assert_answered(answer: Answer, *, embed: bool, chart: str | None, ephemeral: bool,
                    file: str | None = None) -> None:
    """In time, every response accepted, the embed there, the chart attached as the embed says, and no other file
    than the chart and one matching the `file` pattern."""
    assert_acknowledged_in_time(answer.handle)
    assert all(r.status is not None and r.status < 300 for r in answer.handle.responses()), answer.handle.responses()
    assert answer.ephemeral == ephemeral, answer.body
    assert answer.content or answer.embeds or answer.body.get("poll") or answer.files, f"empty answer {answer.body}"
    assert not answer.content.startswith(("⚠", "⛔", "❌")), answer.content
    if embed:
        assert answer.embeds and all(e.get("title") or e.get("description") for e in answer.embeds), answer.body
    files = {f.filename: f for f in answer.files}
    for e in answer.embeds:  # an embed image points at an attachment of the same message
        url = (e.get("image") or {}).get("url", "")
        if url.startswith("attachment://"):
            assert url.removeprefix("attachment://") in files, (url, list(files))
    if chart:
        assert chart in files, f"no {chart} attached: {list(files)}"
        assert any((e.get("image") or {}).get("url") == f"attachment://{chart}" for e in answer.embeds)
    for name, part in files.items():
        assert name == chart or (file and re.fullmatch(file, name)), f"unexpected attachment {name}"
        assert part.data, f"{name} is empty"
        if name.endswith(".png"):
            assert part.data.startswith(PNG_MAGIC) and len(part.data) > 1000, f"{name} is not a chart"



def cog_module(bot: SmallcapsBot, cog: str) -> Any:
    """The module a loaded cog runs from: `load_extension` executes a fresh copy of it, so patch this one."""
    return sys.modules[type(bot.get_cog(cog)).__module__]


def channel_posts(discord_: LocalDiscord, after: int = 0) -> list[RecordedRequest]:
    return [r for r in discord_.requests[after:] if r.matches("POST", "/channels/{channel_id}/messages")]


# --- examples for every command -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One invocation: the options as a member types them; `manage`: the member has Manage Channels."""

    options: dict[str, Any] = field(default_factory=dict)
    manage: bool = False


@dataclass(frozen=True)
class Examples:
    valid: tuple[Call, ...]
    bad: Call | None  # a bad input (or a member lacking a permission): an ephemeral error, nothing changes
    embed: bool = True  # the answer carries an embed
    chart: str | None = None  # the PNG the answer attaches (and its embed shows)
    ephemeral: bool = False
    file: str | None = None  # a pattern for another attachment the answer carries



EXAMPLES: dict[str, Examples] = {
    "iwm levels": Examples(
        valid=(Call({"period": "6mo", "as_of": "2025-09-26"}), Call()),
        bad=Call({"as_of": "26/09/2025"}), chart="iwm-levels.png"),
    "iwm valuation": Examples(
        valid=(Call(), Call({"as_of": "2025-09-26"})), bad=Call({"as_of": "2999-01-01"}), chart="iwm-valuation.png"),
    "iwm sectors": Examples(
        valid=(Call({"period": "1y"}),), bad=Call({"as_of": "yesterday"}), chart="iwm-sectors.png"),
    "iwm breadth": Examples(
        valid=(Call(), Call({"period": "3mo", "as_of": "2025-09-26"})), bad=Call({"as_of": "2026-08-03"}),
        chart="iwm-breadth.png"),
    "iwm rates": Examples(valid=(Call(),), bad=Call({"as_of": "2999-01-01"}), chart="iwm-rates.png"),
    "iwm compare": Examples(
        valid=(Call({"since": "2021-11-08", "symbols": "IWM,SPY"}),),
        bad=Call({"since": "2025-01-02", "as_of": "2024-01-02"}), chart="iwm-compare.png"),
    "iwm subscribe": Examples(
        valid=(Call({"channel": "iwm-alerts", "events": "breakout, new_high", "role": "Member"}, manage=True),),
        bad=Call({"events": "moonshot"}, manage=True), embed=False, ephemeral=True),
    "iwm unsubscribe": Examples(  # bad: a member without Manage Channels (after subscribe: nothing is removed)
        valid=(Call({"channel": "iwm-alerts"}, manage=True),), bad=Call({"channel": "iwm-alerts"}),
        embed=False, ephemeral=True),
    "iwm subscriptions": Examples(valid=(Call(),), bad=None, ephemeral=True),
    "iwm setlevels": Examples(
        valid=(Call(levels(190, 200, 215, 235, 240), manage=True),),
        bad=Call(levels(210, 205, 220, 240, 245), manage=True), embed=False, ephemeral=True),
    "iwm poll": Examples(  # the answer is a native poll
        valid=(Call({"question": "Where is IWM in a month?", "hours": 24}, manage=True),), bad=Call(), embed=False),
    "iwm poll-schedule": Examples(
        valid=(Call({"weekday": 0, "time": "14:00"}, manage=True),),
        bad=Call({"weekday": 0, "time": "25:99"}, manage=True), embed=False, ephemeral=True),
    "iwm poll-unschedule": Examples(  # bad: without Manage Messages (after poll-schedule: nothing is removed)
        valid=(Call(manage=True),), bad=Call(), embed=False, ephemeral=True),
    "iwm sentiment": Examples(valid=(Call({"weeks": 12}),), bad=None, chart="iwm-sentiment.png"),
    "iwm log": Examples(
        valid=(Call({"state": "on", "channel": "general"}, manage=True),), bad=Call({"state": "off"}),
        embed=False, ephemeral=True),
    "iwm community": Examples(valid=(Call({"days": 30}),), bad=None, chart="iwm-community.png"),
    "iwm forget-me": Examples(valid=(Call(),), bad=None, embed=False, ephemeral=True),  # asks to confirm first
    "iwm export": Examples(
        valid=(Call({"days": 30}, manage=True),), bad=Call({"days": 30}), embed=False, ephemeral=True,
        file=r"community-\d+-30d\.csv"),
    "iwm status": Examples(valid=(Call(),), bad=None, ephemeral=True),
    "iwm help": Examples(valid=(Call(),), bad=None, ephemeral=True),
}


def leaf_commands(commands: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(root, "sub" / "group sub" / None) for every chat-input command a member can run, in synced order."""
    leaves: list[tuple[str, str | None]] = []

    def walk(root: str, path: list[str], node: dict[str, Any]) -> None:
        children = [o for o in node.get("options") or [] if o["type"] in (1, 2)]
        if not children:
            leaves.append((root, " ".join(path) or None))
        for child in children:
            walk(root, [*path, child["name"]], child)

    for command in commands:
        if command.get("type", 1) == 1:
            walk(command["name"], [], command)
    return leaves


# --- throwaway commands, to prove the harness catches mistakes --------------------------------------------------

class Throwaway(IwmCog):
    """Commands that misbehave on purpose; added only by the tests that use them, never part of the bot."""

    @app_commands.command(name="slow", description="Does 3.5 s of work before answering, without deferring")
    async def slow(self, interaction: discord.Interaction) -> None:
        await asyncio.sleep(3.5)
        await interaction.response.send_message(embed=discord.Embed(title="done, too late"))

    @app_commands.command(name="broken", description="Answers with an embed whose title is over 256 characters")
    async def broken(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(embed=discord.Embed(title="x" * 300))


@contextmanager
def throwaway_commands() -> Iterator[None]:
    """Bots started inside this block also carry the Throwaway cog (added just before the command sync)."""
    original = SmallcapsBot.sync_commands

    async def sync_with_throwaway(self: SmallcapsBot) -> None:
        await add_iwm_cog(self, Throwaway(self))
        await original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SmallcapsBot, "sync_commands", sync_with_throwaway)
        yield


# --- tests ---------------------------------------------------------------------------------------------------

async def test_start_up_logs_in_identifies_and_syncs(running_bot: Any) -> None:
    """Login with the token, IDENTIFY with the default intents, READY + GUILD_CREATE, one sync to DEV_GUILD_ID."""
    bot, discord_ = await running_bot()
    assert bot.is_ready() and bot.user.id == discord_.application_id
    (me,) = discord_.requests_to("GET", "/users/@me")
    assert me.status == 200 and me.headers["Authorization"] == f"Bot {discord_.token}"
    assert [r.status for r in discord_.requests_to("GET", "/gateway/bot")] == [200]
    session = discord_.session_for()
    assert session.identify["token"] == discord_.token
    assert session.identify["intents"] == discord.Intents.default().value  # no privileged intent by default
    assert [f["t"] for f in session.events] == ["READY", "GUILD_CREATE"]
    assert bot.get_guild(discord_.guild.id) is not None

    (sync,) = discord_.requests_to("PUT", "/applications/{app}/guilds/{guild}/commands")
    assert sync.status == 200 and sync.path.endswith(f"/guilds/{discord_.guild.id}/commands")
    assert not discord_.requests_to("PUT", "/applications/{app}/commands")  # DEV_GUILD_ID: no global sync
    assert [c["name"] for c in discord_.synced_commands(discord_.guild)] == ["iwm"]
    synced = {sub for _, sub in leaf_commands(discord_.synced_commands(discord_.guild))}
    assert synced == {c.name for c in bot.iwm.walk_commands()}


async def test_command_tree_matches_the_snapshot(running_bot: Any) -> None:
    """The tree as synced to Discord, from the current EXTENSIONS, equals tests/snapshots/command_tree.json."""
    _, discord_ = await running_bot()
    (sync,) = discord_.requests_to("PUT", "/applications/{app}/guilds/{guild}/commands")
    assert_snapshot("command_tree", {"extensions": list(EXTENSIONS), "commands": sync.json},
                    hint=f"the tree synced from EXTENSIONS {list(EXTENSIONS)} changed")


async def test_every_command_answers_in_time_and_refuses_bad_input(running_bot: Any) -> None:
    """For each command in the synced tree: valid examples are acknowledged within 3 s and answered with their
    embed (and chart); the bad example gets an ephemeral error and changes no stored state and posts nothing."""
    bot, discord_ = await running_bot()
    leaves = leaf_commands(discord_.synced_commands(discord_.guild))
    names = [f"{root} {sub}" if sub else root for root, sub in leaves]
    missing = [n for n in names if n not in EXAMPLES]
    assert not missing, f"no examples for /{', /'.join(missing)}: add them to EXAMPLES in {__name__}"

    failures: list[str] = []
    for (root, sub), name in zip(leaves, names, strict=True):
        examples = EXAMPLES[name]
        if examples.bad is not None:
            before, posts = await stored_rows(bot), len(discord_.requests)
            try:
                answer = await invoke(discord_, sub or "", examples.bad.options, manage=examples.bad.manage,
                                      root=root)
                assert_refused(answer)
                assert await stored_rows(bot) == before, "the refused call changed stored state"
                assert not channel_posts(discord_, posts), "the refused call posted in a channel"
            except (AssertionError, TimeoutError) as exc:
                failures.append(f"/{name} {examples.bad}: {exc}")
        for call in examples.valid:
            try:
                answer = await invoke(discord_, sub or "", call.options, manage=call.manage, root=root)
                assert_answered(answer, embed=examples.embed, chart=examples.chart, ephemeral=examples.ephemeral,
                                file=examples.file)
            except (AssertionError, TimeoutError) as exc:
                failures.append(f"/{name} {call}: {exc}")
    assert not failures, "\n".join(failures)


# Commands about a server's own state (subscriptions, polls, the log): in a DM they refuse (as needing a server,
# or a server permission), the others answer.
SERVER_ONLY = {"iwm subscribe", "iwm unsubscribe", "iwm subscriptions", "iwm setlevels", "iwm poll",
               "iwm poll-schedule", "iwm poll-unschedule", "iwm sentiment", "iwm log", "iwm community",
               "iwm forget-me", "iwm export"}


async def test_commands_in_a_dm_answer_or_say_they_need_a_server(running_bot: Any) -> None:
    """Every command run from a DM: those about a server's state refuse with a short ephemeral "only works in a
    server" (or, for moderator commands, the missing permission) and change nothing; the market commands answer
    as usual."""
    bot, discord_ = await running_bot()
    failures: list[str] = []
    for root, sub in leaf_commands(discord_.synced_commands(discord_.guild)):
        name = f"{root} {sub}" if sub else root
        examples = EXAMPLES[name]
        call = examples.valid[0]
        before = await stored_rows(bot)
        try:
            payload = discord_.slash_command(root, sub, call.options,
                                             permissions=MODERATOR if call.manage else None)
            answer = await answer_of(await discord_.dispatch_interaction(discord_.in_a_dm(payload)))
            if name in SERVER_ONLY:
                assert_refused(answer)
                assert answer.content.startswith("⛔"), answer.content  # an expected refusal, not a failure
                assert await stored_rows(bot) == before, "the refused call changed stored state"
            else:
                assert_answered(answer, embed=examples.embed, chart=examples.chart, ephemeral=examples.ephemeral,
                                file=examples.file)
        except (AssertionError, TimeoutError) as exc:
            failures.append(f"/{name} in a DM: {exc}")
    assert not failures, "\n".join(failures)


async def test_a_failing_service_gets_a_short_error_and_the_bot_keeps_serving(
    running_bot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service that raises: the member gets the short ephemeral error (no traceback, no exception text); the
    next commands are served normally."""
    bot, discord_ = await running_bot()
    levels_cog = cog_module(bot, "Levels")
    original = levels_cog.levels_answer

    async def exploding(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("upstream exploded: internal detail")

    monkeypatch.setattr(levels_cog, "levels_answer", exploding)
    failed = await invoke(discord_, "levels", {"period": "1y"})
    assert_acknowledged_in_time(failed.handle)
    assert failed.callback.json == {"type": 5}  # deferred before the service ran
    # Discord shows the first followup after a public defer with the defer's visibility, so the bot deletes the
    # public "thinking" placeholder first and then sends the error as a new ephemeral message.
    assert [(r.method, r.status) for r in failed.handle.responses()] == [("POST", 200), ("DELETE", 204), ("POST", 200)]
    assert failed.handle.responses()[1].path.endswith("/messages/@original")
    assert failed.final.status == 200 and failed.ephemeral
    assert [m["content"] for m in discord_.channel_messages(failed.handle.payload["channel_id"])] == [failed.content]
    assert failed.content == error_text(RuntimeError()) and "internal detail" not in failed.content
    assert not failed.embeds and not failed.files

    monkeypatch.setattr(levels_cog, "levels_answer", original)
    assert_answered(await invoke(discord_, "levels", {"period": "3mo"}), embed=True, chart="iwm-levels.png",
                    ephemeral=False)
    assert_answered(await invoke(discord_, "status"), embed=True, chart=None, ephemeral=True)
    assert bot.is_ready() and not bot.is_closed()


async def test_status_lists_every_live_source_once_used(running_bot: Any, server: ProviderServer) -> None:
    """With live sources (all on the local provider server): Yahoo's chart API answers 500 (the bundled history
    answers, stale), FRED and iShares answer real-format bodies, Yahoo's quoteSummary 404 (a "not found", which
    counts against that symbol, not the source). `/iwm status` lists the market data provider from the start and
    each document host after a command used it, with its state and last error."""
    for symbol in ("IWM", "SPY", "QQQ", "^RUT", "KRE", "XBI", "PSCC", "PSCD", "PSCE", "PSCF", "PSCH", "PSCI", "PSCM",
                   "PSCT", "PSCU"):
        server.script(f"/v8/finance/chart/{symbol}", Reply(status=500))
    server.script("/graph/fredgraph.csv", *fred_replies())  # /iwm rates asks FEDFUNDS, then 5 daily series
    server.script("/holdings.csv", Reply(body=bundled_text("IWM_holdings.2026-05-05.csv.gz"), content_type="text/csv"))
    _, discord_ = await running_bot(MARKET_DATA_PROVIDER="yahoo", YAHOO_BASE_URL=server.url,
                                    FRED_BASE_URL=server.url, IWM_HOLDINGS_URL=f"{server.url}/holdings.csv")

    async def status_fields() -> dict[str, list[str]]:
        answer = await invoke(discord_, "status")
        assert_answered(answer, embed=True, chart=None, ephemeral=True)
        return {f["name"]: f["value"].split("\n") for f in answer.embeds[0]["fields"]}

    before = await status_fields()
    # yahoo is listed from the start (its state depends on whether the alert watcher has asked it yet)
    assert [line.split(":")[0] for line in before["Live providers"]] == ["**yahoo**"]
    assert "Document sources" not in before

    for command in ("rates", "sectors", "valuation"):
        assert_answered(await invoke(discord_, command), embed=True, chart=f"iwm-{command}.png", ephemeral=False)
    assert server.calls["/graph/fredgraph.csv"] == 6 and server.calls["/holdings.csv"] == 1
    assert server.calls["/v10/finance/quoteSummary/IWM"] >= 1 and server.calls["/v8/finance/chart/IWM"] >= 1

    after = await status_fields()
    assert after["Live providers"] == [
        "**yahoo**: resting after failures · last success never · last error: HTTP 500"]
    fred, ishares, quote_summary = after["Document sources"]
    assert re.fullmatch(r"\*\*FRED\*\*: OK · last success \d+s ago", fred), fred
    assert re.fullmatch(r"\*\*iShares\*\*: OK · last success \d+s ago", ishares), ishares
    assert quote_summary == "**Yahoo quoteSummary**: OK · last success never · last error: HTTP 404"


async def test_status_names_the_process_its_shards_and_its_database(running_bot: Any, discord_: LocalDiscord,
                                                                    tmp_path: Path) -> None:
    """A process running shard 1 of 2 says so in `/iwm status`, with its pid and host (to tell shard processes
    apart) and its database by file name only: no directory of the operator's machine."""
    discord_.shard_count = 2
    guild = discord_.add_guild("Shard one", shard=(1, 2))
    await running_bot(SHARD_COUNT="2", SHARD_IDS="1", DEV_GUILD_ID=str(guild.id),
                      DATABASE_PATH=str(tmp_path / "shard1.db"))
    answer = await invoke(discord_, "status", guild=guild)
    assert_answered(answer, embed=True, chart=None, ephemeral=True)
    fields = {f["name"]: f["value"] for f in answer.embeds[0]["fields"]}
    assert fields["Process"].split("\n") == [
        "shard 1 of 2", f"pid {os.getpid()} on {socket.gethostname()}", "database SQLite shard1.db"]
    assert str(tmp_path) not in json.dumps(answer.embeds)


async def test_harness_catches_a_command_that_forgets_to_defer(running_bot: Any) -> None:
    """A command doing 3.5 s of work before its first response: the local Discord refuses the late callback
    (404 Unknown interaction, as Discord does) and the 3-second check used for every command fails on it."""
    with throwaway_commands():
        _, discord_ = await running_bot()
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "slow"))
    late, retried = await handle.wait_for_responses(2, timeout=10)  # the answer, then the error message
    assert late.path.endswith("/callback") and late.status == 404
    assert late.response == {"message": "Unknown interaction", "code": 10062}
    assert retried.path.endswith("/callback") and retried.status == 404  # the error reply is too late as well
    with pytest.raises(AssertionError, match="first callback after 3"):
        assert_acknowledged_in_time(handle)
    assert not discord_.channel_messages(handle.payload["channel_id"])  # the member saw nothing


@pytest.mark.discord_invalid_requests
async def test_harness_flags_an_embed_discord_refuses(running_bot: Any) -> None:
    """An embed title over 256 characters: refused with 400 like Discord would, listed in `problems()` (so the
    teardown check fails any test that sends one); the member still gets the short error."""
    with throwaway_commands():
        _, discord_ = await running_bot()
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "broken"))
    refused, error = await handle.wait_for_responses(2)
    assert refused.status == 400 and refused.response["code"] == 50035
    assert any("embeds[0].title" in p and "too long" in p for p in refused.problems)
    assert any("embeds[0].title" in p for p in discord_.problems())
    with pytest.raises(SchemaViolation, match=r"embeds\[0\]\.title"):
        discord_.assert_requests_valid()
    assert error.status == 200 and error.json["data"]["flags"] == EPHEMERAL
    assert error.json["data"]["content"] == error_text(RuntimeError())


async def test_state_survives_a_restart(running_bot: Any) -> None:
    """A subscription and per-guild levels set through commands are there after a stop and a new start on the
    same database, and the levels answer uses the guild's levels."""
    bot, discord_ = await running_bot()
    guild = discord_.guild
    channel, role = guild.channel("iwm-alerts")["id"], guild.role("Member")["id"]
    subscribed = await invoke(discord_, "subscribe", {"channel": "iwm-alerts", "events": "breakout new_high",
                                                      "role": "Member"}, manage=True)
    assert subscribed.content == f"✅ <#{channel}> will get: breakout, new_high and mention <@&{role}>."
    await invoke(discord_, "setlevels", levels(190, 200, 215, 235, 240), manage=True)

    restarted, _ = await running_bot()
    assert restarted is not bot and bot.is_closed() and restarted.is_ready()
    assert len(discord_.sessions) == 2  # a new process identifies anew
    listed = await invoke(discord_, "subscriptions")
    (embed,) = listed.embeds
    assert embed["description"] == f"<#{channel}>: breakout, new_high · mentions <@&{role}> · active"
    assert embed["fields"][0]["value"] == "support 190 · entry 200–215 · resistance 235–240"
    answer = await invoke(discord_, "levels", {"period": "3mo", "as_of": "2025-09-26"})
    zones = next(f["value"] for f in answer.embeds[0]["fields"] if f["name"] == "Zones")
    assert zones.startswith("Resistance 235–240: top at 240.00")


async def test_global_sync_only_when_the_tree_changed(running_bot: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Without DEV_GUILD_ID: the first start syncs globally and stores the tree's hash; a restart with the same
    tree does not sync; a changed tree (an extra command) does, and so does changing it back."""
    caplog.set_level(logging.INFO, logger="smallcaps")

    def global_syncs() -> list[RecordedRequest]:
        return discord_.requests_to("PUT", "/applications/{app}/commands")

    bot, discord_ = await running_bot(DEV_GUILD_ID="")
    assert len(global_syncs()) == 1 and global_syncs()[0].status == 200
    assert not discord_.requests_to("PUT", "/applications/{app}/guilds/{guild}/commands")
    stored = await bot.resources.database.run(
        lambda db: db["_meta"].get("command_tree_hash")["value"])  # type: ignore[union-attr]
    assert stored == bot.command_tree_hash()

    await running_bot(DEV_GUILD_ID="")
    assert len(global_syncs()) == 1
    assert "command tree unchanged since the last global sync; not syncing" in caplog.messages

    with throwaway_commands():
        await running_bot(DEV_GUILD_ID="")
    assert len(global_syncs()) == 2
    (iwm,) = discord_.synced_commands(None)
    assert {"slow", "broken"} <= {o["name"] for o in iwm["options"]}

    await running_bot(DEV_GUILD_ID="")
    assert len(global_syncs()) == 3
    (iwm,) = discord_.synced_commands(None)
    assert not {"slow", "broken"} & {o["name"] for o in iwm["options"]}
    assert_answered(await invoke(discord_, "status"), embed=True, chart=None, ephemeral=True)  # global commands work


async def test_the_token_never_reaches_a_log_line_or_a_message(
    running_bot: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything logged at DEBUG (discord.py included) during a start, a command, a bad input and a failure, and
    every request body sent to Discord: none contains the token (it is only in the Authorization header)."""
    caplog.set_level(logging.DEBUG)
    bot, discord_ = await running_bot()
    token = discord_.token
    await invoke(discord_, "levels", {"period": "3mo"})
    await invoke(discord_, "levels", {"as_of": "tomorrow"})

    async def exploding(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the provider said no")

    monkeypatch.setattr(cog_module(bot, "Levels"), "levels_answer", exploding)
    failed = await invoke(discord_, "levels")
    assert failed.content == error_text(RuntimeError())

    assert caplog.records and any(r.name.startswith("discord") and r.levelno == logging.DEBUG for r in caplog.records)
    assert any(r.exc_info for r in caplog.records)  # the failure was logged with its traceback
    assert token not in caplog.text
    assert all(token not in r.getMessage() for r in caplog.records)
    for request in discord_.requests:
        sent = json.dumps([request.path, request.query, request.json])
        assert token not in sent and all(token.encode() not in f.data for f in request.files), request
    assert all(r.headers.get("Authorization") in (None, f"Bot {token}") for r in discord_.requests)


def test_the_log_filter_redacts_the_token_in_messages_and_tracebacks() -> None:
    """`setup_logging` puts RedactToken on every handler: a token that some library logs, in the message or in an
    exception's text, comes out redacted."""
    token = "MTIzNDU2Nzg5.secret-token.value"
    records = [
        logging.LogRecord("lib", logging.ERROR, __file__, 1, "login with %s failed", (token,), None),
        logging.LogRecord("lib", logging.ERROR, __file__, 1, "request failed", (),
                          (RuntimeError, RuntimeError(f"401 for Bot {token}"), None)),
    ]
    formatter, redact = logging.Formatter("%(message)s"), RedactToken(token)
    for record in records:
        assert redact.filter(record)
        text = formatter.format(record)
        assert token not in text and "[token redacted]" in text


@contextmanager
def filtered_logger(token: str | None) -> Iterator[tuple[logging.Logger, list[str]]]:
    """A logger whose one handler carries RedactToken, as `setup_logging` sets it up; yields it and its lines."""
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                lines.append(self.format(record))
            except Exception:
                self.handleError(record)

    handler = Lines()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactToken(token))
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.DEBUG
    try:
        yield logger, lines
    finally:
        logger.removeHandler(handler)


def test_the_log_filter_never_raises_on_a_malformed_record(capsys: pytest.CaptureFixture[str]) -> None:
    """A record whose message does not format ("%d" with a str): the filter lets it through with its parts
    redacted, and logging's own error report (on stderr) names no token."""
    token = "MTIzNDU2Nzg5.secret-token.value"
    record = logging.LogRecord("lib", logging.ERROR, __file__, 1, "%d", ("x",), None)
    assert RedactToken(token).filter(record) and (record.msg, record.args) == ("%d", ("x",))
    with filtered_logger(token) as (logger, lines):
        logger.error("%d failed for %s", "x", token)
        logger.error(f"%d failed for {token}", "x")
        logger.error("%(n)d for %(who)s", {"n": "x", "who": f"Bot {token}"})
        logger.error("%d in %s", "x", f"/webhooks/1234/{'t' * 70}")
        logger.error("after them, %s", token)
    report = capsys.readouterr().err
    assert report.count("--- Logging error ---") == 4 and "[token redacted]" in report
    assert token not in report and "t" * 70 not in report
    assert lines == ["ERROR after them, [token redacted]"]


INTERACTION = "aW50ZXJhY3Rpb246MTQ0NDQ0NDQ0NDQ0NDQ0NDQ0OnJhbmRvbS1wYXJ0LW9mLXRoZS10b2tlbg_-.x"


@pytest.mark.parametrize("bot_token", ["MTIzNDU2Nzg5.secret-token.value", None])
@pytest.mark.parametrize(("level", "fmt", "args"), [
    (logging.DEBUG, "%s %s with %s has returned %s",
     ("POST", f"https://discord.com/api/v10/interactions/1444444444444444444/{INTERACTION}/callback", None, 204)),
    (logging.DEBUG, "%s %s has received %s",
     ("PATCH", f"https://discord.com/api/v10/webhooks/1111111111111111111/{INTERACTION}/messages/@original", {})),
    (logging.WARNING, "We are being rate limited. %s %s responded with 429. Retrying in %.2f seconds.",
     ("POST", f"https://discord.com/api/v10/webhooks/1111111111111111111/{INTERACTION}?wait=true", 1.5)),
])
def test_the_log_filter_redacts_interaction_tokens_in_urls(bot_token: str | None, level: int, fmt: str,
                                                            args: tuple[Any, ...]) -> None:
    """discord.py's own route lines (DEBUG, and WARNING on a 429) carry an interaction's token in the URL: it comes
    out redacted, with the rest of the line intact, whether or not the bot's token is set."""
    with filtered_logger(bot_token) as (logger, lines):
        logger.log(level, fmt, *args)
        try:
            raise RuntimeError(f"failed: {args[1]}")
        except RuntimeError:
            logger.exception("request")
        logger.info("GET %s", "https://discord.com/api/v10/channels/1111111111111111111/messages/2222")
    expected = fmt % args
    assert INTERACTION not in "\n".join(lines)
    assert lines[0] == f"{logging.getLevelName(level)} {expected.replace(INTERACTION, '[token redacted]')}"
    assert lines[1].startswith("ERROR request\nTraceback") and "/[token redacted]" in lines[1]
    assert lines[2] == "INFO GET https://discord.com/api/v10/channels/1111111111111111111/messages/2222"

"""/iwm valuation, sectors, rates and compare: the console path, the real bot on the local Discord, and live FRED."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app import open_resources
from cogs.analysis import lines_within
from console import SentMessage, answer
from services.config import Settings
from services.members import load_member_data, member_valuation
from tests.support.discord_schema import assert_within_embed_limits
from tests.support.fred import fred_replies
from tests.support.local_discord import png_size
from tests.support.provider_server import ProviderServer, Reply

DATA = Path(__file__).parents[1] / "services" / "data"


def only_embed(status: int, messages: list[SentMessage], filename: str) -> dict:
    """The one public message's embed, checked against Discord's limits, with its 1280x720 chart attached."""
    assert status == 0, messages[0].content if messages else "no message"
    (message,) = messages
    assert not message.ephemeral
    (embed,) = [e.to_dict() for e in message.embeds]
    assert_within_embed_limits(embed)
    assert embed["image"]["url"] == f"attachment://{filename}"
    (file,) = message.files
    assert file.filename == filename
    file.fp.seek(0)
    assert png_size(file.fp.read()) == (1280, 720)
    return embed


def text_of(embed: dict) -> str:
    fields = "\n".join(f"[{f['name']}]\n{f['value']}" for f in embed.get("fields", []))
    return "\n".join([embed.get("title", ""), embed.get("description", ""), fields, embed["footer"]["text"]])


def adj(symbol: str) -> pd.Series:
    frame = pd.read_csv(DATA / f"{symbol}.csv.gz", index_col="date", parse_dates=["date"])
    return frame["adj_close"].dropna()


# --- console path -------------------------------------------------------------------------------------------

async def test_valuation_before_the_member_data_shows_shiller_pe_and_the_missing_russell_side(resources):
    embed = only_embed(*await answer(resources, "/iwm valuation as_of:2023-06-30"), "iwm-valuation.png")
    text = text_of(embed)
    trailing = next(f["value"] for f in embed["fields"] if f["name"] == "Trailing P/E")
    assert "S&P 500 (SPY): **24.0** · Shiller (bundled), 2023-06" in trailing
    assert "Russell 2000 (IWM): **n/a**: missing" in trailing and "Small/large: n/a" in trailing
    assert "loss-makers" in text  # the method note
    assert "No Russell 2000 valuation figures" in text
    assert "No public Russell 2000 valuation history exists" in text
    assert "as of **2023-06-30**" in embed["description"] and "months old" not in trailing


async def test_valuation_shows_the_member_figures_with_ratio_losses_and_coverage(resources):
    embed = only_embed(*await answer(resources, "/iwm valuation"), "iwm-valuation.png")
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    report = member_valuation(load_member_data())  # the service's figures, formatted by hand here
    s, b = report.small.multiples, report.large.multiples
    assert (f"Russell 2000 (IWM): **{s['forward_pe'].value:.1f}** · members bottom-up (bundled dump of 2026-08-08), "
            "2026-08-08" in fields["Forward P/E"])
    assert f"Small/large: **{report.ratios['forward_pe']:.2f}**" in fields["Forward P/E"]
    bottom = fields["Bottom-up from members · as of 2026-08-08"]
    assert (f"Trailing P/E incl. loss-makers: **{s['trailing_pe_all'].value:.1f}** / "
            f"**{b['trailing_pe_all'].value:.1f}** ({report.ratios['trailing_pe_all']:.2f})") in bottom
    small = report.small
    assert f"IWM {small.loss_share_members:.0%} of members, {small.loss_share_value:.0%} of value" in bottom
    assert f"Coverage IWM: {report.small.with_data:,}/{report.small.members:,} with data" in bottom
    assert "Yahoo .info daily dumps" in bottom and "*Method:* Index aggregate" in bottom
    assert "No public Russell 2000 valuation history exists" in text_of(embed)


def breadth_by_hand(day: str) -> dict[str, float]:
    """Independently of services.members: the IWM members' closes from the bundled files, counted on `day`."""
    closes = np.load(DATA / "members" / "closes.npy").astype(float)
    with np.load(DATA / "members" / "members.npz") as npz:
        dates, symbols = npz["dates"], npz["symbols"]
        iwm = set(npz["member"][npz["in_iwm"]])
    frame = pd.DataFrame(closes, index=pd.DatetimeIndex(dates), columns=symbols)[sorted(iwm & set(symbols))]
    frame = frame.loc[:day]
    out = {}
    for n in (50, 200):
        window = frame.iloc[-n:]
        full = window.notna().all()
        out[f"above{n}"] = float((window.iloc[-1] > window.mean())[full].mean() * 100)
    today, before = frame.iloc[-1], frame.iloc[-2]
    out["advances"], out["declines"] = float((today > before).sum()), float((today < before).sum())
    year = frame.iloc[-252:]
    full = year.notna().all()
    out["highs"] = float((year.iloc[-1] > year.iloc[:-1].max())[full].sum())
    out["lows"] = float((year.iloc[-1] < year.iloc[:-1].min())[full].sum())
    return out


@pytest.mark.parametrize("command, day", [("/iwm breadth", "2026-07-31"),
                                          ("/iwm breadth period:3mo as_of:2025-03-16", "2025-03-14")])
async def test_breadth_counts_members_and_carries_the_caveat(resources, command, day):
    embed = only_embed(*await answer(resources, command), "iwm-breadth.png")
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    want = breadth_by_hand(day)
    assert embed["title"] == f"Russell 2000 breadth · {day}"
    assert f"50-day **{want['above50']:.0f}%**" in fields["Above their averages"]
    assert f"200-day **{want['above200']:.0f}%**" in fields["Above their averages"]
    assert f"**{want['advances']:,.0f}** up · **{want['declines']:,.0f}** down" in fields["Advances / declines"]
    assert f"**{want['highs']:,.0f}** highs · **{want['lows']:,.0f}** lows" in fields["New 52-week highs / lows"]
    assert "Survivorship bias" in embed["description"] and "divergence" in embed["description"].lower()
    assert "Divergence:" in fields["Method"]


@pytest.mark.parametrize("command, title", [
    ("/iwm sectors", "IWM sectors · 3m to 2026-07-31 · IWM +5.0%"),
    ("/iwm sectors period:1y as_of:2025-09-26", "IWM sectors · 1y to 2025-09-26 · IWM +11.5%"),
])
async def test_sectors_weights_leaders_and_rate_sensitivity(resources, command, title):
    embed = only_embed(*await answer(resources, command), "iwm-sectors.png")
    text = text_of(embed)
    assert embed["title"] == title
    names = [f["name"] for f in embed["fields"]]
    assert "PSCI Industrials · 19.4% of IWM" in names  # the bundled holdings file: 19.42%
    assert names[0].startswith("Leaders") and names[1].startswith("Laggards")
    assert text.count("*Rates: ") == 11  # each fund's one-line rate sensitivity, labelled as background
    assert "Real Estate 5.1% of IWM: no fund in the data, performance missing" in text
    assert "holdings as of **2026-05-05**" in text and "iShares holdings, bundled file" in embed["footer"]["text"]


@pytest.mark.parametrize("command, cuts, in_progress, stance", [
    ("/iwm rates", ["2001-01-03", "2007-09-18", "2019-07-31", "2024-09-18"], None, "on hold since 2025-12-10"),
    ("/iwm rates as_of:2024-12-31", ["2001-01-03", "2007-09-18", "2019-07-31", "2024-09-18"], "2024-09-18",
     "easing (last cut 2024-12-18)"),
    ("/iwm rates as_of:2019-06-28", ["2001-01-03", "2007-09-18"], None, "on hold since 2018-12-19"),
])
async def test_rates_stance_first_then_every_easing_cycle(resources, command, cuts, in_progress, stance):
    embed = only_embed(*await answer(resources, command), "iwm-rates.png")
    assert embed["title"].endswith(f" · {stance} · IWM vs SPY after first cuts")
    first_line = embed["description"].split("\n")[0]
    assert first_line.startswith("Target range **") and "effective rate **" in first_line
    assert "Last change: decided **" in embed["description"] and f"Stance: **{stance}**" in embed["description"]
    names = [f["name"] for f in embed["fields"]]
    assert names[0] == "Yield curve" and "2s10s" in embed["fields"][0]["value"]
    assert "*Background: regional banks" in embed["fields"][0]["value"]
    cycles = [f for f in embed["fields"] if f["name"].startswith("First cut")]
    assert [f["name"][10:20] for f in cycles] == cuts
    for field in cycles:
        assert field["value"].count("gap") + field["value"].count("not complete") == 4  # 3/6/12/24 months
    incomplete = [f["name"][10:20] for f in cycles if "in progress (incomplete)" in f["name"]]
    assert incomplete == ([in_progress] if in_progress else [])
    first = cycles[0]["value"]  # 2001-01-03, from that day's close
    iwm, spy = adj("IWM"), adj("SPY")
    start, end = pd.Timestamp("2001-01-03"), pd.Timestamp("2001-04-03")
    a, b = (iwm[end] / iwm[start] - 1) * 100, (spy[end] / spy[start] - 1) * 100
    assert "from the 2001-01-03 close" in first
    assert f"3m: IWM {a:+.1f}% · SPY {b:+.1f}% · gap **{a - b:+.1f}pp**" in first
    stats = next(f["value"] for f in embed["fields"] if f["name"].startswith("Across cycles"))
    assert stats.count("IWM ahead in") == 4 and f"n={len(cuts)}" in stats and "⚠️ Small sample" in stats
    choice = next(f["value"] for f in embed["fields"] if f["name"].startswith("Choice"))
    assert "continues the cycle" in choice
    later = command != "/iwm rates as_of:2019-06-28"
    pause = (date(2020, 3, 3) - date(2019, 10, 30)).days
    assert (f"2020-03-03, 1.75% → 1.25% (-50bp upper bound), {pause} days after the 2019-10-30 cut" in choice) == later
    assert ("So 2019–2020 is one cycle" in choice) == later
    assert "FRED DFF/DFEDTARU/DFEDTARL/DGS2/DGS10, bundled file" in embed["footer"]["text"]


async def test_compare_default_since_is_the_2021_high(resources):
    embed = only_embed(*await answer(resources, "/iwm compare"), "iwm-compare.png")
    assert embed["title"].startswith("IWM since 2021-11-08 to 2026-10-05: vs SPY")
    assert "242.56 on 2021-11-08" in embed["description"] and "last date all series have" in embed["description"]
    # Independently: IWM and SPY total returns from 2021-11-08 to their last common day (2026-10-05).
    iwm, spy = adj("IWM"), adj("SPY")
    start, end = pd.Timestamp("2021-11-08"), pd.Timestamp("2026-10-05")
    gap = (iwm[end] / iwm[start] - spy[end] / spy[start]) * 100
    gaps = next(f["value"] for f in embed["fields"] if f["name"].startswith("Gap"))
    assert f"vs SPY: **{gap:+.1f}pp**" in gaps and "both to 2026-10-05" in gaps
    assert f"**{(iwm.iloc[-1] / iwm[start] - 1) * 100:+.1f}%** total return" in text_of(embed)


async def test_compare_labels_a_series_ending_earlier_in_the_embed(resources):
    embed = only_embed(*await answer(resources, "/iwm compare symbols:iwm,rut"), "iwm-compare.png")
    rut_end = adj("RUT").index[-1]  # the index ends before IWM: everything is measured to its last close
    assert embed["title"].startswith(f"IWM since 2021-11-08 to {rut_end.date()}: vs ^RUT")
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert f"^RUT (Russell 2000 index, price only) (to {rut_end.date()})" in fields
    iwm = adj("IWM")
    assert f"to its last close {iwm.index[-1].date()}" in fields["IWM (Russell 2000 ETF)"]


async def test_compare_with_options_shows_a_missing_series_with_its_reason(resources):
    embed = only_embed(*await answer(resources, "/iwm compare since:2026-08-31 symbols:iwm,spy,rut "
                                                "as_of:2026-10-01"), "iwm-compare.png")
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["^RUT (Russell 2000 index, price only)"].startswith("**n/a**: no data for this window "
                                                                      "(data ends 2026-08-21)")
    assert "2026-08-31 → 2026-10-01" in fields["IWM (Russell 2000 ETF)"]
    assert "as of 2026-10-01" in embed["footer"]["text"]


@pytest.mark.parametrize("command", [
    "/iwm valuation as_of:2023-13-01", "/iwm valuation as_of:1850-01-01", "/iwm valuation as_of:2031-01-01",
    "/iwm sectors period:5y", "/iwm sectors as_of:1999-01-04", "/iwm sectors as_of:soon",
    "/iwm rates as_of:yesterday", "/iwm rates as_of:1990-01-02",
    "/iwm breadth as_of:2022-12-30", "/iwm breadth as_of:2026-08-03", "/iwm breadth period:5y",
    "/iwm compare symbols:IWM,TSLA", "/iwm compare symbols:,,", "/iwm compare since:2025-01-02 as_of:2024-01-02",
    "/iwm compare since:2030-01-01", "/iwm compare as_of:2000-01-03", "/iwm compare since:2021-13-01",
])
async def test_bad_input_is_one_ephemeral_message(resources, command):
    status, messages = await answer(resources, command)
    assert status == 2
    (message,) = messages
    assert message.ephemeral and message.content.startswith("⚠️") and not message.embeds and not message.files


async def test_long_operator_notes_are_cut_on_purpose(tmp_path):
    """An operator file with many bad rows and long method notes still gives an embed within Discord's limits."""
    rows = ["date,symbol,metric,value,source,note"]
    rows += [f"2024-01-{d:02d},IWM,trailing_pe,{14 + d / 10},Vendor {d},{'excludes loss-makers ' * 40}"
             for d in range(1, 29)]
    rows += [f"2024-02-01,XYZ,trailing_pe,{i},Vendor,bad symbol" for i in range(200)]
    path = tmp_path / "valuation.csv"
    path.write_text("\n".join(rows) + "\n")
    settings = Settings(database_path=tmp_path / "v.db", valuation_file=path)
    async with open_resources(settings, render_processes=False) as res:
        embed = only_embed(*await answer(res, "/iwm valuation as_of:2024-03-01"), "iwm-valuation.png")
    notes = next(f["value"] for f in embed["fields"] if f["name"] == "Notes")
    assert "valuation.csv line" in notes and notes.endswith("more")
    assert "Vendor 28 (operator file), 2024-01-28" in text_of(embed)


def test_lines_within_keeps_whole_lines_and_counts_the_rest():
    lines = [f"line {i} " + "x" * 90 for i in range(30)]
    text = lines_within(lines, 1024)
    assert len(text) <= 1024 and text.endswith("more")
    kept = text.count("line ")
    assert text.endswith(f"… and {30 - kept} more") and kept == 10
    assert lines_within(["a", "b"]) == "a\nb" and lines_within([]) == "none"
    assert lines_within(["y" * 2000, "z"], 100) == "y" * 86 + "…\n… and 1 more"  # exactly 100 characters


# --- the real bot on the local Discord ----------------------------------------------------------------------

async def test_each_command_defers_then_follows_up_with_embed_and_chart(running_bot):
    _, discord_ = await running_bot()
    for subcommand, options in [("valuation", {}), ("sectors", {"period": "1m"}),
                                ("breadth", {"period": "6mo"}), ("rates", {"as_of": "2025-09-26"}),
                                ("compare", {"symbols": "IWM,SPY,QQQ", "since": "2024-10-01"})]:
        handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", subcommand, options))
        callback, followup = await handle.wait_for_responses(2, timeout=20)
        assert handle.ack_seconds is not None and handle.ack_seconds < 3, subcommand
        assert callback.json["type"] == 5  # deferred: "the bot is thinking"
        assert followup.matches("POST", "/webhooks/{app}/{token}") and followup.multipart and followup.status == 200
        (part,) = followup.files
        assert part.filename == f"iwm-{subcommand}.png" and png_size(part.data) == (1280, 720)
        (embed,) = followup.json["embeds"]
        assert embed["image"]["url"] == f"attachment://iwm-{subcommand}.png"
        assert_within_embed_limits(embed)
    handle = await discord_.dispatch_interaction(discord_.slash_command("iwm", "compare", {"symbols": "TSLA"}))
    (reply,) = await handle.wait_for_responses(1)
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] & 64  # an ephemeral message, not deferred
    assert "TSLA" in reply.json["data"]["content"]


# --- live FRED, failing Yahoo -------------------------------------------------------------------------------

async def test_rates_live_fred_with_stale_market_data(tmp_path):
    async with ProviderServer() as server:
        server.script("/graph/fredgraph.csv", *fred_replies())  # real-format bodies, in the order asked
        for symbol in ("IWM", "SPY"):
            server.script(f"/v8/finance/chart/{symbol}", Reply(status=500, body="upstream error"))
        settings = Settings.from_env({"MARKET_DATA_PROVIDER": "yahoo", "FRED_BASE_URL": server.url,
                                      "YAHOO_BASE_URL": server.url, "DATABASE_PATH": str(tmp_path / "live.db"),
                                      "HTTP_TIMEOUT_SECONDS": "2"})
        async with open_resources(settings, render_processes=False) as res:
            embed = only_embed(*await answer(res, "/iwm rates"), "iwm-rates.png")
        assert server.calls["/graph/fredgraph.csv"] >= 1 and server.calls["/v8/finance/chart/IWM"] >= 1
    method = next(f["value"] for f in embed["fields"] if f["name"] == "Method")
    # the live downloads: "FRED DFF/DFEDTARU/DFEDTARL/DGS2/DGS10, fetched <minute>" (series fetched in different
    # minutes are listed apart, each with its own time)
    daily = method.split("Rates: ", 1)[1].split("; monthly line", 1)[0]
    assert daily.startswith("FRED ") and "fetched " in daily and "bundled" not in daily
    assert all(series in daily for series in ("DFF", "DFEDTARU", "DFEDTARL", "DGS2", "DGS10"))
    assert "FRED FEDFUNDS, fetched " in method and "bundled file" not in method
    assert "⚠️" in embed["description"] and "STALE" in embed["footer"]["text"]
    notes = next(f["value"] for f in embed["fields"] if f["name"] == "Notes")
    assert "Prices for IWM, SPY are a stale fallback: live data unavailable (yahoo" in notes
    assert [f["name"][10:20] for f in embed["fields"] if f["name"].startswith("First cut")] == [
        "2001-01-03", "2007-09-18", "2019-07-31", "2024-09-18"]

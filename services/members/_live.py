"""Which member data answers: the daily live snapshot from the database, or the bundle.

With a live provider the newest complete `member_snapshot` (Yahoo's v7 quote, see _refresh.py) is the newest
"dump" of the member fundamentals, and the newest archived iShares file gives IWM's membership, weights and sectors;
without one (or for an `as_of` before them) the bundled data answers as before. When the latest refresh failed or is
unfinished, the previous complete snapshot answers, marked stale with its age in sessions.

Profit margin: the v7 quote has neither `profitMargins` nor revenue, so the snapshot derives them: trailing net
income = `epsTrailingTwelveMonths * sharesOutstanding` (negative for a loss-maker), sales = `marketCap /
priceToSalesTrailing12Months`, margin = net income / sales. A member whose quote lacks one of those keeps its
last known margin from the bundled dumps (said in the notes, with the dumps' dates); a member the snapshot lacks
keeps its whole bundled row. Its Yahoo sector is always the bundled one (the quote has none).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date

import numpy as np
import pandas as pd

from services import market_calendar
from services.market import DataAge
from services.members._closes import LIVE_CLOSES, extend_closes, live_closes
from services.members._data import FIELDS, MemberData, holdings_weights, load_member_data
from services.members._refresh import LiveKey, latest_holdings, live_key, member_snapshot
from services.storage import Database

LIVE_SOURCE = "Yahoo v7 quote snapshot of {day}"


@dataclass(frozen=True)
class MemberOrigin:
    """What an answer's member figures come from, for its footer."""

    label: str  # "Yahoo quote snapshot of 2026-12-01" or "bundled dump of 2026-08-08"
    live: bool  # the database's snapshot or archive answers
    stale: bool  # the latest refresh failed or is unfinished: an older snapshot answers
    age: DataAge | None  # the snapshot's age when stale
    note: str  # why it is stale ("" when it is not)
    closes_label: str = ""  # "Yahoo spark daily closes to 2026-12-01" or "bundled closes to 2026-07-31"
    closes_stale: bool = False  # the latest closes refresh failed: the last complete closes answer
    closes_age: DataAge | None = None  # their age when stale
    closes_note: str = ""  # why they are stale


def bundled_origin(data: MemberData) -> MemberOrigin:
    return MemberOrigin(f"bundled dump of {data.dump_dates[-1]}", False, False, None, "")


def derived_margins(rows: pd.DataFrame) -> pd.Series:
    """Each snapshot row's trailing profit margin: EPS x shares / (market cap / P/S); NaN where not derivable."""
    eps, shares = rows["eps_ttm"].to_numpy(dtype=float), rows["shares_outstanding"].to_numpy(dtype=float)
    cap, ps = rows["market_cap"].to_numpy(dtype=float), rows["price_to_sales"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(eps) & (shares > 0) & (cap > 0) & (ps > 0) & np.isfinite(shares * cap * ps)
    sales = np.where(ok, cap / np.where(ok, ps, 1.0), np.nan)
    return pd.Series(np.where(ok, eps * shares / sales, np.nan), index=rows.index)


def live_member_data(bundled: MemberData, rows: pd.DataFrame | None, day: date | None,
                     holdings: tuple[date, pd.DataFrame] | None) -> MemberData:
    """The bundled data with the snapshot `rows` (of `day`) as its newest dump and, when given, the archived
    holdings' membership and weights."""
    members, notes = bundled.members, []
    holdings_as_of, holdings_source = bundled.holdings_as_of, bundled.holdings_source
    if holdings is not None:
        holdings_as_of, weights = holdings
        holdings_source = "archived"
        members = members.drop(columns=["weight", "holdings_sector"]).join(weights, how="outer")
        members["in_sp500"] = members["in_sp500"].fillna(False).astype(bool)
        members["in_iwm"] = members["weight"].notna()
        unknown = int((~members.index.isin(bundled.members.index)).sum())
        if unknown:
            notes.append(f"{unknown} holdings of {holdings_as_of} are not in the bundled member list: counted in "
                         "the weights, without data.")
    dumps, fundamentals_source = bundled.dumps, bundled.fundamentals_source
    if rows is not None and day is not None:
        last = bundled.fundamentals
        live = rows.reindex(columns=[*FIELDS[:-1], "eps_ttm", "shares_outstanding"])
        margin = derived_margins(live)
        missing = margin.isna()
        carried = last["profit_margin"].reindex(live.index)[missing]
        live["profit_margin"] = margin.where(~missing, carried)
        live["sector"] = last["sector"].reindex(live.index)
        live["dump"] = day
        dumps = pd.concat([dumps, live.rename_axis("symbol").reset_index()[dumps.columns]], ignore_index=True)
        fundamentals_source = LIVE_SOURCE.format(day=day) + "; members it lacks from the bundled Yahoo dumps"
        from_dump = Counter(last["dump"].reindex(carried.dropna().index))
        notes.append(
            f"Profit margin (net income EPS x shares / sales market cap / P/S) derived from the {day} quote for "
            f"{int((~missing).sum()):,} members; carried from the bundled dumps for {int(carried.notna().sum()):,} "
            "whose quote lacks EPS, shares or P/S ("
            + (", ".join(f"{n} from {d}" for d, n in sorted(from_dump.items(), reverse=True)) or "none")
            + f"), none for {int(carried.isna().sum()):,}.")
    return replace(bundled, members=members, dumps=dumps, holdings_as_of=holdings_as_of,
                   holdings_source=holdings_source, fundamentals_source=fundamentals_source, notes=tuple(notes),
                   source=f"{fundamentals_source}; iShares IWM holdings {holdings_as_of}, {holdings_source}")


_lock = threading.Lock()
_cache: dict[tuple[object, ...], MemberData] = {}


async def member_data(database: Database | None, as_of: date | None = None) -> tuple[MemberData, MemberOrigin]:
    """(the member data an answer as of `as_of` uses, where it comes from). `database` None (no live provider),
    no snapshot, archive or live closes yet, or an `as_of` before them within the bundled closes: the bundle. Built
    once per database, snapshot day, archive date and closes refresh (the newest only is kept)."""
    bundled = await asyncio.to_thread(load_member_data)
    if database is None:
        return bundled, bundled_origin(bundled)
    key = await live_key(database)
    day = date.fromisoformat(key.day) if key.day else None
    archived = date.fromisoformat(key.archived) if key.archived else None
    closes_day = date.fromisoformat(key.closes_day) if key.closes_day else None
    start = day or archived
    later = as_of is not None and closes_day is not None and as_of > bundled.as_of  # only the live closes have it
    if as_of is not None and not later and (start is None or as_of < start):
        return bundled, bundled_origin(bundled)  # a day the bundle covers wholly: nothing live is missing
    if start is None and closes_day is None:  # nothing live yet: the bundle, stale if the closes refresh failed
        return bundled, await _closes_origin(bundled_origin(bundled), key, bundled.as_of)
    cache_key = (database.location, day, archived, closes_day, key.closes_refreshed)
    data = _cache.get(cache_key)
    if data is None:
        data = await _build(database, bundled, day is not None, closes_day is not None)
        with _lock:
            _cache.clear()  # only the newest snapshot answers
            _cache[cache_key] = data
    if day is None:
        origin = replace(bundled_origin(bundled), live=True)
    elif not key.error:
        origin = MemberOrigin(f"Yahoo quote snapshot of {day}", True, False, None, "")
    else:
        origin = MemberOrigin(f"Yahoo quote snapshot of {day}", True, True, await _age(day),
                              f"the latest refresh failed: {key.error}")
    return data, await _closes_origin(origin, key, data.as_of)


async def _age(day: date) -> DataAge:
    reference = await asyncio.to_thread(market_calendar.last_session_now)
    return DataAge(day, reference, await asyncio.to_thread(market_calendar.sessions_behind, day, reference))


async def _closes_origin(origin: MemberOrigin, key: LiveKey, last_close: date) -> MemberOrigin:
    """`origin` with the closes' label, and stale with their age when the latest closes refresh failed (the last
    complete closes answer: the live ones, or the bundle's when none is complete yet)."""
    label = f"{LIVE_CLOSES} to {key.closes_day}" if key.closes_day else f"bundled closes to {last_close}"
    if not key.closes_error:
        return replace(origin, closes_label=label)
    age = await _age(last_close)
    note = (f"Member closes are the last complete ones ({label}"
            + (f"; {behind}" if (behind := age.describe()) else "")
            + f"): the closes refresh of {key.closes_refreshed} failed: {key.closes_error}")
    return replace(origin, closes_label=label, closes_stale=True, closes_age=age, closes_note=note)


async def _build(database: Database, bundled: MemberData, with_snapshot: bool, with_closes: bool) -> MemberData:
    snapshot = await member_snapshot(database) if with_snapshot else None
    archive = await latest_holdings(database)
    holdings = await asyncio.to_thread(holdings_weights, archive.text) if archive else None
    rows, day = (snapshot.rows, snapshot.day) if snapshot is not None else (None, None)
    data = await asyncio.to_thread(live_member_data, bundled, rows, day, holdings)
    closes = await live_closes(database) if with_closes else None
    return await asyncio.to_thread(extend_closes, data, closes)

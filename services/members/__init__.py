"""The Russell 2000 measured from its members: bottom-up valuation against the S&P 500, market breadth, sector
returns. Data: the bundled member files (`services/data/members/`, see `services/data/SOURCES.md`).

    data = await asyncio.to_thread(load_member_data)      # once per process; blocking, so off the event loop
    member_valuation(data, as_of)                         # IWM vs S&P 500 P/E, forward P/E, P/B, P/S
    member_breadth(data, "IWM", as_of)                    # % above 50/200-day average, A/D, 52-week highs/lows
    member_sectors(data, as_of)                           # holdings sectors over 1m/3m/YTD/1y

Live (a live provider only; see _refresh.py): `archive_holdings` keeps each dated iShares file, `MemberRefresh`
takes a daily snapshot of the members' Yahoo fundamentals in batches, `member_snapshot` reads it back,
`CloseRefresh` (_closes.py) fetches their daily closes from Yahoo's spark in batches after the bundled ones
(`extend_closes` appends them to the closes matrix), and `member_data(database, as_of)` is the data an answer uses
(the newest complete snapshot, archived holdings and live closes, else the bundle; see _live.py) with its
`MemberOrigin` (labels, stale, age) for the footer. `daily_refresh` runs all three once a day.

as_of: a date within the data (closes: sessions 2023-01-03..2026-07-31; fundamentals: dumps 2026-08-01..08); a
weekend or holiday means the last session (dump) before it; a date outside raises services.errors.InputError.
"""

from services.members._breadth import (
    WINDOWS,
    YEAR_SESSIONS,
    BreadthDay,
    BreadthReport,
    BreadthSeries,
    compute_breadth,
    member_breadth,
)
from services.members._closes import CloseRefresh, LiveCloses, daily_refresh, extend_closes, live_closes
from services.members._data import INDEXES, MemberData, load_member_data
from services.members._live import MemberOrigin, live_member_data, member_data
from services.members._refresh import (
    ArchivedHoldings,
    MemberRefresh,
    MemberSnapshot,
    archive_holdings,
    holdings_archive,
    latest_holdings,
    member_snapshot,
)
from services.members._sectors import ALL, MemberSector, MemberSectors, member_sectors
from services.members._valuation import (
    METRICS,
    Aggregate,
    IndexValuation,
    MemberValuation,
    member_valuation,
    weighted_multiple,
)

__all__ = [
    "ALL",
    "INDEXES",
    "METRICS",
    "WINDOWS",
    "YEAR_SESSIONS",
    "Aggregate",
    "ArchivedHoldings",
    "BreadthDay",
    "BreadthReport",
    "BreadthSeries",
    "CloseRefresh",
    "IndexValuation",
    "LiveCloses",
    "MemberData",
    "MemberOrigin",
    "MemberRefresh",
    "MemberSector",
    "MemberSectors",
    "MemberSnapshot",
    "MemberValuation",
    "archive_holdings",
    "compute_breadth",
    "daily_refresh",
    "extend_closes",
    "holdings_archive",
    "latest_holdings",
    "live_closes",
    "live_member_data",
    "load_member_data",
    "member_breadth",
    "member_data",
    "member_sectors",
    "member_snapshot",
    "member_valuation",
    "weighted_multiple",
]

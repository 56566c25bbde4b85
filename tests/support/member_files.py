"""The bundled member files (services/data/members/) read with numpy and pandas alone, not through services.members,
for tests that check the service against its own reading of the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MEMBERS = Path(__file__).parents[2] / "services" / "data" / "members"


def dump_rows() -> pd.DataFrame:
    """One row per member and daily dump: symbol, in_iwm, in_sp500, dump ("YYYY-MM-DD"), sector (Yahoo's; NaN
    where none), market_cap, trailing_pe, forward_pe, price_to_book, price_to_sales, profit_margin."""
    with np.load(MEMBERS / "members.npz") as m, np.load(MEMBERS / "fundamentals.npz") as f:
        code = f["symbol"]
        frame = pd.DataFrame({"symbol": m["member"][code].astype(str), "in_iwm": m["in_iwm"][code],
                              "in_sp500": m["in_sp500"][code], "dump": f["dump"].astype(str),
                              "sector": np.where(f["sector"] >= 0, f["sectors"][f["sector"]].astype(object), np.nan)})
        for name in ("market_cap", "trailing_pe", "forward_pe", "price_to_book", "price_to_sales", "profit_margin"):
            frame[name] = f[name]
    return frame

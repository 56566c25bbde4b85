"""FRED's fredgraph.csv bodies built from the bundled rates, for tests that script the local provider server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from services.bundled import bundled_text
from services.rates import DAILY
from tests.support.provider_server import Reply

DATA = Path(__file__).parents[2] / "services" / "data"
RAW = pd.read_csv(DATA / "rates.daily.csv.gz", index_col="date", parse_dates=["date"])  # the bundled wide table


def fred_body(series_id: str, until: str | None = None) -> str:
    """A fredgraph.csv body as FRED writes it: `observation_date,SERIES`, "." where there is no value (the Treasury
    yields on weekday holidays), weekends left out of the business-day series."""
    column = RAW[series_id].loc[:until] if until else RAW[series_id]
    column = column.loc[column.first_valid_index(): column.last_valid_index()]
    if series_id.startswith("DGS"):
        column = column[column.index.day_of_week < 5]
    rows = [f"{day:%Y-%m-%d},{'.' if pd.isna(v) else f'{v:g}'}" for day, v in column.items()]
    return "\n".join([f"observation_date,{series_id}", *rows]) + "\n"


def fred_replies(until: str | None = None) -> list[Reply]:
    """What the answer asks FRED for, in its order: FEDFUNDS, then the daily series."""
    monthly = bundled_text("FEDFUNDS.monthly.csv.gz").replace("DATE,FEDFUNDS", "observation_date,FEDFUNDS", 1)
    return [Reply(body=monthly, content_type="text/csv"),
            *(Reply(body=fred_body(sid, until), content_type="text/csv") for sid in DAILY)]

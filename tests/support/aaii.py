"""AAII's bundled survey computed independently of services.sentiment (plain csv module), for expected values."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

BUNDLED_AAII = Path(__file__).parents[2] / "services" / "data" / "AAII.weekly.csv.gz"


def independent_aaii() -> tuple[dict[str, float], list[str]]:
    """Long-run averages (percent) and the last row of the bundled survey, by the plain csv module: every row
    whose three shares add up to 1 counts, once."""
    with gzip.open(BUNDLED_AAII, "rt", newline="") as fh:
        rows = [r for r in csv.DictReader(fh)
                if abs(float(r["bullish"]) + float(r["neutral"]) + float(r["bearish"]) - 1) < 0.01]
    means = {k: sum(float(r[k]) for r in rows) / len(rows) * 100 for k in ("bullish", "neutral", "bearish")}
    last = rows[-1]
    return means, [last["date"], last["bullish"], last["neutral"], last["bearish"], str(len(rows))]


AAII_MEANS, AAII_LAST = independent_aaii()
AAII_SPREAD = AAII_MEANS["bullish"] - AAII_MEANS["bearish"]

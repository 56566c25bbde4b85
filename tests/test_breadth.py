"""/iwm breadth: the divergence rule on hand-made series (test values, not market data), and bad periods."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.breadth import DIVERGENCE_SESSIONS, breadth_answer, divergence
from services.errors import InputError


def closes(first: float, last: float) -> pd.Series:
    return pd.Series(np.linspace(first, last, DIVERGENCE_SESSIONS + 1))


@pytest.mark.parametrize("price, ad, move, change, start", [
    ((100, 102), (0, -50), 2.0, -50, "⚠️ Negative divergence"),
    ((100, 97), (0, 40), -3.0, 40, "Positive divergence"),
    ((100, 100.5), (0, -50), 0.5, -50, "No divergence"),  # a move under 1% is no divergence
    ((100, 102), (0, 10), 2.0, 10, "No divergence"),
])
def test_divergence_rule(price, ad, move, change, start):
    line = np.linspace(*ad, DIVERGENCE_SESSIONS + 1).round().astype(int)
    got_move, got_change, sentence = divergence(closes(*price), line)
    assert got_move == pytest.approx(move) and got_change == change and sentence.startswith(start)


def test_divergence_needs_enough_sessions():
    assert divergence(closes(1, 2).iloc[:5], np.arange(5))[2].startswith("No divergence check")


async def test_unknown_period_is_refused(resources):
    with pytest.raises(InputError, match="period '5y'"):
        await breadth_answer(resources.market, resources.renderer, "5y")

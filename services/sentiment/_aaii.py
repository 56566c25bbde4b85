"""AAII's weekly Investor Sentiment Survey: parsing, long-run averages, and the weeks beside a server's polls.

AAII blocks scripted downloads of https://www.aaii.com/files/surveys/sentiment.xls, so the bot reads the bundled
survey (services/data/AAII.weekly.csv.gz, see SOURCES.md), or an operator's CSV copy: a file (`AAII_FILE`) or a URL
(`AAII_URL`, fetched through services.documents in live mode, the bundled survey as fallback).
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

from services.bundled import bundled_text
from services.documents import Documents
from services.sentiment._polls import Percentages

BUNDLED_AAII = "AAII.weekly.csv.gz"
AAII_NAME = "AAII Investor Sentiment Survey"
AAII_SITE = "aaii.com/sentimentsurvey"
# A week's three shares add up to 1 (100%) up to AAII's rounding (at most 0.002 in the survey). A row that does not
# is no survey week: AAII's own file has one, 1996-01-11, with 42 in every column.
SUM_TOLERANCE = 0.01
DATE_COLUMNS = ("date", "reported_date")


@dataclass(frozen=True)
class AaiiWeek:
    day: date  # AAII's reported date (a Thursday)
    shares: Percentages  # in percent


@dataclass(frozen=True)
class AaiiSurvey:
    weeks: tuple[AaiiWeek, ...]  # oldest first
    source: str  # where this copy comes from, e.g. "AAII Investor Sentiment Survey, bundled copy"
    skipped: tuple[date, ...] = ()  # rows that are no survey week (placeholders), left out of everything

    @property
    def first(self) -> AaiiWeek:
        return self.weeks[0]

    @property
    def latest(self) -> AaiiWeek:
        return self.weeks[-1]

    @functools.cached_property
    def averages(self) -> Percentages:
        """Long-run averages: the mean of the weekly shares over every survey week (as AAII averages them)."""
        n = len(self.weeks)
        return Percentages(sum(w.shares.bullish for w in self.weeks) / n, sum(w.shares.neutral for w in self.weeks) / n,
                           sum(w.shares.bearish for w in self.weeks) / n)

    @property
    def span(self) -> str:
        """`1987-07-24..2026-08-20, 2,037 weeks`."""
        return f"{self.first.day}..{self.latest.day}, {len(self.weeks):,} weeks"

    def week_of(self, when: datetime | date) -> AaiiWeek | None:
        """The survey week reported in the same Monday-to-Sunday week as `when`, if any."""
        start = monday(when)
        for week in reversed(self.weeks):
            if week.day < start:
                return None
            if week.day <= start + timedelta(days=6):
                return week
        return None


def monday(when: datetime | date) -> date:
    """The Monday starting the week of `when` (polls and survey weeks are matched by these weeks)."""
    day = when.date() if isinstance(when, datetime) else when
    return day - timedelta(days=day.weekday())


def parse_survey(text: str, source: str = AAII_NAME) -> AaiiSurvey:
    """The weekly survey from CSV text: a `date` (or AAII's `reported_date`) column, ISO dates, and `bullish`,
    `neutral`, `bearish` as fractions of 1 or percentages. Rows whose shares do not add up to 1 (or 100) are
    placeholders and skipped. Raises ValueError when the text is no survey."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    fields = [f.strip().lower() for f in reader.fieldnames or ()]
    reader.fieldnames = fields
    date_column = next((c for c in DATE_COLUMNS if c in fields), None)
    if date_column is None or not {"bullish", "neutral", "bearish"} <= set(fields):
        raise ValueError(f"not an AAII survey CSV (columns {fields[:6]}): expected date,bullish,neutral,bearish")
    weeks: list[AaiiWeek] = []
    skipped: list[date] = []
    for row in reader:
        if not (row.get(date_column) or "").strip():
            continue
        day = date.fromisoformat(row[date_column].strip()[:10])
        values = [float(row[c]) for c in ("bullish", "neutral", "bearish")]
        total = sum(values)
        if abs(total - 1) <= SUM_TOLERANCE:
            values = [v * 100 for v in values]
        elif abs(total - 100) > SUM_TOLERANCE * 100:
            skipped.append(day)
            continue
        if weeks and day <= weeks[-1].day:
            raise ValueError(f"AAII survey dates out of order at {day}")
        weeks.append(AaiiWeek(day, Percentages(*values)))
    if not weeks:
        raise ValueError("the AAII survey CSV has no weeks")
    return AaiiSurvey(tuple(weeks), source, tuple(skipped))


@functools.cache
def bundled_survey() -> AaiiSurvey:
    """The bundled survey, parsed once per process."""
    return parse_survey(bundled_text(BUNDLED_AAII), f"{AAII_NAME} ({AAII_SITE}), bundled copy")


async def aaii_survey(documents: Documents | None = None, *, aaii_file: Path | None = None,
                      aaii_url: str | None = None) -> AaiiSurvey:
    """The survey to compare polls with: the operator's file, else the operator's URL (live mode; the bundled
    survey when it fails), else the bundled survey."""
    if aaii_file is not None:
        text = await asyncio.to_thread(aaii_file.read_text, encoding="utf-8")
        return await asyncio.to_thread(parse_survey, text, f"{AAII_NAME}, operator's file {aaii_file.name}")
    if aaii_url and documents is not None:  # offline, Documents returns the bundled file
        document = await documents.get(aaii_url, bundled=BUNDLED_AAII, validate=parse_survey, source="AAII")
        if document.source == "bundled":
            survey = bundled_survey()
            return replace(survey, source=f"{survey.source} (operator's URL failed)") if document.stale else survey
        return await asyncio.to_thread(parse_survey, document.text, document.describe(f"{AAII_NAME}, operator's copy"))
    return bundled_survey()


def weeks_beside(survey: AaiiSurvey, days: Sequence[datetime]) -> tuple[AaiiWeek | None, ...]:
    """The AAII week of each poll (None where the survey has none, e.g. after it ends)."""
    return tuple(survey.week_of(d) for d in days)

"""Weekly sentiment polls in the style of the AAII Investor Sentiment Survey, and `/iwm sentiment`.

The bot posts Discord native polls (answers Bullish / Neutral / Bearish, answer ids 1, 2, 3). This package keeps
a log of the vote events, closes polls against Discord's final voter lists, makes sure each result is posted
once, opens scheduled weekly polls, and reports a guild's results against AAII's weekly survey: its long-run
averages (computed from the survey), its latest week and its readings in the polls' weeks.

`_polls`: answers, validation, tallies, schedules; `_store`: SentimentStore (SQLite); `_aaii`: the survey;
`_report`: the report and its chart. Times are aware datetimes, stored as fixed-width ISO 8601 UTC text
(services.timefmt).
"""

from services.sentiment._aaii import AaiiSurvey, AaiiWeek, aaii_survey, bundled_survey, parse_survey
from services.sentiment._polls import (
    ANSWER_EMOJI,
    ANSWERS,
    BEARISH,
    BULLISH,
    DEFAULT_HOURS,
    DEFAULT_QUESTION,
    MAX_HOURS,
    MAX_QUESTION,
    MIN_HOURS,
    MIN_VOTES,
    NEUTRAL,
    Percentages,
    Poll,
    PollResult,
    PollSpec,
    Schedule,
    Tally,
    validate_poll,
)
from services.sentiment._report import MAX_WEEKS, SentimentReport, sentiment_answer, validate_weeks
from services.sentiment._store import CLAIM_TIMEOUT, SentimentStore

__all__ = [
    "ANSWERS", "ANSWER_EMOJI", "BEARISH", "BULLISH", "CLAIM_TIMEOUT", "DEFAULT_HOURS", "DEFAULT_QUESTION",
    "MAX_HOURS", "MAX_QUESTION", "MAX_WEEKS", "MIN_HOURS", "MIN_VOTES", "NEUTRAL", "AaiiSurvey", "AaiiWeek",
    "Percentages", "Poll", "PollResult", "PollSpec", "Schedule", "SentimentReport", "SentimentStore", "Tally",
    "aaii_survey", "bundled_survey", "parse_survey", "sentiment_answer", "validate_poll", "validate_weeks",
]

"""Poll types: the answers, validation of a new poll, tallies and their percentages, and weekly schedules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from services.errors import InputError, is_whole
from services.timefmt import parse_utc

BULLISH, NEUTRAL, BEARISH = 1, 2, 3  # Discord poll answer ids, in the order the answers are posted
ANSWERS = {BULLISH: "Bullish", NEUTRAL: "Neutral", BEARISH: "Bearish"}
ANSWER_EMOJI = {BULLISH: "🐂", NEUTRAL: "😐", BEARISH: "🐻"}

DEFAULT_QUESTION = "Where will IWM be in six months?"
MAX_QUESTION = 300  # Discord's limit on a poll question
MIN_HOURS, MAX_HOURS = 1, 768  # Discord accepts 1 hour to 32 days
DEFAULT_HOURS = 168  # one week, like AAII
# Below this many votes a poll's percentages are noise (one member moves them by 10 points or more), so the
# report says "not enough votes" instead.
MIN_VOTES = 10


# --- validation -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PollSpec:
    question: str
    hours: int


def validate_question(question: str | None) -> str:
    text = DEFAULT_QUESTION if question is None else question.strip()
    if not text:
        raise InputError("the poll question is empty: write a question, or leave it out for the default")
    if len(text) > MAX_QUESTION:
        raise InputError(f"the poll question has {len(text)} characters; Discord allows at most {MAX_QUESTION}")
    return text


def validate_hours(hours: int | None) -> int:
    if hours is None:
        return DEFAULT_HOURS
    if not is_whole(hours, MIN_HOURS, MAX_HOURS):
        raise InputError(
            f"poll length {hours!r} hours: Discord polls last {MIN_HOURS} to {MAX_HOURS} whole hours (32 days); "
            f"the default is {DEFAULT_HOURS} (one week)"
        )
    return hours


def validate_poll(question: str | None = None, hours: int | None = None) -> PollSpec:
    """Check a new poll before it is posted. InputError says what is wrong."""
    return PollSpec(validate_question(question), validate_hours(hours))


# --- tallies and results --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Percentages:
    bullish: float
    neutral: float
    bearish: float

    @property
    def spread(self) -> float:
        """Bull-bear spread in percentage points, as AAII reports it."""
        return self.bullish - self.bearish


@dataclass(frozen=True)
class Tally:
    bullish: int = 0
    neutral: int = 0
    bearish: int = 0

    @property
    def total(self) -> int:
        return self.bullish + self.neutral + self.bearish

    @property
    def enough(self) -> bool:
        return self.total >= MIN_VOTES

    def percentages(self) -> Percentages | None:
        """Shares of the votes in percent, or None below MIN_VOTES."""
        if not self.enough:
            return None
        n = self.total
        return Percentages(self.bullish / n * 100, self.neutral / n * 100, self.bearish / n * 100)

    @classmethod
    def from_counts(cls, counts: Mapping[int, int]) -> Tally:
        return cls(counts.get(BULLISH, 0), counts.get(NEUTRAL, 0), counts.get(BEARISH, 0))


@dataclass(frozen=True)
class Poll:
    message_id: int
    guild_id: int
    channel_id: int
    question: str
    created_at: datetime
    ends_at: datetime
    status: str  # open | closed
    multiselect: bool
    final: Tally | None  # set once closed
    result_message_id: int | None
    result_attempted: bool = False  # a closer claimed the result before: it may be in the channel already

    @classmethod
    def from_row(cls, row: Mapping) -> Poll:
        final = None if row["status"] != "closed" else Tally(row["bullish"] or 0, row["neutral"] or 0,
                                                                 row["bearish"] or 0)
        return cls(row["message_id"], row["guild_id"], row["channel_id"], row["question"],
                   parse_utc(row["created_at"]), parse_utc(row["ends_at"]), row["status"], bool(row["multiselect"]),
                   final, row["result_message_id"], row["claimed_at"] is not None)


@dataclass(frozen=True)
class PollResult:
    poll: Poll
    tally: Tally  # final when the poll is closed, live otherwise

    @property
    def percentages(self) -> Percentages | None:
        return self.tally.percentages()


# --- schedules ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    id: int
    guild_id: int
    channel_id: int
    weekday: int  # 0 = Monday
    time_utc: time
    question: str
    hours: int
    created_at: datetime
    last_opened_on: date | None  # before this claim, when returned by due_schedules

    @classmethod
    def from_row(cls, row: Mapping) -> Schedule:
        return cls(row["id"], row["guild_id"], row["channel_id"], row["weekday"], time.fromisoformat(row["time_utc"]),
                   row["question"], row["hours"], parse_utc(row["created_at"]),
                   date.fromisoformat(row["last_opened_on"]) if row["last_opened_on"] else None)

    def occurrence(self, now: datetime) -> datetime:
        """The latest scheduled time at or before `now`."""
        now = now.astimezone(UTC)
        day = now.date() - timedelta(days=(now.weekday() - self.weekday) % 7)
        at = datetime.combine(day, self.time_utc, tzinfo=UTC)
        return at if at <= now else at - timedelta(days=7)


def parse_time_utc(value: time | str) -> time:
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    try:
        hour, minute = (int(part) for part in value.strip().split(":"))
        return time(hour, minute)
    except (ValueError, AttributeError) as exc:
        raise InputError(f"time {value!r}: write it as HH:MM in UTC, e.g. 14:00") from exc


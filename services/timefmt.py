"""Times as stored: aware datetimes written as fixed-width ISO 8601 UTC text, so text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(at: datetime) -> str:
    """Fixed-width UTC text for storage; text comparison then orders by time. Naive datetimes are refused."""
    if at.tzinfo is not UTC:
        if at.tzinfo is None:
            raise ValueError(f"{at!r} has no timezone: pass an aware datetime (e.g. datetime.now(UTC))")
        at = at.astimezone(UTC)
    # isoformat(timespec="microseconds"), written out: twice as fast, and every logged message needs one
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00" % (  # noqa: UP031 (an f-string is slower here)
        at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond)


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text)

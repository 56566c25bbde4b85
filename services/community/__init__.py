"""Community log: what members say in opted-in channels, and `/iwm community`.

Logging is opt-in per channel (`CommunityLog.set_logging`). The cog turns each gateway event into a typed event
(`MessageCreated`, `ReactionAdded`, ...) and hands it to `CommunityLog.put`, which never waits: one batched writer
writes the events on the database thread, in the order they arrived.

`_text`: cashtags, tone, clean text; `_events`: the events and their SQL; `_writer`: the batched writer;
`_log`: CommunityLog (opt-in, retention, export, a member's erasure); `_report`: the
report and its chart; `_pace`: long work on the database thread in short turns.
"""

from services.community._events import (
    EmojiCleared,
    Event,
    MessageCreated,
    MessageEdited,
    MessagesDeleted,
    ReactionAdded,
    ReactionRemoved,
    ReactionsCleared,
)
from services.community._log import MAX_EXPORT_DAYS, CommunityLog, LogCounts
from services.community._report import (
    MAX_REPORT_DAYS,
    CommunityReport,
    DayActivity,
    TopReaction,
    community_answer,
    validate_days,
)

__all__ = [
    "MAX_EXPORT_DAYS", "MAX_REPORT_DAYS", "CommunityLog", "CommunityReport", "DayActivity", "EmojiCleared", "Event",
    "LogCounts", "MessageCreated", "MessageEdited", "MessagesDeleted", "ReactionAdded", "ReactionRemoved",
    "ReactionsCleared", "TopReaction", "community_answer", "validate_days",
]

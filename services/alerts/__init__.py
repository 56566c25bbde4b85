"""Price alerts: detect level events on IWM's daily closes, store who wants them, and post each one exactly once.

The parts, each with the details in its docstring:

- `_detector`: the events, the one detector (`detect`, `advance`) and the replay;
- `_post`: an event as a Discord-agnostic post, and its chart;
- `_store`: subscriptions, per-guild levels, detector state and the outbox (`AlertStore`);
- `_delivery`: the fan-out, its delivery guarantee and recovery, and the watcher's steps.
"""

from services.alerts._delivery import (
    MAX_ATTEMPTS,
    Delivery,
    DeliveryError,
    Detections,
    Find,
    Send,
    breadth_alert,
    check_breadth,
    check_close,
    check_intraday,
    fan_out,
    recover,
)
from services.alerts._detector import (
    BREADTH_LEVEL,
    DAILY_KINDS,
    EVENT_KINDS,
    NEW_HIGH_QUIET_SESSIONS,
    DetectorState,
    Event,
    advance,
    breadth_crossings,
    breadth_event,
    detect,
    format_event,
    format_replay,
    intraday_notices,
    replay,
    run_replay,
)
from services.alerts._post import (
    AlertPost,
    PostCache,
    PreparedPost,
    alert_chart,
    build_post,
    footer_for,
    footer_text,
    post_nonce,
)
from services.alerts._store import MAX_SUBSCRIPTIONS_PER_GUILD, AlertStore, OutboxEntry, Subscription, parse_events

__all__ = [
    "BREADTH_LEVEL",
    "DAILY_KINDS",
    "EVENT_KINDS",
    "MAX_ATTEMPTS",
    "MAX_SUBSCRIPTIONS_PER_GUILD",
    "NEW_HIGH_QUIET_SESSIONS",
    "AlertPost",
    "AlertStore",
    "Delivery",
    "DeliveryError",
    "Detections",
    "DetectorState",
    "Event",
    "Find",
    "OutboxEntry",
    "PostCache",
    "PreparedPost",
    "Send",
    "Subscription",
    "advance",
    "alert_chart",
    "breadth_alert",
    "breadth_crossings",
    "breadth_event",
    "build_post",
    "check_breadth",
    "check_close",
    "check_intraday",
    "detect",
    "fan_out",
    "footer_for",
    "footer_text",
    "format_event",
    "format_replay",
    "intraday_notices",
    "parse_events",
    "post_nonce",
    "recover",
    "replay",
    "run_replay",
]

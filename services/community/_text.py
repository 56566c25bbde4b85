"""Text analysis of a logged message: cashtags, a crude tone count, valid Unicode, reaction keys.

Tone is deliberately crude: counts of a few bullish and bearish words (see BULLISH_WORDS / BEARISH_WORDS); it
ignores negation and sarcasm, so read it as a rough mood gauge over many messages, never per message.
"""

from __future__ import annotations

import re
from typing import Any

# $IWM, $spy, $BRK.B: 1-5 letters and an optional class letter; not $100, not US$5, not $TOOLONG.
# The "$" comes first (the lookbehind after it) so the regex engine can skip straight to each "$".
CASHTAG = re.compile(r"\$(?<![\w$]\$)([A-Za-z]{1,5}(?:\.[A-Za-z])?)(?!\w)")
# Whole lower-cased words (and a few emoji) counted for tone. Ambiguous words ("long", "short", "call", "up")
# are left out on purpose.
BULLISH_WORDS = frozenset({
    "bull", "bulls", "bullish", "calls", "moon", "mooning", "rip", "ripping", "rally", "rallying", "breakout",
    "buy", "buying", "bought", "green", "pump", "pumping", "squeeze", "higher", "🚀", "📈", "🐂",
})
BEARISH_WORDS = frozenset({
    "bear", "bears", "bearish", "puts", "dump", "dumping", "crash", "crashing", "sell", "selling", "sold", "red",
    "lower", "tank", "tanking", "breakdown", "recession", "rug", "📉", "🐻", "🩸",
})
# Tone counts tokens: runs of ASCII letters and "$" in the lower-cased text, and the tone emoji. A token with a
# "$" is a cashtag or part of one ($BULL is a ticker, not a mood), so it never counts.
TOKEN = re.compile(r"[a-z$]+|[🚀📈🐂📉🐻🩸]")
# For ASCII text (most messages) the same tokens come from bytes.translate + split, several times faster than the
# regex (bench: community_log): every byte but a-z and $ becomes a space.
_ASCII_BREAKS = bytes.maketrans(bytes(range(256)), bytes(b if b in b"abcdefghijklmnopqrstuvwxyz$" else 32
                                                         for b in range(256)))
_ASCII_BULLISH = frozenset(w.encode() for w in BULLISH_WORDS if w.isascii())
_ASCII_BEARISH = frozenset(w.encode() for w in BEARISH_WORDS if w.isascii())
_ASCII_TONE = _ASCII_BULLISH | _ASCII_BEARISH


def find_cashtags(text: str) -> list[str]:
    """Distinct tickers mentioned as cashtags, upper-cased, in order of first mention."""
    if "$" not in text:  # most messages: skip the regex
        return []
    return list(dict.fromkeys(map(str.upper, CASHTAG.findall(text))))


def tone_counts(text: str) -> tuple[int, int]:
    """(bullish, bearish) word counts."""
    tokens: list[Any]
    if text.isascii():
        tokens = text.lower().encode().translate(_ASCII_BREAKS).split()
        if _ASCII_TONE.isdisjoint(tokens):  # most messages
            return 0, 0
        bullish_words: frozenset[bytes] | frozenset[str] = _ASCII_BULLISH
        bearish_words: frozenset[bytes] | frozenset[str] = _ASCII_BEARISH
    else:
        tokens = TOKEN.findall(text.lower())
        bullish_words, bearish_words = BULLISH_WORDS, BEARISH_WORDS
    bullish = bearish = 0
    for token in tokens:
        if token in bullish_words:
            bullish += 1
        elif token in bearish_words:
            bearish += 1
    return bullish, bearish


def tone(bullish: int, bearish: int) -> float | None:
    """(bullish - bearish) / (bullish + bearish), from -1 (all bearish) to +1; None when no word matched."""
    matched = bullish + bearish
    return None if matched == 0 else (bullish - bearish) / matched


def clean_text(text: str) -> str:
    """The text as valid Unicode that both engines store: a lone surrogate (possible from JSON escapes) becomes
    U+FFFD and NUL is dropped (PostgreSQL's text cannot hold it; SQLite gets the same text), everything else
    (emoji, ZWJ sequences, combining marks, other control characters) is kept as is."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if text.isascii():  # most messages: nothing more to check, no copy
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def emoji_key(name: str, emoji_id: int | None) -> str:
    return str(emoji_id) if emoji_id is not None else name


def text_fields(content: str) -> tuple[str, str, int, int]:
    """(text, cashtags as JSON, bullish, bearish) for a message's columns."""
    content = clean_text(content)
    tags = find_cashtags(content)
    # Tickers are letters and dots only, so the JSON can be written directly.
    return (content, '["' + '", "'.join(tags) + '"]' if tags else "[]", *tone_counts(content))

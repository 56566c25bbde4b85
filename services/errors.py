"""Errors whose message is meant for the member who typed the command."""


class InputError(ValueError):
    """Bad input from a member: the message says what is wrong and what is valid. Nothing was changed."""


def is_whole(value: object, low: int, high: int | None = None) -> bool:
    """Whether `value` is an int (not a bool) from `low` to `high` inclusive (no upper bound when None)."""
    return (isinstance(value, int) and not isinstance(value, bool) and low <= value
            and (high is None or value <= high))

"""Errors whose message is meant for the member who typed the command."""


class InputError(ValueError):
    """Bad input from a member: the message says what is wrong and what is valid. Nothing was changed."""

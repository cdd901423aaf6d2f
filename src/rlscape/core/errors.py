"""The one exception type that means "the user's input is wrong"."""

from __future__ import annotations


class RlscapeError(ValueError):
    """Bad input: the message is one line that says what to change.

    The CLI prints it without a traceback and exits with code 2.
    """

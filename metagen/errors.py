"""The one exception type a user should see as a message, not a traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message names the field or file, what is wrong, and the fix."""

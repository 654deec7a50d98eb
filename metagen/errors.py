"""The one exception type a user should see as a message, not a traceback."""

from __future__ import annotations

from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    ValidationError,
)


class UserError(ValueError):
    """Bad input: the message names the field or file, what is wrong, and the fix."""


def first_line(err: Exception, message: str | None = None) -> str:
    """The first line of an error's message (or of `message`), else its type."""
    text = (str(err) if message is None else message).strip()
    return text.splitlines()[0] if text else type(err).__name__


def config_error(err: Exception) -> UserError:
    """An OmegaConf error (unknown key, wrong type, broken ${...}) as one line.

    OmegaConf's own message spans several lines of internals; the user needs the
    key, the first line, and what to do.
    """
    key = getattr(err, "full_key", None) or "config"
    what = first_line(err, str(getattr(err, "msg", None) or err))
    if isinstance(err, ConfigKeyError):
        fix = "check the spelling; `python -m metagen --cfg job` lists every field"
    elif isinstance(err, InterpolationResolutionError):
        fix = "fix the ${...} reference, or write a literal ${ as \\${"
    elif isinstance(err, ValidationError):
        fix = "give a value of the field's type"
    else:
        fix = "`python -m metagen --cfg job` shows the composed config"
    return UserError(f"{key}: {what}; {fix}")

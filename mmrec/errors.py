"""The one error type users see.

Everything a user can cause (a bad file, a missing column, an unknown item, a
bad config value) raises :class:`MMRecError` or a subclass, with a message that
names the file, row or item, so the CLI can print it without a traceback.
"""
from __future__ import annotations


class MMRecError(Exception):
    """Base class of every user-facing mmrec error."""


class ConfigError(MMRecError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(MMRecError):
    """A data file is missing, unreadable or fails validation."""


class DatasetNotFoundError(DataError):
    """The raw files of a dataset are not where mmrec looked for them."""


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond`` holds (config ``__post_init__`` checks)."""
    if not cond:
        raise ConfigError(message)

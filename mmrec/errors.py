"""The one error type users see.

Everything a user can cause (a bad file, a missing column, an unknown item, a
bad config value) raises :class:`MMRecError` or a subclass, with a message that
names the file, row or item, so the CLI can print it without a traceback.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, List, Optional


class MMRecError(Exception):
    """Base class of every user-facing mmrec error."""


class ConfigError(MMRecError):
    """A config file or override is invalid (unknown key, wrong type, bad value).

    ``problems``: every invalid key and value found, one message each (the
    error's text lists them all).
    """

    def __init__(self, message: str = "", problems: Optional[List[str]] = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems is not None else [message]


class DataError(MMRecError):
    """A data file is missing, unreadable or fails validation."""


class DatasetNotFoundError(DataError):
    """The raw files of a dataset are not where mmrec looked for them."""


_COLLECTED: ContextVar[Optional[List[str]]] = ContextVar("mmrec_config_problems", default=None)


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond`` holds (config ``__post_init__`` checks).

    Inside :func:`collect_config_problems` the message is recorded instead, so
    one check reports every bad value (:func:`mmrec.config.load_config`).
    """
    if cond:
        return
    found = _COLLECTED.get()
    if found is None:
        raise ConfigError(message)
    if message not in found:
        found.append(message)


@contextmanager
def collect_config_problems(into: Optional[List[str]] = None) -> Iterator[List[str]]:
    """Within the block, failed :func:`require` checks are appended to ``into`` (yielded) instead of raising."""
    found: List[str] = [] if into is None else into
    token = _COLLECTED.set(found)
    try:
        yield found
    finally:
        _COLLECTED.reset(token)

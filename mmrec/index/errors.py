"""Errors a user can cause with an item index; all are :class:`MMRecError`."""
from __future__ import annotations

from mmrec.errors import MMRecError


class ItemIndexError(MMRecError):
    """Base class of the item-index errors."""


class IndexMismatchError(ItemIndexError):
    """Vectors or a saved index do not match (dimension, fingerprint, config)."""


class IndexFileError(ItemIndexError):
    """A saved index is missing a file, or a file is truncated or corrupt."""


class UnknownItemError(ItemIndexError):
    """An item id is not in the index."""


class IndexMemoryError(ItemIndexError):
    """The configured index would not fit in the available memory (or in ``index.max_memory_gb``)."""

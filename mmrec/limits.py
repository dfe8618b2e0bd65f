"""Bounds on the sizes a user controls, stated once for the Python facade, the CLI and the HTTP schemas.

Each is checked before anything is allocated for it: ``k`` above
:data:`MAX_K` is an error (``MMRecError`` in Python, exit 2 from the CLI, 422
over HTTP), and below it ``k`` is clamped to the number of items served.
"""
from __future__ import annotations

import numbers
from typing import Any

from mmrec.errors import DataError, MMRecError

MAX_K = 1000  # results per query: recommend, recommend_batch, similar_items
MAX_ITEMS_PER_CALL = 1000  # items per onboarding call (Recommender.onboard, POST /items, one `mmrec onboard` batch)
MAX_BATCH_SIZE = 100_000  # users per batch of Recommender.recommend_batch / `mmrec recommend --all-users`
MAX_HISTORY = 1000  # items in a live history given with a request (recommend(history=...), --history, HTTP)
# data files (loaders, `mmrec data prepare`): checked from the file's size / the archive's headers before reading
MAX_DATA_FILE_BYTES = 64 * 2**30  # one catalog / interaction / sequence file
MAX_WHOLE_FILE_BYTES = 2 * 2**30  # a file that is parsed in one piece (a .json list, an onboarding items file)
MAX_DATA_ROWS = 500_000_000  # rows of one table (row positions stay well inside int32 item/user indexes x 4)
MAX_ARCHIVE_MEMBERS = 2_000_000  # files extracted from one archive (image tarballs)
MAX_ARCHIVE_BYTES = 64 * 2**30  # uncompressed bytes extracted from one archive, in all
MAX_MEMBER_BYTES = 4 * 2**30  # one archive member read into memory or extracted
MAX_REMOVE_PER_CALL = 10_000  # item ids per removal call (Recommender.remove, DELETE /items, `mmrec remove`)


def check_size(actual: int, limit: int, what: str) -> None:
    """A :class:`DataError` naming ``what`` when ``actual`` is over ``limit`` (a file's bytes, a table's rows)."""
    if actual > limit:
        raise DataError(f"{what}: {actual:,} is over the limit of {limit:,} (mmrec.limits)")


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``, else an :class:`MMRecError` naming ``name`` and the range."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or not low <= value <= high:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise MMRecError(f"{name} must be {'' if is_int else 'an integer '}>= {low} and <= {high}, got {shown}")
    return int(value)

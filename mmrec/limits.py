"""Bounds on the sizes a user controls, stated once for the Python facade, the CLI and the HTTP schemas.

Each is checked before anything is allocated for it: ``k`` above
:data:`MAX_K` is an error (``MMRecError`` in Python, exit 2 from the CLI, 422
over HTTP), and below it ``k`` is clamped to the number of items served.
"""
from __future__ import annotations

import numbers
from typing import Any

from mmrec.errors import MMRecError

MAX_K = 1000  # results per query: recommend, recommend_batch, similar_items
MAX_ITEMS_PER_CALL = 1000  # items per onboarding call (Recommender.onboard, POST /items, one `mmrec onboard` batch)
MAX_BATCH_SIZE = 100_000  # users per batch of Recommender.recommend_batch / `mmrec recommend --all-users`


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``, else an :class:`MMRecError` naming ``name`` and the range."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or not low <= value <= high:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise MMRecError(f"{name} must be {'' if is_int else 'an integer '}>= {low} and <= {high}, got {shown}")
    return int(value)

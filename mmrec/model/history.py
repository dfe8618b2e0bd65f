"""The scoring contract: how a history becomes model input, defined once.

Training batches, evaluation and serving all feed the sequence model the same
way, through these three definitions:

* ``PAD`` (-1) fills the unused slots of a history row;
* histories are **right-aligned**: the newest item is in the last column and
  padding is on the left (:func:`right_align`);
* the model reads only the last :func:`window_width` items of a history — its
  *visible window*: ``max_len`` for a causal model, ``max_len - 1`` for a
  bidirectional one (which appends a [MASK] slot). The learned seen-item offset
  applies to exactly the items of that window (:func:`visible_window`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

PAD = -1


def window_width(max_len: int, causal: bool) -> int:
    """How many of the newest history items the model reads."""
    return int(max_len) if causal else int(max_len) - 1


def right_align(histories: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """Stack histories of item rows into ``[B, length]`` int64, newest last, left-padded with PAD.

    Longer histories keep their newest ``length`` items.
    """
    arr = np.full((len(histories), int(length)), PAD, dtype=np.int64)
    for i, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)[-int(length):] if length else np.zeros(0, np.int64)
        if len(h):
            arr[i, length - len(h):] = h
    return arr


def visible_window(history: Sequence[int], max_len: int, causal: bool) -> list[int]:
    """The distinct items of ``history`` the model sees (its newest :func:`window_width` items), in order."""
    width = window_width(max_len, causal)
    return list(dict.fromkeys(list(history)[-width:])) if width > 0 else []

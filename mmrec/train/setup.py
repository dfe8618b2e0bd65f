"""Training inputs derived from a prepared dataset and its item space."""
from __future__ import annotations

from typing import Any, List

import numpy as np

from mmrec.artifact.space import ItemSpace


def train_sequences(data: Any, space: ItemSpace) -> List[np.ndarray]:
    """Every user's training items as model rows (users with fewer than two are skipped)."""
    row = space.row
    return [np.array([row[i] for i in seq], dtype=np.int64) for seq in data.split.train_sequences().values()
            if len(seq) >= 2]

"""Deterministic training batches: sequence windows, sharding by process, masking.

Everything random here is drawn from generators seeded by (seed, epoch,
batch, rank), never from global state, so a resumed run replays exactly the
batches an uninterrupted run would have seen: the data position is just
(epoch, batch index), stored in JSON with the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Sequence

import numpy as np
import torch

from mmrec.model.history import right_align



def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def windows_for_epoch(sequences: Sequence[np.ndarray], max_len: int, seed: int, epoch: int) -> List[np.ndarray]:
    """Cut each sequence into windows of at most ``max_len`` items, ending at the last item
    and then every ``max_len`` items before it, shifted by a per-epoch random offset so
    window boundaries move between epochs. Every training item is a target in some window."""
    rng = _rng(seed, epoch, 17)
    out: List[np.ndarray] = []
    for seq in sequences:
        n = len(seq)
        if n < 2:
            continue
        end = n
        shift = int(rng.integers(0, max_len)) if n > max_len else 0
        if shift:
            out.append(seq[max(0, end - max_len):end])
            end -= shift
        while end >= 2:
            out.append(seq[max(0, end - max_len):end])
            end -= max_len
    return out


@dataclass
class Batch:
    items: torch.Tensor     # [B, L] inputs (PAD = -1)
    scored: torch.Tensor    # [B, L] positions whose output is scored
    targets: torch.Tensor   # [B, L] true item at each scored position


def make_batch(windows: Sequence[np.ndarray], max_len: int, causal: bool, mask_prob: float,
               last_mask_share: float, rng: np.random.Generator) -> Batch:
    """Cloze masking (bidirectional) or shifted next-item targets (causal)."""
    if causal:
        full = right_align(windows, max_len + 1)
        items, targets = full[:, :-1], full[:, 1:]
        scored = (items >= 0) & (targets >= 0)
        return Batch(torch.from_numpy(items), torch.from_numpy(scored), torch.from_numpy(targets.copy()))
    items = right_align(windows, max_len)
    real = items >= 0
    if rng.random() < last_mask_share:
        scored = np.zeros_like(real)
        scored[:, -1] = real[:, -1]
    else:
        scored = real & (rng.random(items.shape) < mask_prob)
        none = ~scored.any(1)
        scored[none, -1] = real[none, -1]
    return Batch(torch.from_numpy(items), torch.from_numpy(scored), torch.from_numpy(items.copy()))


class EpochBatches:
    """The batches of one epoch for one process, with a start offset for resuming."""

    def __init__(self, sequences: Sequence[np.ndarray], max_len: int, causal: bool, mask_prob: float,
                 last_mask_share: float, global_batch: int, seed: int, epoch: int, rank: int = 0,
                 world: int = 1) -> None:
        wins = windows_for_epoch(sequences, max_len, seed, epoch)
        order = _rng(seed, epoch, 23).permutation(len(wins))
        per_proc = max(1, global_batch // world)
        n_batches = len(order) // (per_proc * world)
        if n_batches == 0 and len(order):
            n_batches = 1
        self.batches = [order[(b * world + rank) * per_proc:(b * world + rank + 1) * per_proc]
                        for b in range(n_batches)]
        self.batches = [b for b in self.batches if len(b)] or []
        self.windows = wins
        self.cfg = (max_len, causal, mask_prob, last_mask_share)
        self.seed, self.epoch, self.rank = seed, epoch, rank

    def __len__(self) -> int:
        return len(self.batches)

    def iterate(self, start: int = 0) -> Iterator[Batch]:
        max_len, causal, mask_prob, last_share = self.cfg
        for b in range(start, len(self.batches)):
            rng = _rng(self.seed, self.epoch, b, self.rank, 31)
            yield make_batch([self.windows[i] for i in self.batches[b]], max_len, causal, mask_prob, last_share, rng)

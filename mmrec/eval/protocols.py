"""Evaluation protocols over a split: warm and cold-start leave-one-out, full ranking.

* ``warm``: valid/test events whose target was seen in training.
* ``cold``: events whose target is a held-out item. Held-out items are
  represented from content alone (exactly what onboarding does), rank among
  the full catalog, and may also appear in histories.
* ``all``: every event.

History exclusion is a switch (DESIGN.md): RecBole does not mask a user's
history for sequential models, so side-by-side numbers use ``exclude_history=False``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from mmrec.data.splits import Split
from mmrec.errors import MMRecError
from mmrec.eval.metrics import RankingAccumulator, exclusion_mask, target_ranks

PROTOCOLS = ("warm", "cold", "all")
PAD = -1


@dataclass
class EvalExamples:
    """Leave-one-out examples as item rows: right-aligned histories [U, L], targets [U]."""

    user_ids: List[str]
    histories: np.ndarray
    history_lists: List[np.ndarray]
    targets: np.ndarray
    target_is_cold: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, mask: np.ndarray) -> "EvalExamples":
        idx = np.flatnonzero(mask)
        return EvalExamples([self.user_ids[i] for i in idx], self.histories[idx],
                            [self.history_lists[i] for i in idx], self.targets[idx], self.target_is_cold[idx])


def build_examples(split: Split, item_row: Mapping[str, int], role: str, protocol: str = "warm",
                   max_len: int = 200) -> EvalExamples:
    """The ``role`` (valid/test) events of a split under ``protocol``, as item rows."""
    if protocol not in PROTOCOLS:
        raise MMRecError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    ex = split.examples(role)
    if protocol == "warm":
        ex = ex[~ex["target_is_cold"]]
    elif protocol == "cold":
        ex = ex[ex["target_is_cold"]]
    try:
        hists = [np.array([item_row[i] for i in h], dtype=np.int64) for h in ex["history"]]
        targets = np.array([item_row[t] for t in ex["target"]], dtype=np.int64)
    except KeyError as exc:
        raise MMRecError(f"item {exc.args[0]!r} of the split is not in the model's catalog") from exc
    arr = np.full((len(hists), max_len), PAD, dtype=np.int64)
    for r, h in enumerate(hists):
        h = h[-max_len:]
        if len(h):
            arr[r, max_len - len(h):] = h
    return EvalExamples(ex["user_id"].tolist(), arr, hists, targets, ex["target_is_cold"].to_numpy())


@torch.no_grad()
def evaluate_scores(score_fn: Callable[[torch.Tensor], torch.Tensor], examples: EvalExamples,
                    exclude_history: bool = False, ks: Sequence[int] = (10, 20), batch_size: int = 512,
                    rank: int = 0, world: int = 1,
                    gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, float]:
    """Full-ranking metrics of a scorer. ``score_fn(histories [B, L]) -> scores [B, N]``.

    With several processes each scores a shard of the users and ``gather``
    collects the ranks, so every process returns the same metrics.
    """
    n = len(examples)
    if n == 0:
        raise MMRecError("no evaluation examples (is the protocol empty for this split?)")
    shard = np.arange(rank, n, world)
    ranks: List[torch.Tensor] = []
    for start in range(0, len(shard), batch_size):
        idx = shard[start:start + batch_size]
        scores = score_fn(torch.from_numpy(examples.histories[idx])).float()
        exclude = None
        if exclude_history:
            exclude = exclusion_mask([examples.history_lists[i] for i in idx], len(idx), scores.shape[1], scores.device)
        ranks.append(target_ranks(scores, torch.from_numpy(examples.targets[idx]).to(scores.device), exclude).cpu())
    local = torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long)
    all_ranks = gather(local) if gather is not None and world > 1 else local
    acc = RankingAccumulator(ks)
    acc.update(all_ranks)
    out = acc.compute()
    out["users"] = float(acc.n_users)
    return out


def model_scorer(model: torch.nn.Module, item_vecs: Optional[torch.Tensor] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``score_fn`` for :func:`evaluate_scores` from an :class:`~mmrec.model.seqrec.MMRecModel`.

    Puts the model in eval mode; callers that train afterwards switch it back.
    """
    model.eval()
    dev = next(model.parameters()).device
    vecs = item_vecs if item_vecs is not None else model.item_vectors()

    def score(histories: torch.Tensor) -> torch.Tensor:
        return model.score_items(histories.to(dev), vecs)

    return score

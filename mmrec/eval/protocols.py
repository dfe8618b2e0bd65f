"""Evaluation protocols over a split: warm and cold-start leave-one-out, full ranking.

* ``warm``: valid/test events whose target was seen in training.
* ``cold``: events whose target is a held-out item. Held-out items are
  represented from content alone (exactly what onboarding does), rank among
  the full catalog, and may also appear in histories.
* ``all``: every event.

History exclusion is a switch (README "Protocol"): RecBole does not mask a user's
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
from mmrec.model.history import right_align

PROTOCOLS = ("warm", "cold", "all")


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
    return EvalExamples(ex["user_id"].tolist(), right_align(hists, max_len), hists, targets,
                        ex["target_is_cold"].to_numpy())


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


def model_scorer(model: torch.nn.Module,
                 item_vecs: Optional[torch.Tensor] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``score_fn`` for :func:`evaluate_scores` from an :class:`~mmrec.model.seqrec.MMRecModel`.

    Puts the model in eval mode; callers that train afterwards switch it back.
    """
    model.eval()
    dev = next(model.parameters()).device
    vecs = item_vecs if item_vecs is not None else model.item_vectors()

    def score(histories: torch.Tensor) -> torch.Tensor:
        return model.score_items(histories.to(dev), vecs)

    return score


class SplitEvaluator:
    """Scores a model on one split's leave-one-out events: what training validates and tests with.

    ``SplitEvaluator(split, item_row, max_len, eval_cfg)(model, role, protocol)``
    returns the metrics dict, or ``None`` when the protocol has no ``role``
    events. Examples are built once per (role, protocol) and reused. The
    trainer receives :meth:`factory` so that training never imports evaluation.
    """

    def __init__(self, split: Split, item_row: Mapping[str, int], max_len: int, eval_cfg: object) -> None:
        self.split, self.item_row, self.max_len, self.cfg = split, item_row, int(max_len), eval_cfg
        self._examples: Dict[tuple, EvalExamples] = {}

    @classmethod
    def factory(cls, split: Split, item_row: Mapping[str, int], cfg: object) -> "SplitEvaluator":
        """Build from a run config (``cfg.model.max_len``, ``cfg.eval``): the trainer's ``make_evaluator``."""
        return cls(split, item_row, cfg.model.max_len, cfg.eval)  # type: ignore[attr-defined]

    def __call__(self, model: torch.nn.Module, role: str, protocol: str, rank: int = 0, world: int = 1,
                 gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Optional[Dict[str, float]]:
        key = (role, protocol)
        if key not in self._examples:
            self._examples[key] = build_examples(self.split, self.item_row, role, protocol, self.max_len)
        ex = self._examples[key]
        if len(ex) == 0:
            return None
        c = self.cfg
        with torch.no_grad():
            return evaluate_scores(model_scorer(model), ex, c.exclude_history, c.ks,  # type: ignore[attr-defined]
                                   c.batch_size, rank, world, gather)  # type: ignore[attr-defined]

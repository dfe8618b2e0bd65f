"""Full-ranking accuracy metrics and beyond-accuracy metrics.

Everything here ranks a target against *all* items of the catalog (no sampled
negatives, README "Protocol"), vectorised over a batch of users so a whole
evaluation streams through in ``[B, N]`` score blocks.

Exclusion (the history-exclusion switch)
----------------------------------------
``exclude`` is ``None`` (rank everything, as RecBole does for sequential
models) or one of:

* a boolean mask ``[B, N]`` (torch or numpy), ``True`` = remove this item from
  user ``b``'s ranking. This is the canonical, fully vectorised form;
* a sequence of ``B`` per-user index collections (lists, numpy arrays or 1-D
  tensors of item indices, duplicates allowed), converted to the mask once
  per batch by :func:`exclusion_mask`.

When ranking a target, the target itself is never excluded: under repeat
consumption the held-out item may also be in the history, and it must stay
rankable (otherwise the metric would be undefined, not zero).

Ties are counted pessimistically: every other item whose score equals the
target's ranks ahead of it, so a constant scorer gets rank ``N - 1`` (not a
perfect score by the luck of index order).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from torch import Tensor

from mmrec.errors import MMRecError

__all__ = [
    "Exclude",
    "exclusion_mask",
    "target_ranks",
    "ranking_metrics",
    "batch_ranking_metrics",
    "RankingAccumulator",
    "topk_items",
    "catalog_coverage",
    "intra_list_diversity",
    "popularity_bias",
    "beyond_accuracy_metrics",
    "BeyondAccuracyAccumulator",
]

#: A boolean mask ``[B, N]`` or ``B`` per-user collections of item indices.
Exclude = Union[Tensor, np.ndarray, Sequence]

_RANK_METRICS = ("hr", "recall", "ndcg", "mrr")


# --------------------------------------------------------------------------- #
# validation and exclusion
# --------------------------------------------------------------------------- #
def _check_scores(scores: Tensor) -> Tensor:
    if not isinstance(scores, Tensor):
        scores = torch.as_tensor(scores)
    if scores.dim() != 2:
        raise MMRecError(f"scores must be a [users, items] matrix, got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        scores = scores.float()
    if torch.isnan(scores).any():
        bad = torch.isnan(scores).any(dim=1).nonzero().flatten()
        raise MMRecError(
            f"scores contain NaN in {bad.numel()} of {scores.shape[0]} rows "
            f"(first bad row: {int(bad[0])}); the model diverged or produced an invalid score"
        )
    return scores


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise MMRecError(f"cut-offs K must be positive integers, got {ks}")
    return ks


def exclusion_mask(exclude: Exclude, n_users: int, n_items: int, device: torch.device | str = "cpu") -> Tensor:
    """Turn either exclusion form into a boolean mask ``[n_users, n_items]``.

    The mask is the one representation the ranking code works on; the
    per-user lists exist because that is what histories naturally are.
    """
    if isinstance(exclude, (Tensor, np.ndarray)) and exclude.dtype in (torch.bool, np.bool_):
        mask = torch.as_tensor(exclude, device=device)
        if tuple(mask.shape) != (n_users, n_items):
            raise MMRecError(
                f"exclusion mask has shape {tuple(mask.shape)}, expected ({n_users}, {n_items})"
            )
        return mask
    if len(exclude) != n_users:
        raise MMRecError(f"exclude has {len(exclude)} per-user entries, expected one per user ({n_users})")
    per_user = [torch.as_tensor(np.asarray(x, dtype=np.int64).reshape(-1)) for x in exclude]
    lengths = torch.tensor([len(x) for x in per_user], dtype=torch.long)
    cols = torch.cat(per_user) if per_user else torch.empty(0, dtype=torch.long)
    if cols.numel() and (int(cols.min()) < 0 or int(cols.max()) >= n_items):
        raise MMRecError(
            f"exclude contains item index {int(cols.min()) if int(cols.min()) < 0 else int(cols.max())} "
            f"outside the catalog [0, {n_items})"
        )
    rows = torch.repeat_interleave(torch.arange(n_users), lengths)
    mask = torch.zeros(n_users, n_items, dtype=torch.bool)
    mask[rows, cols] = True
    return mask.to(device)


# --------------------------------------------------------------------------- #
# ranks and accuracy metrics
# --------------------------------------------------------------------------- #
def target_ranks(scores: Tensor, targets: Tensor, exclude: Exclude | None = None) -> Tensor:
    """0-based rank of each user's target among all items (pessimistic ties).

    ``rank = #{items i != target, not excluded : score_i >= score_target}``,
    so excluding items above the target moves it up by exactly that many, and
    NaN scores raise :class:`MMRecError` instead of yielding silent numbers.
    """
    scores = _check_scores(scores)
    n_users, n_items = scores.shape
    targets = torch.as_tensor(targets, device=scores.device).long().reshape(-1)
    if targets.numel() != n_users:
        raise MMRecError(f"got {targets.numel()} targets for {n_users} rows of scores")
    if n_users and (int(targets.min()) < 0 or int(targets.max()) >= n_items):
        raise MMRecError(f"target item index out of range [0, {n_items})")
    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    ahead = scores >= target_scores  # includes the target itself
    if exclude is not None:
        ahead &= ~exclusion_mask(exclude, n_users, n_items, scores.device)
        ahead[torch.arange(n_users, device=scores.device), targets] = True  # never exclude the target
    return ahead.sum(dim=1) - 1


def ranking_metrics(ranks: Tensor, ks: Sequence[int] = (10, 20)) -> dict[str, float]:
    """HR/Recall/NDCG/MRR@K averaged over users, from 0-based target ranks.

    With one held-out target per user (leave-one-out), Recall@K equals HR@K;
    both keys are reported so tables line up with papers using either name.
    ``ndcg@K = 1/log2(rank+2)`` and ``mrr@K = 1/(rank+1)`` when ``rank < K``,
    else 0.
    """
    acc = RankingAccumulator(ks)
    acc.update(ranks)
    return acc.compute()


def batch_ranking_metrics(
    scores: Tensor, targets: Tensor, exclude: Exclude | None = None, ks: Sequence[int] = (10, 20)
) -> dict[str, float]:
    """:func:`ranking_metrics` of :func:`target_ranks` for one batch of users."""
    return ranking_metrics(target_ranks(scores, targets, exclude), ks)


class RankingAccumulator:
    """Streams ranks batch by batch; ``compute()`` equals the one-shot metrics.

    Keeps float64 sums per metric and a user count, so memory does not grow
    with the number of users evaluated.
    """

    def __init__(self, ks: Sequence[int] = (10, 20)) -> None:
        self.ks = _check_ks(ks)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.n_users = 0
        self._sums = {f"{m}@{k}": 0.0 for k in self.ks for m in _RANK_METRICS}

    def update(self, ranks: Tensor) -> None:
        """Add a batch of 0-based ranks (one per user)."""
        ranks = torch.as_tensor(ranks).reshape(-1).to(torch.float64)
        if ranks.numel() and (bool((ranks < 0).any()) or bool((ranks != ranks.round()).any())):
            raise MMRecError("ranks must be non-negative integers (0 = first place)")
        for k in self.ks:
            hit = ranks < k
            self._sums[f"hr@{k}"] += float(hit.sum())
            self._sums[f"recall@{k}"] += float(hit.sum())
            self._sums[f"ndcg@{k}"] += float(torch.where(hit, 1.0 / torch.log2(ranks + 2.0), 0.0).sum())
            self._sums[f"mrr@{k}"] += float(torch.where(hit, 1.0 / (ranks + 1.0), 0.0).sum())
        self.n_users += ranks.numel()

    def update_scores(self, scores: Tensor, targets: Tensor, exclude: Exclude | None = None) -> Tensor:
        """Rank a batch with :func:`target_ranks`, accumulate, and return the ranks."""
        ranks = target_ranks(scores, targets, exclude)
        self.update(ranks)
        return ranks

    def compute(self) -> dict[str, float]:
        """Mean of every metric over all users seen; raises if there were none."""
        if self.n_users == 0:
            raise MMRecError("no users were evaluated; cannot average ranking metrics over zero users")
        return {key: total / self.n_users for key, total in self._sums.items()}


# --------------------------------------------------------------------------- #
# top-k lists and beyond-accuracy metrics
# --------------------------------------------------------------------------- #
def topk_items(scores: Tensor, k: int, exclude: Exclude | None = None) -> Tensor:
    """Indices ``[B, k]`` of each row's k best items, excluded items removed.

    Unlike :func:`target_ranks` there is no target to keep: excluded items
    simply never appear. Raises if a row has fewer than k rankable items.
    """
    scores = _check_scores(scores)
    n_users, n_items = scores.shape
    if not 1 <= k <= n_items:
        raise MMRecError(f"k must be in [1, {n_items}], got {k}")
    if exclude is not None:
        mask = exclusion_mask(exclude, n_users, n_items, scores.device)
        short = (n_items - mask.sum(dim=1)) < k
        if bool(short.any()):
            raise MMRecError(
                f"{int(short.sum())} users have fewer than {k} items left after exclusion "
                f"(first: row {int(short.nonzero()[0])})"
            )
        scores = scores.masked_fill(mask, float("-inf"))
    return scores.topk(k, dim=1).indices


def _check_topk(topk: Tensor, n_items: int | None = None) -> Tensor:
    topk = torch.as_tensor(topk).long()
    if topk.dim() != 2 or topk.shape[1] == 0:
        raise MMRecError(f"top-k lists must be a [users, k] matrix with k >= 1, got shape {tuple(topk.shape)}")
    if n_items is not None and topk.numel() and (int(topk.min()) < 0 or int(topk.max()) >= n_items):
        raise MMRecError(f"top-k lists contain an item index outside [0, {n_items})")
    return topk


def catalog_coverage(topk: Tensor, n_items: int) -> float:
    """Share of the catalog that appears in at least one list (aggregate diversity)."""
    topk = _check_topk(topk, n_items)
    return torch.unique(topk).numel() / n_items


def _list_diversity(topk: Tensor, item_vectors: Tensor) -> Tensor:
    """Per-list mean pairwise cosine distance ``[B]`` (0 for single-item lists)."""
    vectors = torch.as_tensor(item_vectors)
    topk = _check_topk(topk, vectors.shape[0]).to(vectors.device)
    vectors = torch.nn.functional.normalize(vectors.to(torch.float64), dim=1)
    v = vectors[topk]  # [B, k, D]
    k = topk.shape[1]
    if k < 2:
        return torch.zeros(topk.shape[0], dtype=torch.float64)
    sim = v @ v.transpose(1, 2)  # [B, k, k]
    off_diag = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)
    return (1.0 - off_diag / (k * (k - 1))).cpu()


def intra_list_diversity(topk: Tensor, item_vectors: Tensor) -> float:
    """Mean over lists of the mean pairwise cosine distance ``1 - cos`` of their items.

    Vectors are L2-normalised first (an all-zero vector counts as orthogonal
    to everything). A list of one item has no pairs and scores 0.
    """
    return float(_list_diversity(topk, item_vectors).mean())


def _popularity_terms(topk: Tensor, item_counts: Tensor) -> tuple[Tensor, Tensor]:
    counts = torch.as_tensor(item_counts).to(torch.float64).reshape(-1)
    if bool((counts < 0).any()):
        raise MMRecError("item counts must be non-negative")
    total = float(counts.sum())
    if total <= 0:
        raise MMRecError("item counts sum to zero; popularity needs training interactions")
    topk = _check_topk(topk, counts.numel()).to(counts.device)
    c = counts[topk]  # [B, k]
    log_pop = torch.log1p(c)
    self_info = -torch.log2(c.clamp(min=1.0) / total)  # unseen items count as seen once
    return log_pop.mean(dim=1).cpu(), self_info.mean(dim=1).cpu()


def popularity_bias(topk: Tensor, item_counts: Tensor) -> dict[str, float]:
    """Mean ``log(1 + count)`` (popularity) and mean ``-log2(p)`` (novelty) of recommended items.

    ``count`` is the item's number of training interactions, ``p = count /
    total``. An item never seen in training (cold-start) has ``p = 0`` and
    infinite self-information, so its count is taken as 1 for novelty only:
    the rarest observable item, which keeps the mean finite.
    Returns ``{"popularity": ..., "novelty": ...}``.
    """
    log_pop, self_info = _popularity_terms(topk, item_counts)
    return {"popularity": float(log_pop.mean()), "novelty": float(self_info.mean())}


def beyond_accuracy_metrics(
    topk: Tensor,
    n_items: int,
    item_vectors: Tensor | None = None,
    item_counts: Tensor | None = None,
) -> dict[str, float]:
    """``coverage@K`` and, when their inputs are given, ``diversity@K``,
    ``popularity@K`` and ``novelty@K``, with K the list length."""
    acc = BeyondAccuracyAccumulator(n_items, item_vectors, item_counts)
    acc.update(topk)
    return acc.compute()


class BeyondAccuracyAccumulator:
    """Streams top-k lists batch by batch; coverage is over the union of all batches.

    Holds one boolean per item (for coverage) plus running sums, so it equals
    :func:`beyond_accuracy_metrics` on the concatenated lists.
    """

    def __init__(self, n_items: int, item_vectors: Tensor | None = None, item_counts: Tensor | None = None) -> None:
        self.n_items = int(n_items)
        if self.n_items < 1:
            raise MMRecError(f"n_items must be positive, got {n_items}")
        self.item_vectors = None if item_vectors is None else torch.as_tensor(item_vectors)
        self.item_counts = None if item_counts is None else torch.as_tensor(item_counts)
        for name, arr in (("item_vectors", self.item_vectors), ("item_counts", self.item_counts)):
            if arr is not None and arr.shape[0] != self.n_items:
                raise MMRecError(f"{name} has {arr.shape[0]} rows, expected one per item ({self.n_items})")
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.k: int | None = None
        self.n_lists = 0
        self._seen = torch.zeros(self.n_items, dtype=torch.bool)
        self._sums = {"diversity": 0.0, "popularity": 0.0, "novelty": 0.0}

    def update(self, topk: Tensor) -> None:
        """Add a batch of top-k lists ``[B, k]`` (k must stay the same)."""
        topk = _check_topk(topk, self.n_items).cpu()
        if self.k is not None and topk.shape[1] != self.k:
            raise MMRecError(f"list length changed from {self.k} to {topk.shape[1]} between batches")
        self.k = topk.shape[1]
        self._seen[topk.flatten()] = True
        if self.item_vectors is not None:
            self._sums["diversity"] += float(_list_diversity(topk, self.item_vectors).sum())
        if self.item_counts is not None:
            log_pop, self_info = _popularity_terms(topk, self.item_counts)
            self._sums["popularity"] += float(log_pop.sum())
            self._sums["novelty"] += float(self_info.sum())
        self.n_lists += topk.shape[0]

    def compute(self) -> dict[str, float]:
        """Metrics keyed ``name@K``; raises if no lists were added."""
        if self.n_lists == 0:
            raise MMRecError("no recommendation lists were added; cannot compute beyond-accuracy metrics")
        k = self.k
        out = {f"coverage@{k}": int(self._seen.sum()) / self.n_items}
        if self.item_vectors is not None:
            out[f"diversity@{k}"] = self._sums["diversity"] / self.n_lists
        if self.item_counts is not None:
            out[f"popularity@{k}"] = self._sums["popularity"] / self.n_lists
            out[f"novelty@{k}"] = self._sums["novelty"] / self.n_lists
        return out


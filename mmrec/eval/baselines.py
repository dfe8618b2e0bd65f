"""Baselines evaluated in the same harness as the model (README "Protocol").

* :class:`MostPopular` ranks every item by its number of training
  interactions, the same list for every user. It is the floor a sequential
  model must clear; held-out (cold) items have count 0 and rank last.
* :class:`ContentKNN` is the "no learning" content baseline: a user is the mean
  of the frozen content embeddings of their history, scored by cosine against
  every item. It shows how much of the model's quality comes from the encoders
  alone, and it is cold-start capable by construction.
* The learned baselines are our own trainer with switches
  (:data:`LEARNED_VARIANTS`): an ID-only transformer (SASRec-like when causal,
  BERT4Rec-like when bidirectional) and our content model with and without
  the ID embedding, so every model shares one data path, loss and evaluation.

Every baseline exposes ``score_fn(histories [B, L]) -> scores [B, N]``, the
contract of :func:`mmrec.eval.protocols.evaluate_scores`; histories are
right-aligned item rows padded with ``-1``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmrec.errors import MMRecError

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], torch.Tensor]

#: Overrides that turn the main config into each learned model of the comparison.
LEARNED_VARIANTS: Dict[str, List[str]] = {
    "ours": [],  # the run's config as given (configs/default.yaml: content + ID embedding)
    "ours+id": ["model.use_id=true"],
    "ours-noid": ["model.use_id=false"],
    "ours-noseen": ["model.seen_bias=false"],  # ablation: without the learned seen-item offset
    "id-sasrec": ["model.use_text=false", "model.use_image=false", "model.use_id=true", "model.causal=true",
                  "loss.contrastive_weight=0.0"],
    "id-sasrec-noseen": ["model.use_text=false", "model.use_image=false", "model.use_id=true", "model.causal=true",
                         "loss.contrastive_weight=0.0", "model.seen_bias=false"],  # a plain SASRec (CE) of ours
    "id-bert4rec": ["model.use_text=false", "model.use_image=false", "model.use_id=true", "model.causal=false",
                    "loss.contrastive_weight=0.0"],
}


class MostPopular:
    """Scores = training interaction counts (identical ranking for every user)."""

    name = "most_popular"

    def __init__(self, counts: Sequence[float] | np.ndarray) -> None:
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        if counts.size == 0:
            raise MMRecError("MostPopular needs one count per catalog item; got an empty array")
        if (counts < 0).any():
            raise MMRecError("MostPopular: item counts must be non-negative")
        self.scores = torch.as_tensor(counts, dtype=torch.float32)

    @classmethod
    def from_space(cls, space: Any) -> "MostPopular":
        """From an :class:`~mmrec.artifact.ItemSpace` (its ``popularity`` = train counts)."""
        return cls(space.popularity)

    @property
    def n_items(self) -> int:
        return int(self.scores.numel())

    def score_fn(self, histories: torch.Tensor) -> torch.Tensor:
        """The popularity row broadcast to every user of the batch."""
        return self.scores.unsqueeze(0).expand(len(histories), -1)


def content_matrix(text: Optional[np.ndarray] = None, image: Optional[np.ndarray] = None,
                   has_text: Optional[np.ndarray] = None, has_image: Optional[np.ndarray] = None) -> np.ndarray:
    """One unit vector per item from its frozen content: L2-normalised text ⊕ image, renormalised.

    Each modality is normalised first so neither dominates by scale; for an
    item with both, the cosine of two such vectors is the mean of the
    per-modality cosines. A missing modality contributes zeros (its mask is
    False), and an item with no content at all stays a zero vector (cosine 0).
    """
    parts = []
    for vecs, mask in ((text, has_text), (image, has_image)):
        if vecs is None:
            continue
        v = np.asarray(vecs, dtype=np.float32)
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(norm > 0, v / np.maximum(norm, 1e-12), 0.0)
        if mask is not None:
            v = v * np.asarray(mask, dtype=bool)[:, None]
        parts.append(v)
    if not parts:
        raise MMRecError("content-kNN needs text or image features; none were given")
    m = np.concatenate(parts, axis=1)
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return np.where(norm > 0, m / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


class ContentKNN:
    """User vector = mean of the history's content vectors; score = cosine to every item."""

    name = "content_knn"

    def __init__(self, item_vectors: np.ndarray | torch.Tensor) -> None:
        v = torch.as_tensor(np.asarray(item_vectors, dtype=np.float32))
        if v.dim() != 2 or v.shape[0] == 0:
            raise MMRecError(f"ContentKNN needs an [items, dim] matrix, got shape {tuple(v.shape)}")
        self.vectors = F.normalize(v, dim=1)

    @classmethod
    def from_features(cls, features: Any, use_image: bool = True) -> "ContentKNN":
        """From :class:`~mmrec.encoders.features.ItemFeatures` (text, plus images where present)."""
        image = features.image if use_image else None
        if features.text is None and image is None:
            raise MMRecError("content-kNN needs embedded text or images; this run has neither "
                             "(an ID-only run: embed the catalog with `mmrec embed` first)")
        return cls(content_matrix(features.text, image, features.has_text,
                                  features.has_image if image is not None else None))

    @property
    def n_items(self) -> int:
        return int(self.vectors.shape[0])

    def score_fn(self, histories: torch.Tensor) -> torch.Tensor:
        """Cosine of the mean history vector (padding ignored) with every item; empty history -> zeros."""
        histories = torch.as_tensor(histories).long()
        valid = histories >= 0
        vecs = self.vectors[histories.clamp(min=0)] * valid.unsqueeze(-1)  # [B, L, d]
        user = F.normalize(vecs.sum(1), dim=1)  # normalising the sum = normalising the mean
        return user @ self.vectors.T


def variant_overrides(variant: str, extra: Sequence[str] = ()) -> List[str]:
    """Config overrides of a learned baseline (see :data:`LEARNED_VARIANTS`) plus ``extra``."""
    if variant not in LEARNED_VARIANTS:
        raise MMRecError(f"unknown learned variant {variant!r}; choose one of {sorted(LEARNED_VARIANTS)}")
    return list(LEARNED_VARIANTS[variant]) + list(extra)

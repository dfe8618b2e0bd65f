"""Image-text pairs for the cross-modal contrastive objective, mixed from several sources.

Sources: the training dataset's own items that have both a text and an image
(held-out cold items excluded: they must stay unseen), plus any image-text
catalogs named in ``train.pair_sources`` (e.g. the public-domain clip art),
embedded with the same frozen encoders. Each step draws a global batch whose
composition follows the configured source weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from mmrec.config import Config, DataConfig
from mmrec.data.prepare import PreparedData
from mmrec.encoders.features import ItemFeatures
from mmrec.train.batches import _rng

log = logging.getLogger(__name__)


@dataclass
class PairPool:
    text: np.ndarray
    image: np.ndarray
    source: np.ndarray       # source index of each pair
    weights: np.ndarray      # sampling weight per source
    names: List[str]

    def __len__(self) -> int:
        return len(self.text)

    def batch(self, size: int, seed: int, step: int, rank: int, world: int,
              device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's share of a seeded global batch: (text, image, pair ids)."""
        rng = _rng(seed, step, 53)
        size = min(size, len(self))
        counts = rng.multinomial(size, self.weights / self.weights.sum())
        picks = []
        for s, c in enumerate(counts):
            members = np.flatnonzero(self.source == s)
            c = min(int(c), len(members))
            if c:
                picks.append(rng.choice(members, size=c, replace=False))
        idx = np.concatenate(picks) if picks else np.arange(min(size, len(self)))
        per = max(1, len(idx) // world)
        idx = idx[rank * per:(rank + 1) * per]
        return (torch.from_numpy(self.text[idx]).to(device), torch.from_numpy(self.image[idx]).to(device),
                torch.from_numpy(idx.astype(np.int64)).to(device))


def _both(feats: ItemFeatures, keep: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    if feats.text is None or feats.image is None:
        return np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)
    m = feats.has_text & feats.has_image
    if keep is not None:
        m = m & keep
    return feats.text[m], feats.image[m]


def build_pair_pool(cfg: Config, data: PreparedData, feats: ItemFeatures) -> Optional[PairPool]:
    """All pair sources of a run, or None when the contrastive objective has nothing to use."""
    if cfg.loss.contrastive_weight == 0 or not (cfg.model.use_text and cfg.model.use_image):
        return None
    texts, images, sources, weights, names = [], [], [], [], []
    if cfg.train.include_dataset_pairs:
        cold = data.split.cold_set
        keep = np.array([i not in cold for i in feats.item_ids], dtype=bool)
        t, i = _both(feats, keep)
        if len(t):
            texts.append(t)
            images.append(i)
            sources.append(np.full(len(t), len(names)))
            weights.append(1.0)
            names.append(cfg.data.name)
    for src in cfg.train.pair_sources:
        from mmrec.data.loaders import load_dataset
        from mmrec.encoders.features import embed_catalog
        raw = load_dataset(DataConfig(name=src.dataset))
        catalog = raw.catalog
        if src.max_items:
            catalog = catalog.subset(catalog.item_ids[: src.max_items])
        f = embed_catalog(catalog, cfg.encoders, modality="both")
        t, i = _both(f)
        if not len(t):
            log.warning("pair source %s has no items with both text and image; skipped", src.dataset)
            continue
        texts.append(t)
        images.append(i)
        sources.append(np.full(len(t), len(names)))
        weights.append(src.weight)
        names.append(src.dataset)
    if not texts:
        log.info("contrastive objective: no item has both a text and an image; objective off")
        return None
    if len({t.shape[1] for t in texts}) > 1 or len({i.shape[1] for i in images}) > 1:
        raise ValueError("pair sources were embedded with different encoders (dimensions differ)")
    pool = PairPool(np.concatenate(texts).astype(np.float32), np.concatenate(images).astype(np.float32),
                    np.concatenate(sources), np.asarray(weights, dtype=np.float64), names)
    log.info("contrastive pairs: %s", ", ".join(f"{n}={int((pool.source == s).sum())}" for s, n in enumerate(names)))
    return pool

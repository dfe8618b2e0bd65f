"""Collecting image--text pairs: pick a source's items, embed both views (cached), split them by item."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from mmrec.align.config import AlignConfig
from mmrec.errors import DataError
from mmrec.urls import is_url

log = logging.getLogger(__name__)


@dataclass
class SourcePairs:
    """One source's aligned (text, image) tower outputs, split into train / held-out items."""

    name: str
    item_ids: List[str]
    texts: np.ndarray      # [n, text_dim] frozen text-tower outputs
    images: np.ndarray     # [n, image_dim] frozen image-tower outputs
    paths: List[str]
    train: np.ndarray      # row indices
    heldout: np.ndarray    # row indices


def select_items(df: Any, texts: Sequence[str], cap: Optional[int], seed: int) -> np.ndarray:
    """Rows with a non-empty text and a local image path: a seeded subset of ``cap`` (all if ``None``), sorted."""
    paths = df["image"].tolist() if "image" in df.columns else [None] * len(df)
    ok = np.array([bool(t.strip()) and bool(p) and not is_url(str(p))
                   for t, p in zip(texts, paths)], dtype=bool)
    idx = np.flatnonzero(ok)
    order = idx[np.random.default_rng(seed).permutation(len(idx))]
    return np.sort(order[:cap] if cap else order)


def split_items(n: int, holdout_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded item split -> (train rows, held-out rows), held-out = ``round(n * fraction)`` (at least 2)."""
    perm = np.random.default_rng([seed, 1]).permutation(n)
    k = max(2, int(round(n * holdout_fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def val_split(sources: Sequence[SourcePairs], fraction: float, seed: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Per source: (fit rows, validation rows) carved out of its training split (seeded)."""
    fit, val = [], []
    for k, s in enumerate(sources):
        if fraction <= 0 or len(s.train) < 20:
            fit.append(s.train)
            val.append(s.train[:0])
            continue
        perm = np.random.default_rng([seed, 3, k]).permutation(len(s.train))
        m = max(2, int(round(len(s.train) * fraction)))
        val.append(np.sort(s.train[perm[:m]]))
        fit.append(np.sort(s.train[perm[m:]]))
    return fit, val


def load_source_pairs(name: str, cfg: AlignConfig, text_encoder: Any = None, image_encoder: Any = None,
                      show_progress: bool = True) -> SourcePairs:
    """Load ``name``'s catalog, pick its items, embed text and image through the cache, split 90/10."""
    from mmrec.config import DataConfig
    from mmrec.data.loaders import load_dataset
    from mmrec.encoders.features import embed_catalog
    from mmrec.encoders.text import item_texts

    df = load_dataset(DataConfig(name=name)).catalog.df
    rows = select_items(df, item_texts(df, cfg.encoders.text), cfg.max_items_per_source, cfg.seed)
    if len(rows) < 20:
        raise DataError(f"alignment source {name!r}: only {len(rows)} items have both text and an image")
    sel = df.iloc[rows].reset_index(drop=True)
    feats = embed_catalog(sel, cfg.encoders, "both", text_encoder=text_encoder, image_encoder=image_encoder,
                          show_progress=show_progress)
    good = np.flatnonzero(feats.has_text & feats.has_image)
    if len(good) < len(sel):
        log.warning("%s: %d of %d selected items lost a modality (broken image?) and are left out",
                    name, len(sel) - len(good), len(sel))
    train, held = split_items(len(good), cfg.holdout_fraction, cfg.seed)
    log.info("%s: %d pairs (%d train, %d held out)", name, len(good), len(train), len(held))
    return SourcePairs(name=name, item_ids=[feats.item_ids[i] for i in good], texts=feats.text[good],
                       images=feats.image[good], paths=[str(sel["image"].iloc[i]) for i in good],
                       train=train, heldout=held)

"""Everything a run needs before the first step: prepared data, item features, the model.

Shared by training, evaluation and the recommender so the three agree on item
rows, held-out items and feature dimensions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from mmrec.config import Config
from mmrec.data.prepare import PreparedData
from mmrec.encoders.features import ItemFeatures
from mmrec.errors import MMRecError
from mmrec.model.seqrec import MMRecModel

log = logging.getLogger(__name__)


@dataclass
class ItemSpace:
    """Catalog rows used by the model: ids, which are trainable (not held out), ID-table rows."""

    item_ids: List[str]
    trainable: np.ndarray
    id_index: np.ndarray
    popularity: np.ndarray

    @property
    def row(self) -> Dict[str, int]:
        return {i: r for r, i in enumerate(self.item_ids)}

    def to_json(self) -> dict:
        return {"item_ids": self.item_ids, "trainable": self.trainable.astype(int).tolist(),
                "id_index": self.id_index.tolist(), "popularity": self.popularity.tolist()}

    @classmethod
    def from_json(cls, obj: dict) -> "ItemSpace":
        return cls(list(obj["item_ids"]), np.asarray(obj["trainable"], dtype=bool),
                   np.asarray(obj["id_index"], dtype=np.int64), np.asarray(obj["popularity"], dtype=np.int64))


def item_space(data: PreparedData) -> ItemSpace:
    """Rows = catalog order. Held-out (cold) items are not trainable and have no ID row."""
    ids = data.catalog.item_ids
    cold = data.split.cold_set
    train_counts: Dict[str, int] = {}
    for seq in data.split.train_sequences().values():
        for i in seq:
            train_counts[i] = train_counts.get(i, 0) + 1
    trainable = np.array([i not in cold and i in train_counts for i in ids], dtype=bool)
    id_index = np.full(len(ids), -1, dtype=np.int64)
    id_index[trainable] = np.arange(int(trainable.sum()))
    pop = np.array([train_counts.get(i, 0) for i in ids], dtype=np.int64)
    return ItemSpace(ids, trainable, id_index, pop)


def train_sequences(data: PreparedData, space: ItemSpace) -> List[np.ndarray]:
    row = space.row
    return [np.array([row[i] for i in seq], dtype=np.int64) for seq in data.split.train_sequences().values()
            if len(seq) >= 2]


def load_features(cfg: Config, data: PreparedData, modality: str = "both") -> ItemFeatures:
    """Embed the catalog with the configured encoders (through the cache)."""
    from mmrec.encoders.features import embed_catalog
    need_text = cfg.model.use_text
    need_image = cfg.model.use_image and any(p for p in data.catalog.image_paths())
    if not (need_text or need_image):
        return ItemFeatures(item_ids=data.catalog.item_ids)
    mod = "both" if need_text and need_image else ("text" if need_text else "image")
    return embed_catalog(data.catalog, cfg.encoders, modality=mod)


def build_model(cfg: Config, space: ItemSpace, feats: ItemFeatures) -> MMRecModel:
    if feats.item_ids != space.item_ids:
        raise MMRecError("item features and the catalog disagree on item order; re-run `mmrec embed`")
    text_dim = feats.text.shape[1] if feats.text is not None and cfg.model.use_text else 0
    image_dim = feats.image.shape[1] if feats.image is not None and cfg.model.use_image else 0
    if cfg.model.use_image and feats.image is not None and not feats.has_image.any():
        image_dim = 0
    n_id = int(space.trainable.sum()) if cfg.model.use_id else 0
    model = MMRecModel(cfg.model, cfg.loss, len(space.item_ids), text_dim, image_dim, n_id)
    model.set_features(feats.text, feats.image, feats.has_text, feats.has_image, space.id_index, space.trainable)
    return model

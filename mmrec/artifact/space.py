"""The item space of a trained model, and the model built over it.

Rows are catalog order. An item is *trainable* when it is not held out as
cold-start and appears in a training sequence; only trainable items get an
ID-table row (``id_index``, -1 otherwise). ``popularity`` counts training
events. Training, evaluation and serving all build the model through
:func:`build_model`, so they agree on rows, features and dimensions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from mmrec.encoders.features import ItemFeatures
from mmrec.errors import MMRecError
from mmrec.model.seqrec import MMRecModel


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

    @classmethod
    def empty(cls) -> "ItemSpace":
        """The space of a catalog-free artefact (weights only; items come by onboarding)."""
        return cls([], np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def item_space(data: Any) -> ItemSpace:
    """The space of a :class:`~mmrec.data.prepare.PreparedData`: held-out (cold) items get no ID row."""
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


def model_dims(cfg: Any, space: ItemSpace, feats: ItemFeatures) -> Dict[str, int]:
    """``text_dim``, ``image_dim`` (0 = modality unused) and ``n_id`` of the model for these features."""
    text_dim = feats.text.shape[1] if feats.text is not None and cfg.model.use_text else 0
    image_dim = feats.image.shape[1] if feats.image is not None and cfg.model.use_image else 0
    if cfg.model.use_image and feats.image is not None and not feats.has_image.any():
        image_dim = 0
    n_id = int(space.trainable.sum()) if cfg.model.use_id else 0
    return {"text_dim": int(text_dim), "image_dim": int(image_dim), "n_id": n_id}


def build_model(cfg: Any, space: ItemSpace, feats: ItemFeatures, dims: Optional[Dict[str, int]] = None) -> MMRecModel:
    """The model of config ``cfg`` over ``space`` with frozen features ``feats``.

    ``dims`` (as recorded in an artefact: ``text_dim``, ``image_dim``, ``n_id``;
    other keys ignored) overrides the dimensions read off the features: a
    catalog-free artefact has no features to read them from.
    """
    if feats.item_ids != space.item_ids:
        raise MMRecError("item features and the catalog disagree on item order; re-run `mmrec embed`")
    d = dict(dims) if dims is not None else model_dims(cfg, space, feats)
    model = MMRecModel(cfg.model, cfg.loss, len(space.item_ids), d["text_dim"], d["image_dim"], d["n_id"])
    model.set_features(feats.text, feats.image, feats.has_text, feats.has_image, space.id_index, space.trainable)
    return model

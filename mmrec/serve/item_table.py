"""The item table: the single owner of every known item's vector and metadata.

Rows are the catalog's items first (model-row order), onboarded items after.
A row is never deleted: a removed item is hidden from results by the index,
but its vector stays here, so histories that name it still mean something.
The table is not locked itself; :class:`mmrec.Recommender` guards it with its
readers-writer lock.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from mmrec.contract import quote
from mmrec.data.schema import Catalog
from mmrec.index import UnknownItemError

Features = Tuple[Optional[np.ndarray], bool, Optional[np.ndarray], bool]  # text, has_text, image, has_image


class ItemTable:
    """Vectors ``[n, dim]``, ids, titles, metadata, popularity, onboarded records and removals."""

    def __init__(self, catalog: Catalog, vectors: np.ndarray, popularity: np.ndarray) -> None:
        ids = catalog.item_ids
        if len(ids) != len(vectors) or len(ids) != len(popularity):
            raise ValueError("catalog, vectors and popularity disagree on the number of items")
        self.dim = int(vectors.shape[1])
        self.n_catalog = len(ids)
        self._vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        self._n = len(ids)
        self._ids: List[str] = list(ids)
        self._row: Dict[str, int] = {iid: r for r, iid in enumerate(ids)}
        self._catalog = catalog.df
        self._titles: Dict[str, str] = dict(zip(ids, catalog.df["title"].fillna("").tolist()))
        self._images: Dict[str, Optional[str]] = dict(zip(ids, catalog.image_paths()))
        pop = np.asarray(popularity, dtype=np.int64)
        self._popularity = {ids[i]: int(pop[i]) for i in range(len(ids))}
        self._max_popularity = max(1, int(pop.max())) if len(pop) else 1
        self._pop_order = [ids[i] for i in np.argsort(-pop, kind="stable")]
        self.onboarded: Dict[str, dict] = {}
        self.onboarded_features: Dict[str, Features] = {}
        self.removed: set[str] = set()

    @classmethod
    def of_model(cls, model: Any, catalog: Catalog, popularity: np.ndarray, chunk: int = 65_536) -> "ItemTable":
        """The table of a trained model's catalog: item-tower vectors of every catalog row."""
        import torch

        n = len(catalog)
        with torch.inference_mode():
            dev = next(model.parameters()).device
            parts = [model.item_vectors(torch.arange(s, min(s + chunk, n), device=dev)).float().cpu().numpy()
                     for s in range(0, n, chunk)]
        vecs = np.concatenate(parts) if parts else np.zeros((0, model.cfg.dim), np.float32)
        return cls(catalog, vecs, popularity)

    # ----------------------------------------------------------------- reads
    def __len__(self) -> int:
        return self._n

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    @property
    def ids(self) -> List[str]:
        return self._ids

    @property
    def catalog_ids(self) -> List[str]:
        return self._ids[: self.n_catalog]

    def row(self, item_id: str) -> Optional[int]:
        return self._row.get(item_id)

    def rows(self, item_ids: Iterable[str]) -> List[int]:
        """Rows of the known ids among ``item_ids`` (unknown ones skipped), in order."""
        return [self._row[i] for i in item_ids if i in self._row]

    def vectors(self) -> np.ndarray:
        """All rows ``[n, dim]`` (a view; do not modify)."""
        return self._vecs[: self._n]

    def vector(self, item_id: str) -> np.ndarray:
        row = self._row.get(item_id)
        if row is None:
            raise UnknownItemError(f"unknown item {quote(item_id)}")
        return self._vecs[row]

    def title(self, item_id: str) -> str:
        return self._titles.get(item_id, "")

    def image(self, item_id: str) -> Optional[str]:
        return self._images.get(item_id)

    def item(self, item_id: str) -> dict:
        """Metadata of an item: its catalog row or its onboarded record (a copy), plus ``onboarded``/``removed``."""
        row = self._row.get(item_id)
        if row is None:
            raise UnknownItemError(f"unknown item {quote(item_id)}")
        if item_id in self.onboarded:
            meta: Dict[str, Any] = dict(self.onboarded[item_id])
        else:
            meta = {k: _plain(v) for k, v in self._catalog.iloc[row].to_dict().items()}
        meta.update(onboarded=item_id in self.onboarded, removed=item_id in self.removed)
        return meta

    def popularity(self, item_id: str) -> int:
        return self._popularity.get(item_id, 0)

    def relative_popularity(self, item_id: str) -> float:
        """Training popularity relative to the most popular item (0..1)."""
        return self._popularity.get(item_id, 0) / self._max_popularity

    def by_popularity(self) -> List[str]:
        """Catalog items by training popularity (most first), then onboarded items (no training events)."""
        return self._pop_order + [i for i in self.onboarded if i not in self._popularity]

    # ---------------------------------------------------------------- writes
    def put(self, records: Sequence[dict], vectors: np.ndarray, features: Sequence[Features]) -> None:
        """Add or replace onboarded items (caller holds the write lock)."""
        new_ids, new_vecs = [], []
        for rec, vec, feat in zip(records, vectors, features):
            iid = rec["item_id"]
            row = self._row.get(iid)
            if row is None:
                new_ids.append(iid)
                new_vecs.append(vec)
            else:
                self._vecs[row] = vec
            self._titles[iid] = str(rec.get("title") or "")
            self._images[iid] = rec.get("image")
            self.onboarded[iid] = dict(rec)
            self.onboarded_features[iid] = feat
            self.removed.discard(iid)
        if new_ids:
            self._append(new_ids, np.stack(new_vecs))

    def _append(self, ids: List[str], vecs: np.ndarray) -> None:
        need = self._n + len(ids)
        if need > len(self._vecs):
            grown = np.empty((max(need, 2 * len(self._vecs), 1024), self.dim), dtype=np.float32)
            grown[: self._n] = self._vecs[: self._n]
            self._vecs = grown
        self._vecs[self._n: need] = vecs
        for r, iid in enumerate(ids, start=self._n):
            self._row[iid] = r
            self._ids.append(iid)
        self._n = need

    def mark_removed(self, item_ids: Iterable[str]) -> None:
        self.removed.update(i for i in item_ids if i in self._row)


def _plain(v: Any) -> Any:
    """numpy scalars / arrays from a DataFrame row as plain Python values."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


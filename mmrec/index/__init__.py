"""FAISS retrieval over item vectors with stable string item ids.

``ItemIndex`` wraps any FAISS factory index (Flat, HNSW, IVF-PQ, on-disk IVF)
behind string ids, add/replace/remove, filtered batch search and atomic,
fingerprint-checked save/load; builds and large adds are refused up front
when they would not fit in memory (:mod:`mmrec.index.memory`).
"""
from __future__ import annotations

from mmrec.config.index import IndexConfig
from mmrec.index.errors import (
    IndexFileError,
    IndexMemoryError,
    IndexMismatchError,
    ItemIndexError,
    UnknownItemError,
)
from mmrec.index.filters import ItemFilter
from mmrec.index.item_index import ItemIndex

__all__ = [
    "IndexConfig",
    "ItemIndex",
    "ItemFilter",
    "ItemIndexError",
    "IndexMismatchError",
    "IndexFileError",
    "IndexMemoryError",
    "UnknownItemError",
]

"""String item ids <-> the int64 ids FAISS knows items by.

Each item gets an internal id from a counter that only grows, so an id is
never reused after a removal (a stale search result can never name the wrong
item). Removed items an index cannot delete (HNSW, Refine) stay in FAISS as
tombstones until the next rebuild.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from mmrec.index.errors import UnknownItemError


class IdMap:
    """The str <-> internal-id map of the live items, the id counter, and the tombstones.

    ``by_id`` / ``by_iid`` are the two dicts themselves (the search loop reads
    them directly); change them only through the methods.
    """

    def __init__(self, next_iid: int = 0) -> None:
        self.by_id: dict[str, int] = {}
        self.by_iid: dict[int, str] = {}
        self.next_iid = int(next_iid)  # the counter: only ever grows, survives clear()
        self.tombstones: set[int] = set()  # internal ids removed from the map but still in FAISS

    @classmethod
    def restore(cls, ids: Sequence[str], iids: Sequence[int], next_iid: int, tombstones: Iterable[int]) -> "IdMap":
        """The map a saved index recorded (``ids[i]`` has internal id ``iids[i]``)."""
        out = cls(next_iid)
        out.by_id = dict(zip(ids, iids))
        out.by_iid = dict(zip(iids, ids))
        out.tombstones = set(tombstones)
        return out

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.by_id

    def names(self) -> list[str]:
        """The live item ids, in insertion order."""
        return list(self.by_id)

    def iid(self, item_id: str) -> int:
        """The internal id of ``item_id``; :class:`UnknownItemError` if it is not in the index."""
        try:
            return self.by_id[item_id]
        except KeyError:
            raise UnknownItemError(f"item {item_id!r} is not in the index") from None

    def get(self, item_id: str) -> Optional[int]:
        return self.by_id.get(item_id)

    def upcoming(self, n: int) -> np.ndarray:
        """The next ``n`` internal ids, not yet taken (:meth:`advance` takes them)."""
        return np.arange(self.next_iid, self.next_iid + n, dtype=np.int64)

    def advance(self, n: int) -> None:
        self.next_iid += n

    def bind(self, ids: Sequence[str], iids: np.ndarray) -> None:
        """Map ``ids[i]`` <-> ``iids[i]``."""
        for item_id, iid in zip(ids, iids.tolist()):
            self.by_id[item_id] = iid
            self.by_iid[iid] = item_id

    def drop(self, iids: Iterable[int]) -> None:
        """Forget the items with these internal ids (tombstones are the caller's business)."""
        for iid in iids:
            del self.by_id[self.by_iid.pop(iid)]

    def clear(self) -> None:
        """No items and no tombstones; the counter keeps counting."""
        self.by_id = {}
        self.by_iid = {}
        self.tombstones = set()

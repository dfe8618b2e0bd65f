"""The raw float32 item vectors kept beside the FAISS index.

They cost memory but buy three things: indexes that cannot delete (HNSW,
Refine) can be rebuilt from them, ``ItemIndex.vector(id)`` works for any index
type, and a filtered query whose approximate candidates run out can fall back
to exact scores.
"""
from __future__ import annotations

import numpy as np


class VectorStore:
    """Rows of float32 vectors that grow by doubling, and which internal id each row holds.

    Rows ``[0, n)`` of ``data`` / ``row_iid`` are live (the rest is spare
    capacity); ``row_of`` maps an internal id to its row. A removal moves the
    last row into the hole, so the live rows stay contiguous. ``data`` may be
    a read-only memory map of a loaded index until :meth:`make_writable`.
    """

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.clear()

    @classmethod
    def restore(cls, vecs: np.ndarray, iids: np.ndarray) -> "VectorStore":
        """The store of a saved index: ``vecs[i]`` is the vector of internal id ``iids[i]``."""
        out = cls(vecs.shape[1])
        out.data = vecs
        out.row_iid = iids
        out.n = len(iids)
        out.row_of = {iid: row for row, iid in enumerate(iids.tolist())}
        return out

    def clear(self) -> None:
        self.data = np.empty((0, self.dim), dtype=np.float32)
        self.row_iid = np.empty(0, dtype=np.int64)
        self.n = 0
        self.row_of: dict[int, int] = {}

    @property
    def capacity(self) -> int:
        """Rows allocated, live or spare."""
        return len(self.data)

    def capacity_after(self, n_new: int) -> int:
        """Rows allocated once ``n_new`` more rows are appended."""
        need = self.n + n_new
        return self.capacity if need <= self.capacity else max(need, 2 * self.capacity, 1024)

    def live(self) -> np.ndarray:
        """The live rows (a view)."""
        return self.data[: self.n]

    def live_iids(self) -> np.ndarray:
        """The internal id of each live row (a view)."""
        return self.row_iid[: self.n]

    def get(self, iid: int) -> np.ndarray:
        """A copy of the vector of internal id ``iid``."""
        return np.array(self.data[self.row_of[iid]], dtype=np.float32, copy=True)

    def append(self, iids: np.ndarray, x: np.ndarray) -> None:
        need = self.n + len(iids)
        if need > len(self.data):
            cap = self.capacity_after(len(iids))
            vecs = np.empty((cap, self.dim), dtype=np.float32)
            vecs[: self.n] = self.data[: self.n]
            row_iid = np.empty(cap, dtype=np.int64)
            row_iid[: self.n] = self.row_iid[: self.n]
            self.data, self.row_iid = vecs, row_iid
        self.data[self.n : need] = x
        self.row_iid[self.n : need] = iids
        for row, iid in enumerate(iids.tolist(), start=self.n):
            self.row_of[iid] = row
        self.n = need

    def drop(self, iids: list[int]) -> None:
        """Remove the rows of these internal ids (needs :meth:`make_writable` first)."""
        for iid in iids:
            row = self.row_of.pop(iid)
            last = self.n - 1
            if row != last:  # move the last row into the hole
                moved = int(self.row_iid[last])
                self.data[row] = self.data[last]
                self.row_iid[row] = moved
                self.row_of[moved] = row
            self.n = last

    def make_writable(self) -> None:
        """Copy a read-only (memory-mapped) table into RAM."""
        if not self.data.flags.writeable:
            self.data = np.array(self.data, dtype=np.float32, copy=True)

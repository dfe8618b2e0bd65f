"""A FAISS index over item vectors, addressed by stable string item ids.

Users and the rest of mmrec speak string item ids; FAISS speaks int64.
:class:`ItemIndex` is the public face and coordinates the parts, each with one
job, under one lock:

- :mod:`mmrec.index.ids` (``IdMap``): string id <-> internal id, from a
  counter that only grows (an id is never reused after a removal, so a stale
  search result can never name the wrong item), and the tombstones;
- :mod:`mmrec.index.vectors` (``VectorStore``): the raw float32 vectors kept
  beside FAISS, so that indexes that cannot delete (HNSW, Refine) can be
  rebuilt once too many removed items linger as tombstones, ``vector(id)``
  works for any index type, and a query whose approximate candidates run out
  after filtering can fall back to exact scores;
- :mod:`mmrec.index.faiss_index` (``FaissIndex``): the FAISS index itself,
  made from the factory string, trained, added to, removed from, reset;
- :mod:`mmrec.index.memory`: the estimates, and the guard that refuses a
  build or large add that would not fit;
- :mod:`mmrec.index.search`: filtered batch search (``ItemFilter`` ->
  ``IDSelector`` bitmap, per-row exclusions by over-fetch, the exact
  fallback), with the table of which index types take a selector;
- :mod:`mmrec.index.storage`: the on-disk folder (``index.faiss``, +
  ``index.ivfdata`` for on-disk IVF lists, ``vectors.npy``,
  ``manifest.json``), written atomically and checked before it is trusted;
- :mod:`mmrec.index.validate`: checks of the caller's ids, vectors and queries.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import faiss
import numpy as np

from mmrec.config.index import IndexConfig
from mmrec.index import memory, search as _search, storage, validate
from mmrec.index.errors import UnknownItemError
from mmrec.index.faiss_index import FaissIndex
from mmrec.index.filters import ItemFilter
from mmrec.index.ids import IdMap
from mmrec.index.storage import FORMAT, FORMAT_VERSION, INDEX_FILE, IVFDATA_FILE, MANIFEST, VECTORS_FILE
from mmrec.index.vectors import VectorStore

__all__ = ["ItemIndex", "FORMAT", "FORMAT_VERSION", "MANIFEST", "INDEX_FILE", "IVFDATA_FILE", "VECTORS_FILE"]

log = logging.getLogger(__name__)


class ItemIndex:
    """Nearest-neighbour search over item vectors with string ids.

    Thread-safe: every operation holds one re-entrant lock, so onboarding and
    queries may run from several threads (each search still uses FAISS's
    OpenMP threads across its batch).
    """

    def __init__(self, dim: int, config: Optional[IndexConfig] = None,
                 fingerprint: Optional[Mapping[str, Any]] = None) -> None:
        self._dim = validate.check_dim(dim)
        config = config if config is not None else IndexConfig()
        self._setup(config, validate.check_fingerprint(fingerprint), storage.now(), IdMap(), VectorStore(self._dim))
        self._faiss = FaissIndex.create(self._dim, config)

    def _setup(self, config: IndexConfig, fingerprint: dict, created_at: str, ids: IdMap, vectors: VectorStore) -> None:
        self._config = config
        self._fingerprint = fingerprint
        self._lock = threading.RLock()
        self._created_at = created_at
        if config.threads > 0:
            faiss.omp_set_num_threads(config.threads)
        self._ids = ids
        self._vectors = vectors
        self._plans = _search.FilterPlans()  # resolved filters, dropped on every write

    # ----------------------------------------------------------- properties

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def config(self) -> IndexConfig:
        return self._config

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What produced the vectors (model / encoder hashes), checked on load."""
        return dict(self._fingerprint)

    @property
    def is_trained(self) -> bool:
        return self._faiss.is_trained

    @property
    def ntotal(self) -> int:
        """Entries in the FAISS index, tombstones included."""
        return self._faiss.ntotal

    @property
    def tombstone_count(self) -> int:
        return len(self._ids.tombstones)

    @property
    def supports_selector(self) -> bool:
        """True when filters and tombstones go into FAISS as an ``IDSelector`` (else: post-filtered)."""
        return self._faiss.sel_ok

    @property
    def supports_removal(self) -> bool:
        """False for indexes (HNSW, Refine) where removal means tombstones + rebuild."""
        return self._faiss.removable

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ids

    def __repr__(self) -> str:
        return (
            f"ItemIndex(factory={self._config.factory!r}, metric={self._config.metric!r}, "
            f"dim={self._dim}, items={len(self)}, tombstones={self.tombstone_count})"
        )

    def ids(self) -> list[str]:
        """All item ids currently in the index."""
        with self._lock:
            return self._ids.names()

    def internal_id(self, item_id: str) -> int:
        """The stable int64 id FAISS knows ``item_id`` by."""
        return self._ids.iid(item_id)

    def vector(self, item_id: str) -> np.ndarray:
        """A copy of the stored vector of ``item_id``."""
        with self._lock:
            return self._vectors.get(self.internal_id(item_id))

    # --------------------------------------------------------------- writing

    def build(self, ids: Sequence[str], vectors: np.ndarray, fingerprint: Optional[Mapping[str, Any]] = None,
              ) -> "ItemIndex":
        """Replace the contents with ``ids``/``vectors``, training on a sample if needed.

        Internal ids keep counting from where they were, so ids handed out
        before a rebuild are never reused.
        """
        ids, x = validate.check_batch(ids, vectors, self._dim)
        with self._lock:
            fresh = self._faiss.fresh()
            # before anything is dropped or allocated; the current contents are freed by the rebuild
            memory.guard(fresh.index, len(ids), self._dim, self._config, action="build", base_bytes=self._held())
            if fingerprint is not None:
                self._fingerprint = validate.check_fingerprint(fingerprint)
            self._ids.clear()
            self._vectors.clear()
            self._plans.clear()
            self._faiss = fresh
            if not fresh.is_trained:
                fresh.train(x)
            self._prepare_for_write()
            self._add_locked(ids, x)
            log.info("built %s index over %d items (dim %d)", self._config.factory, len(ids), self._dim)
        return self

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add items; an id already present is replaced (old entry removed first).

        An untrained index (fresh IVF) is trained on these vectors.
        """
        ids, x = validate.check_batch(ids, vectors, self._dim)
        if not ids:
            return
        with self._lock:
            memory.guard_add(self._faiss.index, len(ids), self._vectors.capacity_after(len(ids)), self._held(),
                             self._dim, self._config)
            if not self._faiss.is_trained:
                self._faiss.train(x)
            self._prepare_for_write()
            present = [self._ids.by_id[i] for i in ids if i in self._ids]
            if present:
                self._remove_iids(present)
            self._add_locked(ids, x)
            self._maybe_rebuild()

    def _add_locked(self, ids: list[str], x: np.ndarray) -> None:
        if not ids:
            return
        iids = self._ids.upcoming(len(ids))
        self._faiss.add(x, iids)
        self._ids.advance(len(ids))
        self._plans.clear()
        self._vectors.append(iids, x)
        self._ids.bind(ids, iids)

    def remove(self, ids: Iterable[str], missing_ok: bool = False) -> int:
        """Remove items; returns how many were removed.

        Unknown ids raise :class:`UnknownItemError` unless ``missing_ok``.
        Indexes that cannot delete hide the items (tombstones) and are rebuilt
        once tombstones exceed ``rebuild_tombstone_fraction`` of their entries.
        """
        if isinstance(ids, str):
            ids = [ids]
        ids = list(dict.fromkeys(ids))
        with self._lock:
            missing = [i for i in ids if i not in self._ids]
            if missing and not missing_ok:
                raise UnknownItemError(f"cannot remove items not in the index: {validate.show(missing)}")
            iids = [self._ids.by_id[i] for i in ids if i in self._ids]
            if not iids:
                return 0
            self._prepare_for_write()
            self._remove_iids(iids)
            self._maybe_rebuild()
            return len(iids)

    def _remove_iids(self, iids: list[int]) -> None:
        self._plans.clear()
        if self._faiss.removable:
            self._faiss.remove(iids)
        else:
            self._ids.tombstones.update(iids)
        self._ids.drop(iids)
        self._vectors.drop(iids)

    def _maybe_rebuild(self) -> None:
        tombstones = len(self._ids.tombstones)
        if tombstones and tombstones / max(1, self._faiss.ntotal) > self._config.rebuild_tombstone_fraction:
            log.info("rebuilding %s index: %d of %d entries are tombstones (> %.0f%%)", self._config.factory,
                     tombstones, self._faiss.ntotal, 100 * self._config.rebuild_tombstone_fraction)
            self.rebuild()

    def rebuild(self, retrain: bool = False) -> None:
        """Rebuild the FAISS index from the stored vectors, dropping tombstones.

        Items keep their internal ids. ``retrain`` re-learns IVF/PQ from the
        current items (useful after the catalog has drifted); otherwise the
        trained quantisers are reused.
        """
        with self._lock:
            if retrain:  # train a fresh index first: if training fails, the old one stays in place
                fresh = self._faiss.fresh()
                if not fresh.is_trained:
                    fresh.train(self._vectors.live())
                self._faiss = fresh
                self._plans.clear()
            else:
                self._prepare_for_write()
                self._faiss.reset()
            self._prepare_for_write()
            self._ids.tombstones.clear()
            self._plans.clear()
            self._faiss.refill(self._vectors.live(), self._vectors.live_iids())

    def _held(self) -> int:
        """Estimated bytes this index holds now (no scratch), freed when it is rebuilt."""
        return memory.held_bytes(self._faiss.index, self._vectors.n, self._vectors.capacity, self._dim, self._config)

    def _prepare_for_write(self) -> None:
        """Copy on write: a loaded index's mapped vectors come into RAM, its on-disk lists to a working file."""
        self._vectors.make_writable()
        self._faiss.prepare_for_write()

    # -------------------------------------------------------------- searching

    def search(self, queries: np.ndarray, k: int, exclude: Optional[Sequence[Optional[Iterable[str]]]] = None, *,
               filter: Optional[ItemFilter] = None, nprobe: Optional[int] = None, ef_search: Optional[int] = None,
               ) -> tuple[list[list[str]], np.ndarray]:
        """Top-``k`` items for each query row that pass ``filter``, minus the row's ``exclude`` ids.

        Returns ``(ids, scores)``: ``ids[b]`` lists up to ``k`` item ids best
        first; ``scores`` is float32 ``[B, min(k, len(self))]`` (inner product
        for ``ip``, squared distance for ``l2``), NaN past the end of a row
        with fewer results. ``k`` above the number of items is clamped to it
        before anything is allocated, so ``k=10**12`` returns every item (an
        empty index gives ``[B, 0]`` scores).

        ``filter`` (:class:`ItemFilter`) is one batch-wide filter: its
        allowed/denied ids (and the tombstones of removed items) become a FAISS
        ``IDSelector`` where the index type takes one, and a post-filter
        otherwise; its ``predicate`` is always a post-filter. ``exclude[b]``
        (e.g. a user's seen items) is handled by over-fetching; a row an
        approximate index runs out of candidates for is answered exactly from
        the stored vectors, under the same filter, and small allow-lists are
        scored exactly instead of searched (details: :func:`mmrec.index.search.search`).
        ``nprobe`` / ``ef_search`` override the config for this call only,
        without modifying the shared index (except for index types that take
        no search parameters).
        """
        q = validate.check_search(queries, k, exclude, filter, self._dim)
        with self._lock:
            return _search.search(self._ids, self._vectors, self._faiss, self._plans, q, k, exclude=exclude,
                                  filter=filter, nprobe=nprobe, ef_search=ef_search, faiss_search=self._faiss_search)

    def _faiss_search(self, x: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every FAISS search call goes through here (scripts/bench_index.py and the tests spy on it)."""
        return self._faiss.search(x, k, params)

    @property
    def _filter_cache(self) -> list:
        """The resolved filters, most recent first (scripts/bench_index.py and the tests read and clear it)."""
        return self._plans.cache

    # ----------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> Path:
        """Write the index folder atomically (temp folder, then swap)."""
        directory = Path(directory)
        with self._lock:
            storage.save(directory, fx=self._faiss, vectors=self._vectors, ids=self._ids, config=self._config,
                         fingerprint=self._fingerprint, created_at=self._created_at)
        log.info("saved %s index with %d items to %s", self._config.factory, self._vectors.n, directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, expected_fingerprint: Optional[Mapping[str, Any]] = None,
             expected_dim: Optional[int] = None, config: Optional[IndexConfig] = None) -> "ItemIndex":
        """Load an index folder, refusing it if it does not match what the caller has.

        ``expected_fingerprint``: every key given must equal the saved value
        (the index was built from another model or encoder otherwise).
        ``expected_dim``: the caller's vector dimension. ``config``: override
        the query-time settings (nprobe, ef_search, threads, tombstone
        fraction); factory, metric and on_disk must match the saved ones.
        """
        saved = storage.load(Path(directory), expected_fingerprint, expected_dim, config)
        self = cls.__new__(cls)
        self._dim = saved.dim
        self._setup(saved.config, saved.fingerprint, saved.created_at, saved.ids, saved.vectors)
        self._faiss = FaissIndex(saved.index, saved.config)
        log.info("loaded %s index with %d items from %s", saved.config.factory, len(self._ids), saved.directory)
        return self

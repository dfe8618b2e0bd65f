"""A FAISS index over item vectors, addressed by stable string item ids.

Users and the rest of mmrec speak string item ids; FAISS speaks int64. Each
item gets an internal id from a counter that only grows, so an id is never
reused after a removal (a stale search result can never name the wrong item).

The raw float32 vectors are kept beside the FAISS index. That costs memory but
buys three things: indexes that cannot delete (HNSW, Refine) can be rebuilt
from them once too many removed items linger as tombstones, ``vector(id)``
works for any index type, and a query whose approximate candidates run out
after filtering can fall back to exact scores.

On disk an index is a folder: ``index.faiss`` (+ ``index.ivfdata`` for on-disk
IVF lists), ``vectors.npy`` and ``manifest.json`` (format version, config,
dim, id map, fingerprint of the model that made the vectors, file sizes). It
is written to a temp folder and swapped in whole, and loading checks the
manifest before trusting any file.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
import json
import logging
import os
import shutil
import tempfile
import threading
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import faiss
import numpy as np

from mmrec.atomic import atomic_dir, moved_aside, write_json
from mmrec.errors import ConfigError, MMRecError
from mmrec.index import _faiss_util as fu
from mmrec.index import memory
from mmrec.index.config import IndexConfig
from mmrec.index.errors import IndexFileError, IndexMismatchError, UnknownItemError

log = logging.getLogger(__name__)

FORMAT = "mmrec-item-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IVFDATA_FILE = "index.ivfdata"
VECTORS_FILE = "vectors.npy"

_ADD_CHUNK = 65_536
_SMALL_ADD_BYTES = 16 << 20  # adds growing the index by less than this skip the free-memory check


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _show(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:limit])
    return shown + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def _nonfinite_rows(x: np.ndarray) -> np.ndarray:
    """Rows with a NaN/inf, checked ~4 MB at a time (a whole-array mask would cost n*dim bytes)."""
    bad = np.zeros(len(x), dtype=bool)
    step = max(1, (4 << 20) // max(1, x.shape[1]))
    for start in range(0, len(x), step):
        bad[start : start + step] = ~np.isfinite(x[start : start + step]).all(axis=1)
    return bad


class ItemIndex:
    """Nearest-neighbour search over item vectors with string ids.

    Thread-safe: every operation holds one re-entrant lock, so onboarding and
    queries may run from several threads (each search still uses FAISS's
    OpenMP threads across its batch).
    """

    def __init__(
        self,
        dim: int,
        config: Optional[IndexConfig] = None,
        fingerprint: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ConfigError(f"index dimension must be a positive integer, got {dim!r}")
        self._dim = int(dim)
        self._config = config if config is not None else IndexConfig()
        self._fingerprint = self._check_fingerprint(fingerprint)
        self._lock = threading.RLock()
        self._created_at = _now()
        self._next_iid = 0
        self._workdir: Optional[Path] = None
        self._apply_threads()
        self._reset_items()
        self._set_faiss_index(self._new_faiss_index())

    # ------------------------------------------------------------------ state

    def _reset_items(self) -> None:
        self._str2iid: dict[str, int] = {}
        self._iid2str: dict[int, str] = {}
        self._row_of: dict[int, int] = {}
        self._vecs = np.empty((0, self._dim), dtype=np.float32)
        self._row_iid = np.empty(0, dtype=np.int64)
        self._n = 0
        self._tombstones: set[int] = set()

    def _apply_threads(self) -> None:
        if self._config.threads > 0:
            faiss.omp_set_num_threads(self._config.threads)

    @staticmethod
    def _check_fingerprint(fp: Optional[Mapping[str, Any]]) -> dict[str, Any]:
        if fp is None:
            return {}
        if not isinstance(fp, Mapping):
            raise ConfigError(f"index fingerprint must be a mapping, got {type(fp).__name__}")
        out = dict(fp)
        try:
            json.dumps(out, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"index fingerprint must be JSON-serialisable: {exc}") from None
        return out

    def _new_faiss_index(self) -> faiss.Index:
        cfg = self._config
        metric = faiss.METRIC_INNER_PRODUCT if cfg.metric == "ip" else faiss.METRIC_L2
        try:
            base = faiss.index_factory(self._dim, cfg.factory, metric)
        except RuntimeError as exc:
            raise ConfigError(
                f"index.factory {cfg.factory!r} is not a valid FAISS factory string for "
                f"{self._dim}-d vectors: {fu.first_line(exc)}"
            ) from None
        ivf = fu.ivf_of(base)
        if cfg.on_disk:
            if ivf is None:
                raise ConfigError(f"index.on_disk needs an IVF factory, got {cfg.factory!r}")
            if fu.is_block_invlists(ivf):
                raise ConfigError(
                    f"index.on_disk does not support fast-scan IVF codes ({cfg.factory!r}); "
                    "use plain PQ (e.g. 'IVF1024,PQ32') for on-disk lists"
                )
        fu.disable_polysemous_training(base)
        if fu.supports_native_ids(base):
            return base
        return faiss.IndexIDMap2(base)

    def _set_faiss_index(self, index: faiss.Index) -> None:
        self._index = index
        self._ivf = fu.ivf_of(index)
        self._removable = fu.supports_removal(index)
        # probes which knobs apply, and sets them to the configured defaults
        self._params = fu.settable_params(
            index,
            {
                "nprobe": self._config.nprobe,
                "efSearch": self._config.ef_search,
                "k_factor_rf": self._config.refine_k_factor,
            },
        )

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
        return bool(self._index.is_trained)

    @property
    def ntotal(self) -> int:
        """Entries in the FAISS index, tombstones included."""
        return int(self._index.ntotal)

    @property
    def tombstone_count(self) -> int:
        return len(self._tombstones)

    @property
    def supports_removal(self) -> bool:
        """False for indexes (HNSW, Refine) where removal means tombstones + rebuild."""
        return self._removable

    def __len__(self) -> int:
        return len(self._str2iid)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._str2iid

    def __repr__(self) -> str:
        return (
            f"ItemIndex(factory={self._config.factory!r}, metric={self._config.metric!r}, "
            f"dim={self._dim}, items={len(self)}, tombstones={len(self._tombstones)})"
        )

    def ids(self) -> list[str]:
        """All item ids currently in the index."""
        with self._lock:
            return list(self._str2iid)

    def internal_id(self, item_id: str) -> int:
        """The stable int64 id FAISS knows ``item_id`` by."""
        try:
            return self._str2iid[item_id]
        except KeyError:
            raise UnknownItemError(f"item {item_id!r} is not in the index") from None

    def vector(self, item_id: str) -> np.ndarray:
        """A copy of the stored vector of ``item_id``."""
        with self._lock:
            iid = self.internal_id(item_id)
            return np.array(self._vecs[self._row_of[iid]], dtype=np.float32, copy=True)

    # ------------------------------------------------------------ validation

    def _check_batch(self, ids: Sequence[str], vectors: Any) -> tuple[list[str], np.ndarray]:
        if isinstance(ids, str):
            raise MMRecError("ids must be a list of item ids, not a single string")
        ids = list(ids)
        for item_id in ids:
            if not isinstance(item_id, str) or not item_id:
                raise MMRecError(f"item ids must be non-empty strings, got {item_id!r}")
        ids = [str(i) for i in ids]  # plain str, not numpy.str_
        if len(set(ids)) != len(ids):
            dups = sorted(i for i, c in Counter(ids).items() if c > 1)
            raise MMRecError(f"duplicate item ids in one batch: {_show(dups)}")
        x = np.asarray(vectors)
        if x.ndim != 2:
            raise IndexMismatchError(f"vectors must be a 2-d array [n, {self._dim}], got shape {x.shape}")
        if x.shape[1] != self._dim:
            raise IndexMismatchError(
                f"vectors have dimension {x.shape[1]}, the index has dimension {self._dim}"
            )
        if x.shape[0] != len(ids):
            raise MMRecError(f"got {len(ids)} item ids but {x.shape[0]} vectors")
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = _nonfinite_rows(x)
        if bad.any():
            raise MMRecError(f"non-finite values in the vectors of items {_show([ids[i] for i in np.flatnonzero(bad)])}")
        return ids, x

    def _check_queries(self, queries: Any) -> np.ndarray:
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self._dim:
            raise IndexMismatchError(
                f"queries must have shape [batch, {self._dim}], got {np.asarray(queries).shape}"
            )
        q = np.ascontiguousarray(q, dtype=np.float32)
        if not np.isfinite(q).all():
            raise MMRecError("queries contain non-finite values")
        return q

    # --------------------------------------------------------------- writing

    def build(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        fingerprint: Optional[Mapping[str, Any]] = None,
    ) -> "ItemIndex":
        """Replace the contents with ``ids``/``vectors``, training on a sample if needed.

        Internal ids keep counting from where they were, so ids handed out
        before a rebuild are never reused.
        """
        ids, x = self._check_batch(ids, vectors)
        with self._lock:
            fresh = self._new_faiss_index()
            # before anything is dropped or allocated; the current contents are freed by the rebuild
            self._check_memory(fresh, len(ids), action="build", base_bytes=self._footprint())
            if fingerprint is not None:
                self._fingerprint = self._check_fingerprint(fingerprint)
            self._reset_items()
            self._set_faiss_index(fresh)
            if not self._index.is_trained:
                self._train(x)
            self._prepare_for_write()
            self._add_locked(ids, x)
            log.info("built %s index over %d items (dim %d)", self._config.factory, len(ids), self._dim)
        return self

    def _train(self, x: np.ndarray) -> None:
        cfg = self._config
        if len(x) == 0:
            raise MMRecError(f"index {cfg.factory!r} must be trained and got no vectors to train on")
        n = min(len(x), cfg.train_sample)
        if n < len(x):
            rng = np.random.default_rng(cfg.seed)
            sample = x[np.sort(rng.choice(len(x), size=n, replace=False))]
        else:
            sample = x
        nlist = int(self._ivf.nlist) if self._ivf is not None else 0
        if nlist and n < nlist:
            raise MMRecError(
                f"index {cfg.factory!r} has {nlist} IVF lists but only {n} training vectors; "
                f"use fewer lists (at least ~39 vectors per list is advisable)"
            )
        log.info("training %s index on %d vectors", cfg.factory, n)
        try:
            self._index.train(sample)
        except RuntimeError as exc:
            raise MMRecError(
                f"training index {cfg.factory!r} on {n} vectors failed: {fu.first_line(exc)}"
            ) from None

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add items; an id already present is replaced (old entry removed first).

        An untrained index (fresh IVF) is trained on these vectors.
        """
        ids, x = self._check_batch(ids, vectors)
        if not ids:
            return
        with self._lock:
            self._check_add_memory(len(ids))
            if not self._index.is_trained:
                self._train(x)
            self._prepare_for_write()
            present = [self._str2iid[i] for i in ids if i in self._str2iid]
            if present:
                self._remove_iids(present)
            self._add_locked(ids, x)
            self._maybe_rebuild()

    def _add_locked(self, ids: list[str], x: np.ndarray) -> None:
        n = len(ids)
        if n == 0:
            return
        iids = np.arange(self._next_iid, self._next_iid + n, dtype=np.int64)
        step = self._add_step(n)
        for start in range(0, n, step):
            self._faiss_add(x[start : start + step], iids[start : start + step])
        self._next_iid += n
        self._append_rows(iids, x)
        for item_id, iid in zip(ids, iids.tolist()):
            self._str2iid[item_id] = iid
            self._iid2str[iid] = item_id

    def _add_step(self, n: int) -> int:
        """Rows per FAISS ``add`` call.

        One call lets FAISS size its code arrays exactly; several calls grow
        them by doubling, which briefly holds old and new copies (up to ~1.7x
        the codes). FAISS bounds its own scratch for IVF (65536 rows at a
        time) and needs none for flat codes or HNSW; only a pre-transform
        (PCA, OPQ) would copy all ``n`` transformed rows at once, so that is
        fed in chunks.
        """
        return _ADD_CHUNK if isinstance(fu.base_of(self._index), faiss.IndexPreTransform) else max(1, n)

    def _faiss_add(self, x: np.ndarray, iids: np.ndarray) -> None:
        if self._config.on_disk:
            with fu.c_stdout_to_stderr():
                self._index.add_with_ids(x, iids)
        else:
            self._index.add_with_ids(x, iids)

    def _append_rows(self, iids: np.ndarray, x: np.ndarray) -> None:
        need = self._n + len(iids)
        if need > len(self._vecs):
            cap = max(need, 2 * len(self._vecs), 1024)
            vecs = np.empty((cap, self._dim), dtype=np.float32)
            vecs[: self._n] = self._vecs[: self._n]
            row_iid = np.empty(cap, dtype=np.int64)
            row_iid[: self._n] = self._row_iid[: self._n]
            self._vecs, self._row_iid = vecs, row_iid
        self._vecs[self._n : need] = x
        self._row_iid[self._n : need] = iids
        for row, iid in enumerate(iids.tolist(), start=self._n):
            self._row_of[iid] = row
        self._n = need

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
            missing = [i for i in ids if i not in self._str2iid]
            if missing and not missing_ok:
                raise UnknownItemError(f"cannot remove items not in the index: {_show(missing)}")
            iids = [self._str2iid[i] for i in ids if i in self._str2iid]
            if not iids:
                return 0
            self._prepare_for_write()
            self._remove_iids(iids)
            self._maybe_rebuild()
            return len(iids)

    def _remove_iids(self, iids: list[int]) -> None:
        if self._removable:
            arr = np.asarray(iids, dtype=np.int64)
            if self._config.on_disk:
                with fu.c_stdout_to_stderr():
                    removed = self._index.remove_ids(arr)
            else:
                removed = self._index.remove_ids(arr)
            if removed != len(iids):  # pragma: no cover - would be a FAISS bug
                raise RuntimeError(f"FAISS removed {removed} of {len(iids)} entries")
        else:
            self._tombstones.update(iids)
        for iid in iids:
            item_id = self._iid2str.pop(iid)
            del self._str2iid[item_id]
            row = self._row_of.pop(iid)
            last = self._n - 1
            if row != last:  # move the last row into the hole
                moved = int(self._row_iid[last])
                self._vecs[row] = self._vecs[last]
                self._row_iid[row] = moved
                self._row_of[moved] = row
            self._n = last

    def _maybe_rebuild(self) -> None:
        if not self._tombstones:
            return
        frac = len(self._tombstones) / max(1, self._index.ntotal)
        if frac > self._config.rebuild_tombstone_fraction:
            log.info(
                "rebuilding %s index: %d of %d entries are tombstones (> %.0f%%)",
                self._config.factory, len(self._tombstones), self._index.ntotal,
                100 * self._config.rebuild_tombstone_fraction,
            )
            self.rebuild()

    def rebuild(self, retrain: bool = False) -> None:
        """Rebuild the FAISS index from the stored vectors, dropping tombstones.

        Items keep their internal ids. ``retrain`` re-learns IVF/PQ from the
        current items (useful after the catalog has drifted); otherwise the
        trained quantisers are reused.
        """
        with self._lock:
            if retrain:
                self._set_faiss_index(self._new_faiss_index())
                if not self._index.is_trained:
                    self._train(self._vecs[: self._n])
            else:
                self._prepare_for_write()
                if self._config.on_disk:
                    with fu.c_stdout_to_stderr():
                        self._index.reset()
                else:
                    self._index.reset()
            self._prepare_for_write()
            self._tombstones.clear()
            for start in range(0, self._n, _ADD_CHUNK):
                stop = min(self._n, start + _ADD_CHUNK)
                self._faiss_add(
                    np.ascontiguousarray(self._vecs[start:stop]), np.ascontiguousarray(self._row_iid[start:stop])
                )

    # ---------------------------------------------------------------- memory

    def _estimate(self, index: faiss.Index, n: int, vector_rows: Optional[int] = None) -> memory.MemoryEstimate:
        cfg = self._config
        return memory.estimate_item_index(
            index, n, self._dim, cfg.factory, train_sample=cfg.train_sample, on_disk=cfg.on_disk,
            vector_rows=vector_rows,
        )

    def _footprint(self) -> int:
        """Estimated bytes this index holds now (no scratch), freed when it is rebuilt."""
        if self._n == 0 and self._index.ntotal == 0:
            return 0
        est = self._estimate(self._index, int(self._index.ntotal), vector_rows=len(self._vecs))
        return est.total - est.transient_bytes

    def _check_memory(self, index: faiss.Index, n: int, action: str, base_bytes: int = 0,
                      vector_rows: Optional[int] = None) -> None:
        est = self._estimate(index, n, vector_rows)
        log.debug("memory estimate for %s of %s over %d vectors: %d bytes (%s)",
                  action, self._config.factory, n, est.total, est.breakdown())
        memory.check_fits(est, self._config.max_memory_gb, action=action, base_bytes=base_bytes)

    def _check_add_memory(self, n_new: int) -> None:
        """Guard an add: the grown index must fit the budget; large adds must fit in free memory."""
        total = int(self._index.ntotal) + n_new
        need = self._n + n_new
        rows = len(self._vecs) if need <= len(self._vecs) else max(need, 2 * len(self._vecs), 1024)
        if self._config.max_memory_gb is None:
            grow = self._estimate(self._index, total, rows).total - self._footprint()
            if grow < _SMALL_ADD_BYTES:
                return
        self._check_memory(self._index, total, action="add to", base_bytes=self._footprint(), vector_rows=rows)

    def _prepare_for_write(self) -> None:
        """Make a loaded (memory-mapped, read-only) index writable: copy on write.

        Raw vectors come into RAM; on-disk IVF lists are copied to a private
        working file so the saved folder is never modified in place.
        """
        if not self._vecs.flags.writeable:
            self._vecs = np.array(self._vecs, dtype=np.float32, copy=True)
        if self._config.on_disk and self._ivf is not None and self._index.is_trained:
            if not fu.is_ondisk(self._ivf) or fu.ondisk_is_read_only(self._ivf):
                fd, name = tempfile.mkstemp(prefix="lists-", suffix=".ivfdata", dir=self._ensure_workdir())
                os.close(fd)
                path = Path(name)
                fu.move_lists_to_disk(self._ivf, path)
                log.debug("on-disk inverted lists now at working file %s", path)

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="mmrec-index-"))
            self._workdir_finalizer = weakref.finalize(self, shutil.rmtree, str(self._workdir), True)
        return self._workdir

    # -------------------------------------------------------------- searching

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Optional[Sequence[Optional[Iterable[str]]]] = None,
        nprobe: Optional[int] = None,
        ef_search: Optional[int] = None,
    ) -> tuple[list[list[str]], np.ndarray]:
        """Top-``k`` items for each query row, skipping each row's ``exclude`` ids.

        Returns ``(ids, scores)``: ``ids[b]`` lists up to ``k`` item ids best
        first, ``scores`` is ``[B, k]`` float32 (inner product for ``ip``,
        squared distance for ``l2``), NaN where fewer than ``k`` items exist.
        Exclusions and tombstones are handled by over-fetching and growing the
        fetch until ``k`` items survive; if an approximate index runs out of
        candidates first, that row is answered exactly from the stored vectors.
        ``nprobe`` / ``ef_search`` override the config for this call only.
        """
        q = self._check_queries(queries)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise MMRecError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        b = len(q)
        if exclude is not None and len(exclude) != b:
            raise MMRecError(f"exclude has {len(exclude)} entries for {b} queries")
        with self._lock:
            excl = [
                {self._str2iid[i] for i in (exclude[r] or ()) if i in self._str2iid} if exclude is not None else set()
                for r in range(b)
            ]
            out_ids: list[list[str]] = [[] for _ in range(b)]
            scores = np.full((b, k), np.nan, dtype=np.float32)
            if len(self) == 0 or b == 0:
                return out_ids, scores
            overrides = self._param_overrides(nprobe, ef_search)
            try:
                for name, value in overrides.items():
                    fu.set_param(self._index, name, value)
                self._search_locked(q, k, excl, out_ids, scores)
            finally:
                for name in overrides:
                    default = self._config.nprobe if name == "nprobe" else self._config.ef_search
                    fu.set_param(self._index, name, default)
            return out_ids, scores

    def _param_overrides(self, nprobe: Optional[int], ef_search: Optional[int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise MMRecError(f"{name} must be a positive integer, got {value!r}")
            if self._params.get(name):
                out[name] = int(value)
            else:
                log.debug("%s does not apply to a %s index; ignored", name, self._config.factory)
        return out

    def _search_locked(
        self, q: np.ndarray, k: int, excl: list[set[int]], out_ids: list[list[str]], scores: np.ndarray
    ) -> None:
        ntotal = int(self._index.ntotal)
        live = len(self)
        fetch = min(ntotal, k + max(len(e) for e in excl) + len(self._tombstones))
        pending = np.arange(len(q))
        exact_rows: list[int] = []
        while len(pending):
            dist, labels = self._index.search(q[pending], fetch)
            still: list[int] = []
            for pos, row in enumerate(pending.tolist()):
                chosen: list[str] = []
                chosen_scores: list[float] = []
                skip = excl[row]
                for iid, score in zip(labels[pos].tolist(), dist[pos].tolist()):
                    if iid < 0 or iid in skip:
                        continue
                    item_id = self._iid2str.get(iid)
                    if item_id is None:  # tombstone
                        continue
                    chosen.append(item_id)
                    chosen_scores.append(score)
                    if len(chosen) == k:
                        break
                want = min(k, live - len(skip))
                if len(chosen) >= want:
                    out_ids[row] = chosen
                    scores[row, : len(chosen)] = chosen_scores
                elif fetch >= ntotal or (labels[pos] < 0).any():
                    exact_rows.append(row)  # the index has no more candidates for this row
                else:
                    still.append(row)
            pending = np.asarray(still, dtype=np.int64)
            fetch = min(ntotal, fetch * 2)
        if exact_rows:
            log.debug("%d queries ran out of approximate candidates; answering them exactly", len(exact_rows))
            self._exact_rows(q, k, excl, exact_rows, out_ids, scores)

    def _exact_rows(
        self, q: np.ndarray, k: int, excl: list[set[int]], rows: list[int], out_ids: list[list[str]], scores: np.ndarray
    ) -> None:
        vecs = self._vecs[: self._n]
        row_iid = self._row_iid[: self._n]
        for row in rows:
            if self._config.metric == "ip":
                s = vecs @ q[row]
                key = -s
            else:
                s = ((vecs - q[row]) ** 2).sum(axis=1)
                key = s.copy()
            if excl[row]:
                key[np.isin(row_iid, np.fromiter(excl[row], dtype=np.int64))] = np.inf
            kk = min(k, int(np.isfinite(key).sum()))
            if kk == 0:
                out_ids[row] = []
                continue
            top = np.argpartition(key, kk - 1)[:kk] if kk < len(key) else np.arange(len(key))
            top = top[np.argsort(key[top], kind="stable")][:kk]
            out_ids[row] = [self._iid2str[int(i)] for i in row_iid[top]]
            scores[row, :] = np.nan
            scores[row, :kk] = s[top]

    # ----------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> Path:
        """Write the index folder atomically (temp folder, then swap)."""
        directory = Path(directory)
        with self._lock, atomic_dir(directory) as tmp:
            index_path = tmp / INDEX_FILE
            files = [INDEX_FILE, VECTORS_FILE]
            try:
                if self._config.on_disk and self._ivf is not None:
                    fu.write_with_ondisk_lists(self._index, self._ivf, index_path, tmp / IVFDATA_FILE)
                    files.append(IVFDATA_FILE)
                else:
                    faiss.write_index(self._index, str(index_path))
            except RuntimeError as exc:
                raise MMRecError(f"could not write FAISS index {directory / INDEX_FILE}: {fu.first_line(exc)}") from None
            np.save(tmp / VECTORS_FILE, np.ascontiguousarray(self._vecs[: self._n]), allow_pickle=False)
            row_iid = self._row_iid[: self._n].tolist()
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "factory": self._config.factory,
                "metric": self._config.metric,
                "dim": self._dim,
                "count": self._n,
                "ntotal": int(self._index.ntotal),
                "config": dataclasses.asdict(self._config),
                "ids": [self._iid2str[i] for i in row_iid],
                "internal_ids": row_iid,
                "next_internal_id": self._next_iid,
                "tombstones": sorted(self._tombstones),
                "fingerprint": self._fingerprint,
                "created_at": self._created_at,
                "saved_at": _now(),
                "faiss_version": faiss.__version__,
                "files": {name: (tmp / name).stat().st_size for name in files},
            }
            write_json(tmp / MANIFEST, manifest)
        log.info("saved %s index with %d items to %s", self._config.factory, self._n, directory)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        expected_fingerprint: Optional[Mapping[str, Any]] = None,
        expected_dim: Optional[int] = None,
        config: Optional[IndexConfig] = None,
    ) -> "ItemIndex":
        """Load an index folder, refusing it if it does not match what the caller has.

        ``expected_fingerprint``: every key given must equal the saved value
        (the index was built from another model or encoder otherwise).
        ``expected_dim``: the caller's vector dimension. ``config``: override
        the query-time settings (nprobe, ef_search, threads, tombstone
        fraction); factory, metric and on_disk must match the saved ones.
        """
        directory = Path(directory)
        aside = moved_aside(directory)
        if aside is not None:  # a save was killed between its two renames: the previous version is complete
            log.warning("index %s is missing; loading the previous version left at %s", directory, aside)
            directory = aside
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise IndexFileError(f"{directory} is not an mmrec index: {MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFileError(f"cannot read index manifest {manifest_path}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IndexFileError(f"{manifest_path} is not an mmrec item-index manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexFileError(
                f"{manifest_path} has format version {manifest.get('format_version')!r}; "
                f"this mmrec reads version {FORMAT_VERSION}"
            )
        try:
            dim = int(manifest["dim"])
            saved_cfg = IndexConfig(**manifest["config"])
            fingerprint = dict(manifest.get("fingerprint") or {})
            ids = list(manifest["ids"])
            iids = np.asarray(manifest["internal_ids"], dtype=np.int64)
            count = int(manifest["count"])
            tombstones = {int(t) for t in manifest["tombstones"]}
            next_iid = int(manifest["next_internal_id"])
            sizes = dict(manifest["files"])
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise IndexFileError(f"index manifest {manifest_path} is incomplete or invalid: {exc}") from None

        if expected_fingerprint is not None:
            diffs = [
                f"{key}: index has {fingerprint.get(key)!r}, expected {value!r}"
                for key, value in expected_fingerprint.items()
                if fingerprint.get(key) != value
            ]
            if diffs:
                raise IndexMismatchError(
                    f"index {directory} was built from different vectors ({'; '.join(diffs)}); "
                    "rebuild it for the current model (mmrec index build)"
                )
        if expected_dim is not None and int(expected_dim) != dim:
            raise IndexMismatchError(
                f"index {directory} holds {dim}-d vectors but the model produces {expected_dim}-d vectors; "
                "rebuild it for the current model (mmrec index build)"
            )
        if config is not None:
            for name in ("factory", "metric", "on_disk"):
                if getattr(config, name) != getattr(saved_cfg, name):
                    raise IndexMismatchError(
                        f"index {directory} was built with {name}={getattr(saved_cfg, name)!r} but the config says "
                        f"{getattr(config, name)!r}; rebuild the index"
                    )
        cfg = config if config is not None else saved_cfg
        if len(ids) != count or len(iids) != count or len(set(ids)) != count:
            raise IndexFileError(f"index manifest {manifest_path} has an inconsistent id map")

        for name, size in sizes.items():
            path = directory / name
            if not path.is_file():
                raise IndexFileError(f"index file {path} is missing")
            actual = path.stat().st_size
            if actual != size:
                raise IndexFileError(
                    f"index file {path} has {actual} bytes, the manifest says {size}: truncated or corrupt"
                )

        index_path = directory / INDEX_FILE
        flags = faiss.IO_FLAG_SKIP_IVF_DATA if saved_cfg.on_disk else 0
        try:
            index = faiss.read_index(str(index_path), flags)
        except RuntimeError as exc:
            raise IndexFileError(f"cannot read FAISS index {index_path}: {fu.first_line(exc)}") from None
        ivf = fu.ivf_of(index)
        if saved_cfg.on_disk:
            data_path = directory / IVFDATA_FILE
            try:
                if ivf is None:
                    raise RuntimeError("index has no IVF part")
                fu.open_ondisk_lists(ivf, data_path)
            except (RuntimeError, OSError) as exc:
                msg = fu.first_line(exc) if isinstance(exc, RuntimeError) else str(exc)
                raise IndexFileError(f"cannot open on-disk inverted lists {data_path}: {msg}") from None
        if index.d != dim or index.ntotal != count + len(tombstones):
            raise IndexFileError(
                f"FAISS index {index_path} (dim {index.d}, {index.ntotal} entries) does not match its manifest "
                f"(dim {dim}, {count} items + {len(tombstones)} tombstones)"
            )

        vectors_path = directory / VECTORS_FILE
        try:
            vecs = np.load(vectors_path, allow_pickle=False, mmap_mode="r" if saved_cfg.on_disk else None)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexFileError(f"cannot read index vectors {vectors_path}: {exc}") from None
        if vecs.dtype != np.float32 or vecs.shape != (count, dim):
            raise IndexFileError(
                f"index vectors {vectors_path} have shape {vecs.shape} ({vecs.dtype}), expected ({count}, {dim}) float32"
            )

        self = cls.__new__(cls)
        self._dim = dim
        self._config = cfg
        self._fingerprint = fingerprint
        self._lock = threading.RLock()
        self._created_at = str(manifest.get("created_at") or _now())
        self._next_iid = next_iid
        self._workdir = None
        self._apply_threads()
        self._reset_items()
        self._vecs = vecs
        self._row_iid = iids
        self._n = count
        self._str2iid = dict(zip(ids, iids.tolist()))
        self._iid2str = dict(zip(iids.tolist(), ids))
        self._row_of = {iid: row for row, iid in enumerate(iids.tolist())}
        self._tombstones = tombstones
        self._set_faiss_index(index)
        log.info("loaded %s index with %d items from %s", cfg.factory, count, directory)
        return self

"""The FAISS index inside an ItemIndex: made from the factory string, trained, written to, searched.

It knows nothing about string ids or the raw vectors; the caller hands it
float32 rows with their internal int64 ids.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Optional

import faiss
import numpy as np

from mmrec.config.index import IndexConfig
from mmrec.errors import ConfigError, MMRecError
from mmrec.index import _faiss_util as fu

log = logging.getLogger(__name__)

ADD_CHUNK = 65_536  # rows per FAISS add when a pre-transform would otherwise copy them all; and per rebuild add


class Workdir:
    """A private temp folder for working copies of on-disk inverted lists, made on first use.

    Removed when the last index using it is gone.
    """

    def __init__(self) -> None:
        self._path: Optional[Path] = None

    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="mmrec-index-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._path), True)
        return self._path


def new_faiss_index(dim: int, cfg: IndexConfig) -> faiss.Index:
    """The empty index ``cfg.factory`` describes, wrapped in ``IndexIDMap2`` unless it takes ids itself."""
    metric = faiss.METRIC_INNER_PRODUCT if cfg.metric == "ip" else faiss.METRIC_L2
    try:
        base = faiss.index_factory(dim, cfg.factory, metric)
    except RuntimeError as exc:
        raise ConfigError(
            f"index.factory {cfg.factory!r} is not a valid FAISS factory string for "
            f"{dim}-d vectors: {fu.first_line(exc)}"
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


class FaissIndex:
    """One FAISS index and what its type allows (removal, selectors, search knobs).

    ``index`` is the FAISS object; ``params`` says which of ``nprobe`` /
    ``efSearch`` / ``k_factor_rf`` apply to it (they are set to the configured
    defaults on construction).
    """

    def __init__(self, index: faiss.Index, config: IndexConfig, workdir: Optional[Workdir] = None) -> None:
        self.index = index
        self.config = config
        self.workdir = workdir if workdir is not None else Workdir()
        self.ivf = fu.ivf_of(index)
        self.removable = fu.supports_removal(index)
        self.sel_ok = fu.supports_selector(index)
        self.exact = isinstance(fu.base_of(index), faiss.IndexFlat)  # brute force: its answers are exact
        self.params = fu.settable_params(
            index, {"nprobe": config.nprobe, "efSearch": config.ef_search, "k_factor_rf": config.refine_k_factor}
        )

    @classmethod
    def create(cls, dim: int, config: IndexConfig, workdir: Optional[Workdir] = None) -> "FaissIndex":
        """A new, empty index for ``config`` (``ConfigError`` for a factory string FAISS or mmrec rejects)."""
        return cls(new_faiss_index(dim, config), config, workdir)

    def fresh(self) -> "FaissIndex":
        """A new, empty index of the same configuration, sharing the working folder."""
        return FaissIndex.create(self.dim, self.config, self.workdir)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, x: np.ndarray) -> None:
        """Train on ``x`` (or a ``train_sample`` subset of it)."""
        cfg = self.config
        if len(x) == 0:
            raise MMRecError(f"index {cfg.factory!r} must be trained and got no vectors to train on")
        n = min(len(x), cfg.train_sample)
        if n < len(x):
            rng = np.random.default_rng(cfg.seed)
            sample = x[np.sort(rng.choice(len(x), size=n, replace=False))]
        else:
            sample = x
        nlist = int(self.ivf.nlist) if self.ivf is not None else 0
        if nlist and n < nlist:
            raise MMRecError(
                f"index {cfg.factory!r} has {nlist} IVF lists but only {n} training vectors; "
                f"use fewer lists (at least ~39 vectors per list is advisable)"
            )
        log.info("training %s index on %d vectors", cfg.factory, n)
        try:
            self.index.train(sample)
        except RuntimeError as exc:
            raise MMRecError(
                f"training index {cfg.factory!r} on {n} vectors failed: {fu.first_line(exc)}"
            ) from None

    def add(self, x: np.ndarray, iids: np.ndarray) -> None:
        """Add rows ``x`` under internal ids ``iids``, in as few FAISS calls as is safe.

        One call lets FAISS size its code arrays exactly; several calls grow
        them by doubling, which briefly holds old and new copies (up to ~1.7x
        the codes). FAISS bounds its own scratch for IVF (65536 rows at a
        time) and needs none for flat codes or HNSW; only a pre-transform
        (PCA, OPQ) would copy all ``n`` transformed rows at once, so that is
        fed in chunks.
        """
        n = len(iids)
        step = ADD_CHUNK if isinstance(fu.base_of(self.index), faiss.IndexPreTransform) else max(1, n)
        for start in range(0, n, step):
            self._add(x[start : start + step], iids[start : start + step])

    def refill(self, x: np.ndarray, iids: np.ndarray) -> None:
        """Add every row again after :meth:`reset` (``ADD_CHUNK`` rows at a time, from possibly mapped rows)."""
        for start in range(0, len(iids), ADD_CHUNK):
            stop = min(len(iids), start + ADD_CHUNK)
            self._add(np.ascontiguousarray(x[start:stop]), np.ascontiguousarray(iids[start:stop]))

    def _add(self, x: np.ndarray, iids: np.ndarray) -> None:
        if self.config.on_disk:
            with fu.c_stdout_to_stderr():
                self.index.add_with_ids(x, iids)
        else:
            self.index.add_with_ids(x, iids)

    def remove(self, iids: list[int]) -> None:
        """Delete entries (only where :attr:`removable`)."""
        arr = np.asarray(iids, dtype=np.int64)
        if self.config.on_disk:
            with fu.c_stdout_to_stderr():
                removed = self.index.remove_ids(arr)
        else:
            removed = self.index.remove_ids(arr)
        if removed != len(iids):  # pragma: no cover - would be a FAISS bug
            raise RuntimeError(f"FAISS removed {removed} of {len(iids)} entries")

    def reset(self) -> None:
        """Drop every entry, keeping what was trained."""
        if self.config.on_disk:
            with fu.c_stdout_to_stderr():
                self.index.reset()
        else:
            self.index.reset()

    def prepare_for_write(self) -> None:
        """Make loaded on-disk IVF lists writable: copy them to a private working file first.

        The saved folder is therefore never modified in place.
        """
        if self.config.on_disk and self.ivf is not None and self.index.is_trained:
            if not fu.is_ondisk(self.ivf) or fu.ondisk_is_read_only(self.ivf):
                fd, name = tempfile.mkstemp(prefix="lists-", suffix=".ivfdata", dir=self.workdir.path())
                os.close(fd)
                path = Path(name)
                fu.move_lists_to_disk(self.ivf, path)
                log.debug("on-disk inverted lists now at working file %s", path)

    def search(self, x: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        if params is None:
            return self.index.search(x, k)
        return self.index.search(x, k, params=params)

    def search_parameters(self, sel: Any, nprobe: Optional[int], ef_search: Optional[int]) -> Any:
        """Per-call FAISS search parameters (raises :class:`~mmrec.index._faiss_util.SelectorUnsupported`)."""
        return fu.search_parameters(self.index, sel, nprobe, ef_search)

    def set_param(self, name: str, value: int) -> None:
        fu.set_param(self.index, name, value)

    def restore_param(self, name: str) -> None:
        """Put ``nprobe`` / ``efSearch`` back to the configured default."""
        fu.set_param(self.index, name, self.config.nprobe if name == "nprobe" else self.config.ef_search)
